"""What the Ingress keeps of each request: its content-free event, its escalation record,
its cost and its metrics (requests by route and status, per-stage latency, spend by team).

One place, so an answered, cached, refused or failed request is accounted the same way
whatever route it came by; nothing here reads a question or an answer's text.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ray.serve.metrics import Counter, Histogram

from rayrag.answering.pipeline import AnswerTurn
from rayrag.config import ServeConfig
from rayrag.event_log import file_event_logger
from rayrag.serve.auth import ApiPrincipal
from rayrag.serve.escalation import EscalationQueue
from rayrag.serve.request_log import request_event

LATENCY_BOUNDARIES_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
ASKERS_REMEMBERED = 10_000  # recent request id -> asker, for /v1/feedback without a log scan


class RequestLedger:
    """The event log, the escalation queue and the Ingress's Ray metrics."""

    def __init__(self, serve_cfg: ServeConfig) -> None:
        self.escalations = EscalationQueue(serve_cfg.escalation_queue)
        self.events = file_event_logger(
            "rayrag.serve.events",
            serve_cfg.event_log,
            max_bytes=serve_cfg.event_log_max_bytes,
            backups=serve_cfg.event_log_backups,
        )
        self.requests = Counter(
            "rayrag_requests",
            description="Requests by route and HTTP status.",
            tag_keys=("route", "status"),
        )
        self.latency = Histogram(
            "rayrag_stage_latency_ms",
            description="Per-stage latency (ms).",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("stage",),
        )
        self.cost = Counter(
            "rayrag_cost",
            description="Spend of answered requests, in serve.currency, by team.",
            tag_keys=("team",),
        )
        self._askers: OrderedDict[str, str] = OrderedDict()

    def asker(self, rid: str) -> str | None:
        """The fingerprint of the principal this replica answered `rid` for, if remembered."""
        return self._askers.get(rid)

    def observe(self, stage: str, ms: float) -> None:
        self.latency.observe(ms, tags={"stage": stage})

    def answered(self, rid: str, caller: ApiPrincipal, turn: AnswerTurn, bundle_id: str) -> None:
        """The request's content-free event, its escalation record and its cost."""
        event = request_event(rid, caller, turn, bundle_id)
        body = turn.response
        if body.escalated:  # a doubted answer reaches a human each time it is served
            self.escalations.record(
                rid,
                event["user"],
                caller.team,
                body.reasons,
                body.confidence,
                body.groundedness,
                event["chunk_ids"],
                body.model_version,
            )
        self.events.info("request", extra={"fields": event})
        self._askers[rid] = event["user"]
        self._askers.move_to_end(rid)
        while len(self._askers) > ASKERS_REMEMBERED:
            self._askers.popitem(last=False)
        if body.usage.cost > 0:
            self.cost.inc(body.usage.cost, tags={"team": caller.team})

    def succeeded(self, route: str) -> None:
        self.requests.inc(tags={"route": route, "status": "200"})

    def failed(self, route: str, exc: Exception, rid: str, status: int) -> None:
        """Counted and logged by the exception's type only: its message may quote input."""
        self.requests.inc(tags={"route": route, "status": str(status)})
        fields: dict[str, Any] = {
            "request_id": rid,
            "route": route,
            "status": status,
            "error": type(exc).__name__,
        }
        self.events.warning("request_failed", extra={"fields": fields})
