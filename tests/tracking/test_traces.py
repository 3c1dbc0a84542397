"""`ServeTracer` on a real MLflow store (sqlite): spans, attributes, content, sampling,
feedback as an assessment, and the retention purge deleting served traces.

The served path (the Ingress writing traces of /v1/ask, streamed or not) is exercised in
tests/serve/test_app.py."""

from __future__ import annotations

import json
import time

import pytest

from rayrag.answering.pipeline import AnswerTurn
from rayrag.answering.response import AskResponse
from rayrag.config import RAGConfig, TrackingConfig
from rayrag.tracking.traces import Requester, ServeTracer, sampled
from rayrag.types import Evidence, Fact, Passage, RedactedQuestion

QUESTION = "Did Ana Lopez sign the Brightwater contract?"
REDACTED = "Did <PERSON> sign the Brightwater contract?"
ANSWER = "Helix Corp signed it in 2019."
WHO = Requester(user="0123456789abcdef", key_id="a1b2c3d4", team="web")
VERSIONS = {"bundle_id": "b-1"}


def turn() -> AnswerTurn:
    """A finished turn as the pipeline returns one (the types it really returns)."""
    passages = (
        Passage("c-1", "d-1", "Helix Corp signed ...", 0.9),
        Passage("c-2", "d-2", "... in 2019", 0.5),
    )
    evidence = Evidence(passages, facts=(Fact("Helix Corp", "signed", "contract", 0.8),))
    response = AskResponse.model_validate(
        {
            "answer": ANSWER,
            "finish_reason": "eos",
            "mode": "hybrid",
            "usage": {"prompt_tokens": 120, "completion_tokens": 7, "cost": 0.0004},
            "model_version": "m-3",
            "config_hash": "cfg-1",
            "prompt_version": "rayrag-reader/1",
            "redactions": {"question": {"PERSON": 1}, "answer": {}},
            "groundedness": 0.7,
            "timings_ms": {"redact": 1.0, "retrieve": 2.0, "total": 9.0},
        }
    )
    return AnswerTurn(response, RedactedQuestion(REDACTED, counts={"PERSON": 1}), evidence)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one takes seconds); tests use their own ids."""
    return tmp_path_factory.mktemp("traces")


def tracer_for(store, **fields) -> ServeTracer:
    config = TrackingConfig(tracking_uri=f"sqlite:///{store / 'mlflow.db'}", **fields)
    tracer = ServeTracer(config)
    tracer.warm_up()
    assert tracer.enabled, "the sqlite store could not be opened"
    return tracer


def traced(tracer: ServeTracer, rid: str, stream: bool = False) -> str:
    record = tracer.begin(rid, "/v1/ask")
    assert record is not None
    record.started_ns -= 20_000_000  # the request began before its stages' recorded 9 ms
    for stage in ("redact", "retrieve", "kg", "kg", "generate", "guard"):
        record.observe(stage, 1.5)
    trace_id = tracer.finish(record, WHO, turn(), VERSIONS)
    assert trace_id is not None
    tracer.flush()
    return trace_id


def test_a_request_is_a_trace_with_a_span_per_stage_and_no_text(store):
    tracer = tracer_for(store)
    trace_id = traced(tracer, "req-1")
    trace = tracer._tracker.client().get_trace(trace_id)
    assert trace.info.tags["request_id"] == "req-1" and trace.info.tags["team"] == "web"
    spans = {s.name: s for s in trace.data.spans}
    assert {"answer", "redact", "retrieve", "graph", "generate", "guard"} <= set(spans)
    assert len([s for s in trace.data.spans if s.name == "graph"]) == 2  # ran twice
    root = spans["answer"]
    assert all(s.parent_id == root.span_id for s in trace.data.spans if s is not root)
    for name in ("redact", "retrieve", "generate", "guard"):
        span = spans[name]
        assert 1.4e6 <= span.end_time_ns - span.start_time_ns <= 1.6e6  # the stage's own time
        assert root.start_time_ns <= span.start_time_ns <= span.end_time_ns <= root.end_time_ns
    assert root.attributes["rayrag.cost"] == 0.0004
    assert root.attributes["rayrag.key_id"] == "a1b2c3d4"
    assert root.attributes["rayrag.bundle_id"] == "b-1"
    assert root.attributes["rayrag.model_version"] == "m-3"
    assert spans["redact"].attributes["rayrag.redactions"] == {"PERSON": 1}
    assert spans["retrieve"].attributes["rayrag.chunk_ids"] == ["c-1", "c-2"]
    assert spans["graph"].attributes["rayrag.facts"] == 1
    assert spans["generate"].attributes["rayrag.completion_tokens"] == 7
    assert spans["guard"].attributes["rayrag.groundedness"] == 0.7
    text = trace.to_json()
    for content in (QUESTION, REDACTED, ANSWER, "Brightwater", "Helix"):
        assert content not in text


def test_redacted_content_puts_the_redacted_question_and_the_answer_in(store):
    tracer = tracer_for(store, trace_content="redacted")
    trace = tracer._tracker.client().get_trace(traced(tracer, "req-2"))
    root = next(s for s in trace.data.spans if s.name == "answer")
    assert root.inputs == {"question": REDACTED} and root.outputs == {"answer": ANSWER}
    assert QUESTION not in trace.to_json()


def test_a_failed_request_is_an_error_trace_named_by_type_only(store):
    tracer = tracer_for(store)
    record = tracer.begin("req-3", "/v1/ask")
    record.observe("redact", 1.0)
    trace_id = tracer.finish(record, WHO, error=ValueError(QUESTION))
    tracer.flush()
    trace = tracer._tracker.client().get_trace(trace_id)
    assert trace.info.state == "ERROR"
    root = next(s for s in trace.data.spans if s.name == "answer")
    assert root.attributes["rayrag.error"] == "ValueError" and QUESTION not in trace.to_json()


def test_sampling_is_a_fixed_draw_per_request_id():
    ids = [f"req-{i}" for i in range(2000)]
    assert all(sampled(rid, 1.0) for rid in ids) and not any(sampled(rid, 0.0) for rid in ids)
    quarter = [rid for rid in ids if sampled(rid, 0.25)]
    assert 400 < len(quarter) < 600  # a quarter, give or take the draw
    assert quarter == [rid for rid in ids if sampled(rid, 0.25)]  # the same every time
    assert set(quarter) <= {rid for rid in ids if sampled(rid, 0.5)}  # nested rates
    tracer = ServeTracer(TrackingConfig(trace_sample_rate=0.25))
    assert [rid for rid in ids if tracer.begin(rid, "/v1/ask") is not None] == quarter


def test_tracing_is_off_without_tracking_or_at_rate_zero():
    for config in (TrackingConfig(enabled=False), TrackingConfig(trace_sample_rate=0)):
        tracer = ServeTracer(config)
        tracer.warm_up()
        assert tracer.begin("req-1", "/v1/ask") is None and tracer.finish(None, WHO) is None


def test_an_unreachable_store_turns_tracing_off_not_the_service(tmp_path):
    (tmp_path / "file").write_text("")
    tracer = ServeTracer(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'file' / 'x.db'}"))
    tracer.warm_up()
    assert not tracer.enabled and tracer.begin("req-1", "/v1/ask") is None


@pytest.mark.parametrize("content", ["none", "redacted"])
def test_feedback_is_a_human_assessment_on_the_request_trace(store, content):
    tracer = tracer_for(store, trace_content=content)
    trace_id = traced(tracer, f"req-4-{content}")
    comment = "wrong year"
    rater = Requester(user="fedcba9876543210", key_id="d4c3b2a1", team="web")
    assert tracer.feedback(f"req-4-{content}", False, rater, rationale=comment) == trace_id
    assert tracer.feedback("never-traced", True, rater) is None
    fresh = ServeTracer(tracer.config)  # another replica: found by the request_id tag
    assert fresh.feedback(f"req-4-{content}", True, rater) == trace_id
    assessments = tracer._tracker.client().get_trace(trace_id).info.assessments
    ratings = sorted(
        (a for a in assessments if a.name == "user_rating"), key=lambda a: a.create_time_ms
    )
    assert [a.value for a in ratings] == [False, True]
    assert ratings[0].source.source_type == "HUMAN" and ratings[0].source.source_id == "d4c3b2a1"
    assert ratings[0].rationale == (comment if content == "redacted" else None)


def test_served_traces_are_deleted_by_the_retention_purge(store, tmp_path):
    from rayrag.governance.privacy.retention import purge

    config = RAGConfig().with_overrides(
        [
            f"tracking.tracking_uri=sqlite:///{store / 'mlflow.db'}",
            "tracking.experiment_prefix=purged",  # the other tests' traces are not this one's
            f"serve.event_log={tmp_path / 'events.jsonl'}",
            f"serve.escalation_queue={tmp_path / 'escalations.jsonl'}",
        ]
    )
    tracer = tracer_for(store, experiment_prefix="purged")
    traced(tracer, "req-5")
    traced(tracer, "req-6")
    client = tracer._tracker.client()
    assert len(client.search_traces(locations=[tracer.experiment_id])) == 2
    time.sleep(0.2)  # both traces must be strictly older than the cutoff below
    report = purge(config, older_than_days=0.1 / 86400).to_json()
    assert report["purged"]["mlflow_traces"] == 2
    assert client.search_traces(locations=[tracer.experiment_id]) == []
    assert json.dumps(report).count("req-") == 0


def test_the_trace_settings_are_validated_naming_the_field():
    from pydantic import ValidationError

    for bad in ({"trace_sample_rate": 1.5}, {"trace_sample_rate": -0.1}, {"trace_content": "all"}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            TrackingConfig(**bad)
