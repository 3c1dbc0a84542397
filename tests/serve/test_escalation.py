"""rayrag.serve.escalation: content-free JSONL records, safe under concurrent writers."""

from __future__ import annotations

import json
import threading

import pytest

from rayrag.errors import DataError
from rayrag.serve.escalation import RECORD_FIELDS, EscalationQueue


def record(queue: EscalationQueue, request_id: str = "req-1", **overrides):
    args = {
        "user_hash": "3f9a0c1e2b4d6f80",
        "team": "finance",
        "reasons": ["low_groundedness"],
        "confidence": 0.312345,
        "groundedness": 0.25,
        "chunk_ids": ["d2#0", "d3#1"],
        "model_version": "moe-abc123",
    }
    return queue.record(request_id, **{**args, **overrides})


def test_record_appends_ids_codes_and_numbers_only(tmp_path):
    queue = EscalationQueue(tmp_path / "deep" / "dir" / "escalations.jsonl")
    assert queue.read() == []
    record(queue)
    record(queue, "req-2", reasons=["contradicted_claim", "low_confidence"])
    rows = queue.read()
    assert [r["request_id"] for r in rows] == ["req-1", "req-2"]
    assert tuple(rows[0]) == RECORD_FIELDS
    assert rows[0]["confidence"] == 0.3123 and rows[0]["chunk_ids"] == ["d2#0", "d3#1"]
    for row in rows:
        for value in row.values():
            assert isinstance(value, (int, float, list)) or len(value) <= 128


@pytest.mark.parametrize(
    "field, value",
    [
        ("reasons", ["The answer said Velora bought Beta"]),
        ("team", "finance team with spaces"),
        ("chunk_ids", ["x" * 500]),
    ],
)
def test_content_looking_values_are_refused_and_not_echoed(tmp_path, field, value):
    queue = EscalationQueue(tmp_path / "q.jsonl")
    with pytest.raises(DataError) as info:
        record(queue, **{field: value})
    assert "Velora" not in str(info.value) and "x" * 20 not in str(info.value)
    assert queue.read() == []


def test_concurrent_writers_produce_whole_json_lines(tmp_path):
    queue = EscalationQueue(tmp_path / "q.jsonl")
    long_ids = [f"doc-{i:04d}#{j}" for i in range(40) for j in range(3)]  # ~1.5 kB lines

    def writer(worker: int) -> None:
        for n in range(25):
            record(EscalationQueue(queue.path), f"req-{worker}-{n}", chunk_ids=long_ids)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = queue.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 150
    ids = {json.loads(line)["request_id"] for line in lines}
    assert ids == {f"req-{w}-{n}" for w in range(6) for n in range(25)}
    assert len(queue) == 150
