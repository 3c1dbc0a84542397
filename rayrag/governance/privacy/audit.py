"""The audit log: who erased or purged what, as ids and counts, append-only.

Erasure (`rayrag forget`) and retention (`rayrag purge`) destroy data on purpose; the audit
log is the evidence that they ran, when, on whose behalf and with what effect, without
keeping any of the content they removed (GDPR art. 30's record of processing, reduced to
ids). Like the escalation queue (`rayrag/serve/escalation.py`) it is JSON Lines, one
`write()` of one whole line on a file opened with O_APPEND under an exclusive `fcntl` lock,
owner-only (0600). Every value is an id, a code or a number: a long or odd-looking string
is refused rather than written, since it may be content.

    >>> log = AuditLog(".rayrag/audit.jsonl")
    >>> audit_id = log.record("forget", doc_ids=["d7"], actor_hash="3f9a0c1e2b4d6f80",
    ...                       bundle_id="b-1", chunks_removed=3)
    >>> log.read()[-1]["action"]
    'forget'
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from rayrag.errors import DataError

MAX_ID_CHARS = 128
MAX_LIST_ITEMS = 10_000  # a forget of more documents than this is split by the caller
_ACTION_RE = re.compile(r"[a-z][a-z0-9_]*")
_KEY_RE = re.compile(r"[a-z][a-z0-9_]*")
_ID_RE = re.compile(r"[\w.:#@/+=-]+")
_AUDIT_ID_RE = re.compile(r"[0-9a-f]{32}")


class AuditLog:
    """Append-only JSONL of governance actions (ids, codes and counts only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def record(self, action: str, *, audit_id: str | None = None, **fields: Any) -> str:
        """Append one record `{audit_id, ts, action, **fields}`; returns its audit_id.

        Field values may be ids (short strings of letters, digits and ._:#@/+=-), numbers,
        booleans, None, lists of those, or flat dicts of those keyed by snake_case names.
        `audit_id` (a uuid hex) lets a caller stamp the id elsewhere before recording
        (erasure writes it into the new bundle's manifest first); by default a new one.
        """
        if not isinstance(action, str) or len(action) > 64 or not _ACTION_RE.fullmatch(action):
            raise DataError("audit action must be a snake_case code such as 'forget'")
        if audit_id is None:
            audit_id = new_audit_id()
        elif not isinstance(audit_id, str) or not _AUDIT_ID_RE.fullmatch(audit_id):
            raise DataError("audit_id must be 32 lowercase hex digits (a uuid4 hex)")
        record: dict[str, Any] = {
            "audit_id": audit_id,
            "ts": round(time.time(), 3),
            "action": action,
        }
        for key, value in fields.items():
            if key in record or not _KEY_RE.fullmatch(key):
                raise DataError(f"audit field {key!r} is reserved or not a snake_case name")
            record[key] = _value(value, key)
        append_line(self.path, json.dumps(record, separators=(",", ":")))
        return audit_id

    def read(self) -> list[dict[str, Any]]:
        """Every record, oldest first. A missing file is an empty log."""
        return read_jsonl(self.path, "audit log")


def append_line(path: Path, line: str) -> None:
    """One locked O_APPEND write of one whole line to an owner-only file."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                # A purge may have replaced the file (temp + os.replace under this lock)
                # while we waited: writing to the old inode would lose the record.
                if not _same_file(fd, path):
                    continue
                written = os.write(fd, data)
                if written != len(data):  # pragma: no cover - a full disk, not an input
                    raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
                return
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def read_jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, "rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        try:
            raw = handle.read().decode("utf-8")
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    records = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise DataError(f"{what} {path} line {number} is not valid JSON") from None
    return records


def new_audit_id() -> str:
    return uuid.uuid4().hex


def is_id(value: Any) -> bool:
    """True for a short string of letters, digits and ._:#@/+=- (what may go in a record)."""
    return (
        isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and bool(_ID_RE.fullmatch(value))
    )


def _value(value: Any, key: str, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"audit field {key} must be a finite number, got {value}")
        return value
    if isinstance(value, str):
        if value == "" or (len(value) <= MAX_ID_CHARS and _ID_RE.fullmatch(value)):
            return value
        # Never echo the value: a caller passing text here is the bug this guards against.
        raise DataError(
            f"audit field {key} must be an id (<= {MAX_ID_CHARS} chars of letters, "
            f"digits and ._:#@/+=-), got {len(value)} chars that are not"
        )
    if depth == 0 and isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else list(value)
        if len(items) > MAX_LIST_ITEMS:
            raise DataError(f"audit field {key} holds {len(items)} items > {MAX_LIST_ITEMS}")
        return [_value(v, key, depth + 1) for v in items]
    if depth == 0 and isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not _KEY_RE.fullmatch(k):
                raise DataError(f"audit field {key} has a key that is not a snake_case name")
            out[k] = _value(v, key, depth + 1)
        return out
    raise DataError(
        f"audit field {key} must be an id, a number or a flat list of them, "
        f"got {type(value).__name__}"
    )
