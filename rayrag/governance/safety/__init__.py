"""rayrag.governance.safety."""
