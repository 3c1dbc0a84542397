"""Structured, content-free logging.

Every log line rayrag writes is a JSON event: a name plus ids, counts, timings, hashes and
versions. Text from documents, questions or answers never goes into a log line; callers
pass such values through `fingerprint()` when they need to correlate them.

    >>> log = get_logger("rayrag.ingest")
    >>> log.info("stage_done", extra={"fields": {"stage": "embed", "chunks": 812, "seconds": 3.1}})
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

# Values of these types are safe to log; anything else is rendered as its type name only.
_SAFE_TYPES = (int, float, bool, type(None))
MAX_STRING_FIELD = 128  # ids and names are short; long strings are probably content


class JsonEventFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, event, fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {}) or {}
        event = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **{k: _safe(v) for k, v in fields.items()},
        }
        return json.dumps(event, sort_keys=False, default=str)


def _safe(value: Any) -> Any:
    if isinstance(value, _SAFE_TYPES):
        return value
    if isinstance(value, str):
        # Guard against content slipping in: a long string is replaced by its fingerprint.
        return value if len(value) <= MAX_STRING_FIELD else f"sha256:{fingerprint(value)}"
    if isinstance(value, dict):
        return {str(k)[:MAX_STRING_FIELD]: _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_safe(v) for v in list(value)[:64]]
    return f"<{type(value).__name__}>"


def fingerprint(text: str) -> str:
    """A short, non-reversible id for a piece of content (for correlation, never display)."""
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


_configured: set[str] = set()


def get_logger(name: str) -> logging.Logger:
    """A logger whose records render as JSON events on stderr (configured once per name root)."""
    logger = logging.getLogger(name)
    root = name.split(".")[0]
    if root not in _configured:
        base = logging.getLogger(root)
        if not base.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(JsonEventFormatter())
            base.addHandler(handler)
            base.setLevel(logging.WARNING)
            base.propagate = False
        _configured.add(root)
    return logger


class StageTimer:
    """Collects wall-clock seconds per named stage: `with timer("embed"): ...`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str) -> _Stage:
        return _Stage(self, stage)


class _Stage:
    def __init__(self, timer: StageTimer, stage: str) -> None:
        self.timer, self.stage = timer, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.start
        self.timer.seconds[self.stage] = self.timer.seconds.get(self.stage, 0.0) + elapsed


def file_event_logger(name: str, path: str | Path, max_bytes: int = 10 * 1024 * 1024,
                      backups: int = 5) -> logging.Logger:
    """A JSON-event logger that writes to `path`, rotated by size (`path.1`, `path.2`, ...).

    The file is created owner-only (0600): events carry hashed user ids and team tags."""
    from logging.handlers import RotatingFileHandler

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(name)
    if not any(isinstance(h, RotatingFileHandler) and Path(h.baseFilename) == path.resolve() for h in logger.handlers):
        path.touch(mode=0o600, exist_ok=True)
        handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        handler.setFormatter(JsonEventFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
