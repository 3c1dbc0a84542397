"""Served requests as MLflow traces, and users' ratings as assessments on them.

A sampled request becomes one trace in the `<prefix>-serve` experiment: a root span
`answer` (route, who as fingerprints, versions, tokens, cost, cached/refused, the outcome)
and one child span per stage the pipeline ran (`redact`, `retrieve`, `graph`, `generate`,
`guard`), each with the stage's own start and end and its counts. The trace is tagged
`request_id` and `team`, so an operator finds it from an event or a complaint. Text goes in
only with `tracking.trace_content: redacted`, and then only the redacted question and the
answer as served (`inputs` and `outputs` of the root span).

The stages report to a `RequestRecord` through the pipeline's per-stage hook (`observe`) as
they end; the spans are built from it once the request is over, and MLflow exports them on
its background queue, so a request never waits on the store. Every MLflow call here is
guarded: a tracing failure is logged by exception type only and never fails a request.
`trace_sample_rate` picks requests from a hash of the request id, so the choice is the same
in every replica and can be tested. Follows MLflow 3's manual tracing
(`start_span_no_context`) and feedback (`log_feedback`) APIs.

    >>> tracer = ServeTracer(config.tracking)
    >>> tracer.warm_up()
    >>> record = tracer.begin("req-42", "/v1/ask", observe=ledger.observe)
    >>> turn = await pipeline.answer(..., observe=record.observe)
    >>> tracer.finish(record, who, turn, versions)
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rayrag.config import TrackingConfig
from rayrag.event_log import get_logger

_log = get_logger("rayrag.tracking.traces")
Observe = Callable[[str, float], None]
# the pipeline's timer names -> (span name, MLflow span type)
STAGE_SPANS = {
    "redact": ("redact", "PARSER"),
    "retrieve": ("retrieve", "RETRIEVER"),
    "kg": ("graph", "RETRIEVER"),
    "generate": ("generate", "LLM"),
    "guard": ("guard", "GUARDRAIL"),
}
TRACES_REMEMBERED = 10_000  # request id -> trace id, so feedback needs no search
RATING_NAME = "user_rating"


def sampled(request_id: str, rate: float) -> bool:
    """Whether `request_id` is traced at `rate`: a fixed draw from its sha256, the same in
    every replica (and for a retried request with the same X-Request-ID)."""
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    draw = int(hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:8], 16)
    return draw / 0x1_0000_0000 < rate


@dataclass
class RequestRecord:
    """What one traced request recorded while it ran: when it began and each stage's
    [start, end] in ns since the epoch (a stage that ran twice has two entries)."""

    request_id: str
    route: str
    observe_next: Observe | None = None
    started_ns: int = field(default_factory=time.time_ns)
    stages: list[tuple[str, int, int]] = field(default_factory=list)

    def observe(self, stage: str, ms: float) -> None:
        """The pipeline's hook, called as a stage ends with its duration."""
        ended = time.time_ns()
        self.stages.append((stage, ended - int(ms * 1_000_000), ended))
        if self.observe_next is not None:
            self.observe_next(stage, ms)


@dataclass(frozen=True)
class Requester:
    """Who asked, as the trace may name them: fingerprints and the team only."""

    user: str
    key_id: str
    team: str
    role: str = "user"


