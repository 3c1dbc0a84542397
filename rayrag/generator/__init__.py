"""rayrag.generator."""
