"""rayrag.answering."""
