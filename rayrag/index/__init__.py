"""rayrag.index."""
