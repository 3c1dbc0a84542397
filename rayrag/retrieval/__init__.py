"""rayrag.retrieval."""
