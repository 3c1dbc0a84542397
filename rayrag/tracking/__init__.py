"""rayrag.tracking."""
