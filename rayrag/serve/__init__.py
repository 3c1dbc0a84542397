"""rayrag.serve."""
