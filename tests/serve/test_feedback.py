"""`POST /v1/feedback`'s parts that need no running graph: the body and the asker lookup.

The route itself is exercised over HTTP in tests/serve/test_app.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rayrag.event_log import file_event_logger, fingerprint
from rayrag.serve.feedback import asker_in_log
from rayrag.serve.schemas import FeedbackRequest


def test_a_rating_is_up_or_down_on_a_request_id_with_a_bounded_comment():
    ok = FeedbackRequest.model_validate({"request_id": "req-42", "rating": "up"})
    assert ok.comment is None
    for bad in (
        {"request_id": "req-42", "rating": "5"},
        {"request_id": "req 42", "rating": "up"},
        {"request_id": "req-42", "rating": "up", "comment": "x" * 2001},
        {"request_id": "req-42", "rating": "up", "extra": 1},
        {"rating": "up"},
    ):
        with pytest.raises(ValidationError):
            FeedbackRequest.model_validate(bad)


def test_the_asker_is_found_in_the_event_log_when_the_replica_forgot(tmp_path):
    path = tmp_path / "events.jsonl"
    log = file_event_logger("rayrag.test.feedback", str(path), max_bytes=10_000, backups=2)
    log.info("request", extra={"fields": {"request_id": "req-1", "user": fingerprint("ana")}})
    log.info("feedback", extra={"fields": {"request_id": "req-1", "user": fingerprint("bo")}})
    log.info("request", extra={"fields": {"request_id": "req-2", "user": fingerprint("bo")}})
    for handler in log.handlers:
        handler.flush()
    assert asker_in_log(path, "req-1") == fingerprint("ana")
    assert asker_in_log(path, "req-2") == fingerprint("bo")
    assert asker_in_log(path, "req-3") is None
