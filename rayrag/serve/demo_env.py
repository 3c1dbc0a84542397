"""Demo-only secrets: the HMAC and encryption keys `rayrag demo` and the benches fall back to.

A real deployment sets these from its secret store; each fallback prints a warning so
nobody mistakes the demo for a production setup.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rayrag.config import RAGConfig

# Demo-only secrets: a real deployment sets these from its secret store. Printed as a
# warning so nobody mistakes them for a production setup.
_DEMO_SECRETS = {
    "RAYRAG_HMAC_KEY": "rayrag-demo-hmac-key-not-for-production",
    "RAYRAG_ENCRYPTION_KEY": "rayrag-demo-key-0123456789abcdef"[:32],
}


def ensure_demo_secrets(config: RAGConfig) -> None:
    """Set each missing redaction secret to its demo value, with a warning on stderr."""
    redaction = config.governance.redaction
    for env_name, default_name in (
        (redaction.hmac_key_env, "RAYRAG_HMAC_KEY"),
        (redaction.encryption_key_env, "RAYRAG_ENCRYPTION_KEY"),
    ):
        if not os.environ.get(env_name):
            os.environ[env_name] = _DEMO_SECRETS[default_name]
            print(
                f"[rayrag demo] warning: {env_name} not set; using a demo-only key", file=sys.stderr
            )


DEMO_ENV = "demo.env"
DEMO_USER = "demo-user"
DEMO_GROUPS = ("public", "hr", "finance", "legal")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def demo_api_key(path: Path) -> str | None:
    """The user API key an earlier demo wrote to `path`, so a re-run keeps it valid."""
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("export RAYRAG_API_KEY="):
            return line.split("=", 1)[1].strip().strip("'") or None
    return None


def write_demo_env(out: Path, config: RAGConfig, tracking_uri: str) -> Path:
    """`OUT/demo.env` (mode 0600): what the next steps after `make demo` need in one `source`.

    The demo-only redaction secrets (never secrets the caller set: those are left to the
    caller's environment), the demo's MLflow store, and a user API key, both as
    `RAYRAG_API_KEY` (what clients send) and in `RAYRAG_API_KEYS` (what `rayrag serve` accepts).
    Written to a temporary file created 0600 and renamed, so it is never readable by others
    or half written."""
    from rayrag.serve.auth import generate_key

    path = out / DEMO_ENV
    key = demo_api_key(path) or generate_key()
    redaction = config.governance.redaction
    lines = [
        (
            "# rayrag demo environment: demo-only secrets "
            "and an API key; never use them in production."
        ),
        f"#   source {path}",
    ]
    for env_name, default_name in (
        (redaction.hmac_key_env, "RAYRAG_HMAC_KEY"),
        (redaction.encryption_key_env, "RAYRAG_ENCRYPTION_KEY"),
    ):
        if os.environ.get(env_name) == _DEMO_SECRETS[default_name]:
            lines.append(f"export {env_name}={_quote(_DEMO_SECRETS[default_name])}")
        else:
            lines.append(f"# {env_name}: set in your environment; not written here")
    keys_env = config.serve.keys_env
    lines += [
        f"export MLFLOW_TRACKING_URI={_quote(tracking_uri)}",
        f"export RAYRAG_API_KEY={_quote(key)}",
        f"export {keys_env}={_quote(f'{key}={DEMO_USER}:{chr(124).join(DEMO_GROUPS)}:demo:user')}",
    ]
    tmp = path.with_name(f".{DEMO_ENV}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
