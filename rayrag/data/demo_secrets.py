"""Demo-only secrets: the HMAC and encryption keys `rayrag demo` and the benches fall back to.

A real deployment sets these from its secret store; each fallback prints a warning so
nobody mistakes the demo for a production setup.
"""

from __future__ import annotations

import os
import sys

from rayrag.config import RAGConfig

# Demo-only secrets: a real deployment sets these from its secret store. Printed as a
# warning so nobody mistakes them for a production setup.
_DEMO_SECRETS = {"RAYRAG_HMAC_KEY": "rayrag-demo-hmac-key-not-for-production",
                 "RAYRAG_ENCRYPTION_KEY": "rayrag-demo-key-0123456789abcdef"[:32]}


def ensure_demo_secrets(config: RAGConfig) -> None:
    """Set each missing redaction secret to its demo value, with a warning on stderr."""
    redaction = config.governance.redaction
    for env_name, default_name in ((redaction.hmac_key_env, "RAYRAG_HMAC_KEY"),
                                   (redaction.encryption_key_env, "RAYRAG_ENCRYPTION_KEY")):
        if not os.environ.get(env_name):
            os.environ[env_name] = _DEMO_SECRETS[default_name]
            print(f"[rayrag demo] warning: {env_name} not set; using a demo-only key", file=sys.stderr)


