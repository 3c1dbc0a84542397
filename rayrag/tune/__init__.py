"""rayrag.tune."""
