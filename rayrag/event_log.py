"""Structured, content-free logging.

Every log line rayrag writes is a JSON event: a name plus ids, counts, timings, hashes and
versions. Text from documents, questions or answers never goes into a log line; callers
pass such values through `fingerprint()` when they need to correlate them.

    >>> log = get_logger("rayrag.ingest")
    >>> log.info("stage_done", extra={"fields": {"stage": "embed", "chunks": 812, "seconds": 3.1}})
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from logging.handlers import RotatingFileHandler
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


def lock_path(path: str | Path) -> Path:
    """The sibling lock file that writers and `retention.purge` share for an event log.

    Hidden (`.events.jsonl.lock`) so globs for the rotated files (`events.jsonl.*`) miss it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


class LockedRotatingFileHandler(RotatingFileHandler):
    """`RotatingFileHandler` that several processes (Serve replicas) and a purge can share.

    Every emit takes an exclusive `fcntl` lock on a sibling lock file (`lock_path`), then reopens
    its stream when the path no longer names the file it holds open (`WatchedFileHandler`'s
    check): another replica rotated it, or `retention.purge` rewrote it (temp file +
    `os.replace` under the same lock). The size check and the rotation happen under the
    lock too, so two replicas never rotate the same file twice. Files are created 0600.
    """

    def __init__(self, filename: str | Path, max_bytes: int, backups: int) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._lock_fd: int | None = None
        self._lock_pid = os.getpid()

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._lock_fd is None or self._lock_pid != os.getpid():
                # A forked child shares its parent's descriptor, and flock locks belong to the
                # open file: each process needs its own open() of the lock file to exclude others.
                self._lock_fd = os.open(lock_path(self.baseFilename), os.O_RDWR | os.O_CREAT, 0o600)
                self._lock_pid = os.getpid()
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError:
            self.handleError(record)
            return
        try:
            self._reopen_if_replaced()
            super().emit(record)  # size check, rotation, write and flush, all under the lock
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _reopen_if_replaced(self) -> None:
        if self.stream is None:
            return
        try:
            on_disk = os.stat(self.baseFilename)
            mine = os.fstat(self.stream.fileno())
            same = (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)
        except (FileNotFoundError, ValueError):
            same = False
        if not same:
            stream, self.stream = self.stream, None
            stream.close()
            self.stream = self._open()

    def close(self) -> None:
        self.acquire()
        try:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
        finally:
            self.release()
        super().close()


def file_event_logger(
    name: str, path: str | Path, max_bytes: int = 10 * 1024 * 1024, backups: int = 5
) -> logging.Logger:
    """A JSON-event logger that writes to `path`, rotated by size (`path.1`, `path.2`, ...).

    The file is created owner-only (0600): events carry hashed user ids and team tags.
    Safe for several writing processes and a concurrent `rayrag purge` (see
    `LockedRotatingFileHandler`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(name)
    if not any(
        isinstance(h, RotatingFileHandler) and Path(h.baseFilename) == path.resolve()
        for h in logger.handlers
    ):
        handler = LockedRotatingFileHandler(path, max_bytes=max_bytes, backups=backups)
        handler.setFormatter(JsonEventFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
