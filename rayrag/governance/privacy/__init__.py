"""rayrag.governance.privacy."""
