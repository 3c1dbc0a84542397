"""rayrag.governance."""
