"""rayrag.governance.readiness.probes."""