class ServeTracer:
    """Writes served requests' traces and ratings to `<prefix>-serve`; off when tracking is
    disabled or `trace_sample_rate` is 0 (then `begin` returns None and nothing imports
    mlflow)."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        self.enabled = config.enabled and config.trace_sample_rate > 0
        self.with_text = config.trace_content == "redacted"
        self._tracker: Any = None
        self._experiment_id: str | None = None
        self._trace_ids: OrderedDict[str, str] = OrderedDict()

    def warm_up(self) -> None:
        """Import mlflow, point this process at the store and find or create the experiment;
        a store that cannot be reached turns tracing off (logged), not the service."""
        if not self.enabled or self._experiment_id is not None:
            return
        from rayrag.tracking.tracker import Tracker

        try:
            tracker = Tracker(self.config)
            tracker.warm_up()
            self._experiment_id = tracker._ensure_experiment(tracker.experiment_name("serve"))
            self._tracker = tracker
        except Exception as exc:  # noqa: BLE001 - tracing must never stop serving
            _warn("tracing_unavailable", exc)
            self.enabled = False

    @property
    def experiment_id(self) -> str | None:
        return self._experiment_id

    def begin(
        self, request_id: str, route: str, observe: Observe | None = None
    ) -> RequestRecord | None:
        """A record for a sampled request (pass its `observe` to the pipeline), else None."""
        if not self.enabled or not sampled(request_id, self.config.trace_sample_rate):
            return None
        return RequestRecord(request_id, route, observe)

    def finish(
        self,
        record: RequestRecord | None,
        who: Requester,
        turn: Any = None,
        versions: Mapping[str, str] | None = None,
        error: BaseException | None = None,
    ) -> str | None:
        """Write the trace of a finished request (`turn`: its `AnswerTurn`) or a failed one
        (`error`, named by type only); the trace id, or None when nothing was written."""
        if record is None:
            return None
        self.warm_up()
        if not self.enabled:
            return None
        try:
            return self._write(record, who, turn, dict(versions or {}), error)
        except Exception as exc:  # noqa: BLE001 - a lost trace, never a failed request
            _warn("trace_not_written", exc)
            return None

    def _write(
        self,
        record: RequestRecord,
        who: Requester,
        turn: Any,
        versions: dict[str, str],
        error: BaseException | None,
    ) -> str:
        mlflow = self._tracker.mlflow  # re-points the process at this store if moved
        response = turn.response if turn is not None else None
        root = mlflow.start_span_no_context(
            "answer",
            span_type="CHAIN",
            inputs=self._question(turn),
            attributes=_root_attributes(record, who, response, versions),
            tags={"request_id": record.request_id, "team": who.team},
            experiment_id=self._experiment_id,
            start_time_ns=record.started_ns,
        )
        for stage, start_ns, end_ns in record.stages:
            name, span_type = STAGE_SPANS.get(stage, (stage, "UNKNOWN"))
            span = mlflow.start_span_no_context(
                name,
                span_type=span_type,
                parent_span=root,
                attributes=_stage_attributes(name, turn),
                start_time_ns=start_ns,
            )
            span.end(end_time_ns=end_ns)
        status, outputs = "OK", None
        if error is not None:
            status = mlflow.entities.SpanStatus("ERROR", description=type(error).__name__)
            root.set_attribute("rayrag.error", type(error).__name__)
        elif self.with_text and response is not None:
            outputs = {"answer": response.answer}
        root.end(outputs=outputs, status=status)
        self._remember(record.request_id, root.trace_id)
        return root.trace_id

    def _question(self, turn: Any) -> dict[str, str] | None:
        if not self.with_text or turn is None or turn.question is None:
            return None  # a cached or refused answer has no redacted question to show
        return {"question": turn.question.text}

    def _remember(self, request_id: str, trace_id: str) -> None:
        self._trace_ids[request_id] = trace_id
        self._trace_ids.move_to_end(request_id)
        while len(self._trace_ids) > TRACES_REMEMBERED:
            self._trace_ids.popitem(last=False)

    # -- feedback ------------------------------------------------------------------------------

    def trace_id(self, request_id: str) -> str | None:
        """The newest trace of `request_id`: remembered by this replica, else searched for by
        its tag (another replica, a restart)."""
        self.warm_up()
        if not self.enabled:
            return None
        known = self._trace_ids.get(request_id)
        if known is not None:
            return known
        found = self._tracker.client().search_traces(
            locations=[self._experiment_id],
            filter_string=f"tag.request_id = '{request_id}'",
            order_by=["timestamp_ms DESC"],
            max_results=1,
            include_spans=False,
        )
        return found[0].info.trace_id if found else None

    def feedback(
        self, request_id: str, up: bool, who: Requester, rationale: str | None = None
    ) -> str | None:
        """Log a rating on the request's trace as a human `user_rating` assessment (source id:
        the rater's key fingerprint); `rationale` is kept only with trace_content redacted.
        The trace id, or None when the request was not traced or MLflow failed (logged)."""
        try:
            trace_id = self.trace_id(request_id)
            if trace_id is None:
                return None
            try:
                self._rate(trace_id, up, who, rationale)
            except Exception:
                if self._trace_ids.get(request_id) != trace_id:
                    raise
                # written by this replica moments ago: still on MLflow's export queue
                self._tracker.mlflow.flush_trace_async_logging()
                self._rate(trace_id, up, who, rationale)
            return trace_id
        except Exception as exc:  # noqa: BLE001 - the event is the record; MLflow is extra
            _warn("feedback_not_traced", exc)
            return None

    def _rate(self, trace_id: str, up: bool, who: Requester, rationale: str | None) -> None:
        mlflow = self._tracker.mlflow
        mlflow.log_feedback(
            trace_id=trace_id,
            name=RATING_NAME,
            value=up,
            source=mlflow.entities.AssessmentSource(source_type="HUMAN", source_id=who.key_id),
            rationale=rationale if self.with_text else None,
            metadata={"user": who.user, "team": who.team, "role": who.role},
        )

    def flush(self) -> None:
        """Wait until every trace this process began is in the store (tests, benches)."""
        if self._tracker is not None:
            try:
                self._tracker.mlflow.flush_trace_async_logging()
            except Exception as exc:  # noqa: BLE001 - at shutdown: lost traces, logged
                _warn("traces_not_flushed", exc)


def _root_attributes(
    record: RequestRecord, who: Requester, response: Any, versions: dict[str, str]
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "rayrag.request_id": record.request_id,
        "rayrag.route": record.route,
        "rayrag.user": who.user,
        "rayrag.key_id": who.key_id,
        "rayrag.team": who.team,
        "rayrag.role": who.role,
        **{f"rayrag.{k}": v for k, v in versions.items()},
    }
    if response is None:
        return attributes
    usage = response.usage
    attributes.update(
        {
            "rayrag.mode": response.mode,
            "rayrag.cached": response.cached,
            "rayrag.refused": response.refused,
            "rayrag.escalated": response.escalated,
            "rayrag.reasons": list(response.reasons),
            "rayrag.model_version": response.model_version,
            "rayrag.prompt_version": response.prompt_version,
            "rayrag.config_hash": response.config_hash,
            "rayrag.prompt_tokens": usage.prompt_tokens,
            "rayrag.completion_tokens": usage.completion_tokens,
            "rayrag.cost": usage.cost,
            "rayrag.currency": usage.currency,
            "rayrag.timings_ms": dict(response.timings_ms),
            "rayrag.citations": len(response.citations),
        }
    )
    return attributes


def _stage_attributes(name: str, turn: Any) -> dict[str, Any]:
    """The counts a stage produced, read from the finished turn (ids and numbers only)."""
    if turn is None:
        return {}
    response, evidence = turn.response, turn.evidence
    if name == "redact":
        return {"rayrag.redactions": dict(response.redactions.question)}
    if name == "retrieve" and evidence is not None:
        return {
            "rayrag.passages": len(evidence.passages),
            "rayrag.chunk_ids": [p.chunk_id for p in evidence.passages],
            "rayrag.flagged_chunks": evidence.flagged_chunks,
        }
    if name == "graph" and evidence is not None:
        return {"rayrag.facts": len(evidence.facts), "rayrag.passages": len(evidence.passages)}
    if name == "generate":
        return {
            "rayrag.prompt_tokens": response.usage.prompt_tokens,
            "rayrag.completion_tokens": response.usage.completion_tokens,
            "rayrag.model_version": response.model_version,
            "rayrag.prompt_version": response.prompt_version,
            "rayrag.finish_reason": response.finish_reason,
        }
    if name == "guard":
        return {
            "rayrag.redactions": dict(response.redactions.answer),
            "rayrag.groundedness": response.groundedness,
            "rayrag.confidence": response.confidence,
            "rayrag.escalated": response.escalated,
            "rayrag.reasons": list(response.reasons),
        }
    return {}


def _warn(event: str, exc: BaseException) -> None:
    """Logged by type only: an MLflow error's text may quote what it was sent."""
    _log.warning(event, extra={"fields": {"error": type(exc).__name__}})


def count_traces(client: Any, experiment_id: str, filter_string: str | None = None) -> int:
    """How many traces `experiment_id` holds (matching `filter_string`), page by page and
    without their spans: what the retention purge and `bench serve` count."""
    count, token = 0, None
    while True:
        page = client.search_traces(
            locations=[experiment_id],
            filter_string=filter_string,
            max_results=500,
            page_token=token,
            include_spans=False,
        )
        count += len(page)
        token = page.token
        if not token:
            return count
