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


def test_a_resolution_is_one_more_content_free_line_and_marks_its_escalation(tmp_path):
    queue = EscalationQueue(tmp_path / "escalations.jsonl")
    record(queue, "req-1")
    record(queue, "req-2")
    assert [r["resolved"] for r in queue.escalations()] == [None, None]
    resolution = queue.resolve("req-2", "9b2e4f10aa5c7d31", "answer_corrected")
    assert set(resolution) == {"ts", "request_id", "resolved_by", "resolution"}
    rows = queue.escalations()
    assert [r["request_id"] for r in rows] == ["req-1", "req-2"] and len(queue) == 2
    assert rows[0]["resolved"] is None
    assert rows[1]["resolved"] == {
        "ts": resolution["ts"],
        "resolved_by": "9b2e4f10aa5c7d31",
        "resolution": "answer_corrected",
    }
    assert len(queue.read()) == 3  # append-only: the escalation line is untouched


def test_resolving_an_unknown_id_or_with_text_is_refused(tmp_path):
    queue = EscalationQueue(tmp_path / "escalations.jsonl")
    record(queue, "req-1")
    with pytest.raises(KeyError):
        queue.resolve("req-9", "9b2e4f10aa5c7d31")
    with pytest.raises(DataError, match="snake_case codes"):
        queue.resolve("req-1", "9b2e4f10aa5c7d31", "The answer was wrong about Paris")
    with pytest.raises(DataError, match="must be an id"):
        queue.resolve("what did the CEO say?", "9b2e4f10aa5c7d31")
    assert len(queue.read()) == 1
