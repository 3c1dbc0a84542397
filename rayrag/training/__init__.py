"""rayrag.training."""
