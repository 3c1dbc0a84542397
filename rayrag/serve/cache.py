"""The Ingress's answer cache, keyed so that no answer crosses an access boundary.

A cached answer was built from the documents its first asker could read. Two principals
may share it only if they may read exactly the same documents, so every key starts with
the ACL fingerprint of the caller's groups (`acl_fingerprint`, the same groups retrieval
filters on), then names everything the answer depends on: the bundle (an erasure or a
re-ingest changes its id, and the cache is also cleared then), the model version, the
config hash, the prompt version, the question (as a sha256, never the text), mode, top_k
and the token cap. Entries expire after `ttl_s` and the least recently used goes first
when the cache is full. It lives in the replica's memory only: nothing is written out.

    >>> cache = AnswerCache(max_entries=256, ttl_s=300)
    >>> key = answer_key(principal, "bundle-1", "model@ab12", "c0ffee", "rayrag-reader/1",
    ...                  "Who founded Helix?", "hybrid", 5, None)
    >>> cache.get(key) is None
    True
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from rayrag.types import Principal


def acl_fingerprint(groups: Iterable[str]) -> str:
    """sha256 of the sorted, de-duplicated groups: equal exactly when two callers may read the
    same documents (retrieval's ACL is a set intersection with these groups)."""
    canonical = json.dumps(sorted(set(groups)), separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def answer_key(
    principal: Principal,
    bundle_id: str,
    model_version: str,
    config_hash: str,
    prompt_version: str,
    question: str,
    mode: str,
    top_k: int,
    max_new_tokens: int | None,
) -> str:
    parts = [
        acl_fingerprint(principal.groups),
        bundle_id,
        model_version,
        config_hash,
        prompt_version,
        hashlib.sha256(question.encode("utf-8", "surrogatepass")).hexdigest(),
        mode,
        top_k,
        max_new_tokens,
    ]
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode("utf-8")).hexdigest()


class AnswerCache:
    """A thread-safe LRU of response bodies with a time-to-live; `max_entries=0` disables it."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries, self.ttl_s = max_entries, ttl_s
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        if self.max_entries == 0:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or time.monotonic() - entry[0] > self.ttl_s:
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: str, body: dict[str, Any]) -> None:
        if self.max_entries == 0:
            return
        with self._lock:
            self._entries[key] = (time.monotonic(), body)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> int:
        with self._lock:
            n = len(self._entries)
            self._entries.clear()
            return n


def served_from_cache(cached: Any, rid: str, seconds: float) -> Any:
    """A cached `AskResponse` as this request's: its request id, `cached`, its own total
    time, and no cost (nothing was computed for this caller)."""
    return cached.model_copy(
        update={
            "request_id": rid,
            "cached": True,
            "timings_ms": {"total": round(seconds * 1000, 2)},
            "usage": cached.usage.model_copy(update={"cost": 0.0}),
        }
    )
