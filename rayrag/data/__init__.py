"""rayrag.data."""
