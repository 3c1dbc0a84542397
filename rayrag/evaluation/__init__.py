"""rayrag.evaluation."""
