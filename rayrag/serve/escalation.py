"""The escalation queue: answers the guard was not confident in, queued for a human.

When `Guard.check` marks an answer escalated (confidence below
`serve.confidence_threshold`), the Serve graph records it here so a reviewer can replay the
request from the ids: selective prediction with a reject option (Geifman and El-Yaniv 2017,
"Selective Classification for Deep Neural Networks"), where the rejected cases go to a
person. Content-free, like every log in rayrag: a record holds ids, reason
codes and numbers only, never the question or the answer. The user is a hash
(`privacy_log.fingerprint`), not a name.

The file is JSON Lines. Several Serve replicas may append at once, so each record is one
`write()` of one complete line on a file opened with O_APPEND, under an exclusive `fcntl`
lock: lines never interleave, and a reader never sees half a record from a finished writer.
A reviewer's resolution is one more line (request id, reviewer hash, a reason code), so the
queue stays append-only and retention purges both by `ts`.

    >>> queue = EscalationQueue(".rayrag/escalations.jsonl")
    >>> queue.record("req-1", user_hash="3f9a0c1e2b4d6f80", team="finance",
    ...              reasons=["low_groundedness"], confidence=0.31, groundedness=0.31,
    ...              chunk_ids=["d2#0"], model_version="moe-abc123")
    >>> queue.read()[-1]["reasons"]
    ['low_groundedness']
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rayrag.errors import DataError
from rayrag.governance.privacy.audit import append_line, read_jsonl

# Everything a record holds is an id, a code or a number: short strings of a known shape.
# A longer or odd-looking string is refused rather than written (it may be content).
MAX_ID_CHARS = 128
_CODE_RE = re.compile(r"[a-z][a-z0-9_]*")
_ID_RE = re.compile(r"[\w.:#@/+=-]+")
RECORD_FIELDS = (
    "ts",
    "request_id",
    "user_hash",
    "team",
    "reasons",
    "confidence",
    "groundedness",
    "chunk_ids",
    "model_version",
)
RESOLUTION_FIELDS = ("ts", "request_id", "resolved_by", "resolution")


class EscalationQueue:
    """Append-only JSONL queue of escalated answers (ids, codes and scores only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def record(
        self,
        request_id: str,
        user_hash: str,
        team: str,
        reasons: Sequence[str],
        confidence: float,
        groundedness: float,
        chunk_ids: Sequence[str],
        model_version: str,
        ts: float | None = None,
    ) -> dict[str, Any]:
        """Append one record and return it. Refuses values that do not look like ids.
        `ts` (default now) lets the readiness probe plant a record past its retention."""
        record = {
            "ts": round(time.time() if ts is None else _score(ts, "ts"), 3),
            "request_id": _id(request_id, "request_id"),
            "user_hash": _id(user_hash, "user_hash"),
            "team": _id(team, "team"),
            "reasons": [_code(r) for r in reasons],
            "confidence": _score(confidence, "confidence"),
            "groundedness": _score(groundedness, "groundedness"),
            "chunk_ids": [_id(c, "chunk_ids") for c in chunk_ids],
            "model_version": _id(model_version, "model_version", allow_empty=True),
        }
        # One locked O_APPEND write of one whole line, re-checked against a purge that replaced
        # the file while this writer waited for the lock (the audit log's writer).
        append_line(self.path, json.dumps(record, separators=(",", ":")))
        return record

    def read(self) -> list[dict[str, Any]]:
        """Every line, oldest first (escalations and resolutions). A missing file is empty."""
        return read_jsonl(self.path, "escalation queue")

    def resolve(
        self, request_id: str, user_hash: str, resolution: str = "resolved"
    ) -> dict[str, Any]:
        """Append a resolution of an escalated request (who as a hash, a reason code) and
        return it; the same file, so retention purges it by `ts` with its escalation.
        `KeyError` when no escalation has that request id."""
        request_id = _id(request_id, "request_id")
        if not any(r.get("request_id") == request_id for r in self.escalations()):
            raise KeyError(request_id)
        record = {
            "ts": round(time.time(), 3),
            "request_id": request_id,
            "resolved_by": _id(user_hash, "user_hash"),
            "resolution": _code(resolution),
        }
        append_line(self.path, json.dumps(record, separators=(",", ":")))
        return record

    def escalations(self) -> list[dict[str, Any]]:
        """The escalation records, oldest first, each with `resolved`: its latest resolution
        (ts, resolved_by, resolution) or None while it waits for a reviewer."""
        lines = self.read()
        resolved = {r["request_id"]: r for r in lines if "resolution" in r}
        return [
            {**r, "resolved": _without_id(resolved.get(r["request_id"]))}
            for r in lines
            if "resolution" not in r
        ]

    def __len__(self) -> int:
        return len(self.escalations())


def _without_id(resolution: dict[str, Any] | None) -> dict[str, Any] | None:
    if resolution is None:
        return None
    return {k: v for k, v in resolution.items() if k != "request_id"}


def _id(value: str, name: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise DataError(f"escalation {name} must be a str id, got {type(value).__name__}")
    if value == "" and allow_empty:
        return value
    if len(value) > MAX_ID_CHARS or not _ID_RE.fullmatch(value):
        # Never echo the value: a caller passing text here is the bug this guards against.
        raise DataError(
            f"escalation {name} must be an id (<= {MAX_ID_CHARS} chars of "
            f"letters, digits and ._:#@/+=-), got {len(value)} chars that are not"
        )
    return value


def _code(value: str) -> str:
    if not isinstance(value, str) or len(value) > 64 or not _CODE_RE.fullmatch(value):
        raise DataError(
            "escalation reasons and resolutions must be snake_case codes such as 'low_groundedness'"
        )
    return value


def _score(value: float, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise DataError(f"escalation {name} must be a finite number, got {number}")
    return round(number, 4)
