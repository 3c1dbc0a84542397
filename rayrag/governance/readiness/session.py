"""The readiness probes' session: HTTP calls with traced ids, shared state, the run loop.

`ProbeSession` sends every probe request with `X-Request-ID: readiness-<run>-NN-<label>` and
`Cache-Control: no-cache` (probes exercise the live pipeline, never the answer cache),
remembers what the probes learn (request ids, canaries, answers, served versions), and runs
each check on its own: a check's failure is its own evidence (`ProbeFailed`) or a type name,
never an exception's text. The sixteen checks themselves are `ReadinessProbe` (readiness.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayrag.config import RAGConfig
from rayrag.governance.readiness.report import CHECKS, DASHBOARD, Check, ReadinessReport, clip


@dataclass(frozen=True)
class Canary:
    """The restricted canary document: its id, a question that retrieves it for a principal
    allowed to read it, and a phrase of its text that the question does not contain.

    The default matches the demo corpus (`rayrag data demo`, seed 0): `hr-000` is an HR
    record (ACL `hr`), the question paraphrases its first sentence, and its employee id
    appears in its text and title but nowhere public."""

    doc_id: str = "hr-000"
    question: str = "Who joined Ashcombe Power in 2003 as Regulatory Affairs Manager?"
    phrase: str = "EMP-10010"


class ProbeFailed(Exception):
    """A probe's own verdict: the message is evidence this module wrote (ids and counts)."""


def need(condition: bool, evidence: str) -> None:
    if not condition:
        raise ProbeFailed(evidence)


@dataclass
class _Reply:
    status: int
    request_id: str
    header_request_id: str
    body: dict[str, Any]
    text: str


@dataclass
class _State:
    """What the probes learn and share while they run (never printed)."""

    run_tag: str
    request_ids: list[str] = field(default_factory=list)
    canaries: list[str] = field(default_factory=list)  # strings no log may contain
    answers: list[dict[str, Any]] = field(default_factory=list)  # /v1/ask bodies (admin and user)
    served_prompt: str = ""
    served_model: str = ""
    gate: dict[str, Any] | None = None
    # the canary doc's title, as an all-groups key sees it
    canary_titles: set[str] = field(default_factory=set)
    counter: int = 0


class ProbeSession:
    """HTTP, ids and shared state for the probes; `ReadinessProbe` (readiness.py) adds the sixteen
    checks. Runs them against `url` with an admin key and a public-only user key.

    `config` is the client's view: its `tracking` section must point at the deployment's
    MLflow store (the gate, the eval runs, the prompt registry), and the report is logged
    there. `qa_dataset` is the QA file the champion was evaluated on (`rayrag eval`);
    `metrics_url` is Ray's Prometheus endpoint (`http://HOST:METRICS_EXPORT_PORT/metrics`);
    `log_files` are files the service writes that are byte-scanned for the canaries too
    (only when they are on this machine: `--local`).
    """

    def __init__(
        self,
        url: str,
        admin_key: str,
        user_key: str,
        *,
        config: RAGConfig,
        canary: Canary | None = None,
        qa_dataset: Path | None = None,
        qa_limit: int | None = None,
        metrics_url: str | None = None,
        dashboard: Path = DASHBOARD,
        log_files: Sequence[Path] = (),
        timeout_s: float = 120.0,
        metrics_wait_s: float = 45.0,
        tracker: Any = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._admin_key, self._user_key = admin_key, user_key
        self.config = config
        self.canary = canary or Canary()
        self.qa_dataset, self.qa_limit = qa_dataset, qa_limit
        self.metrics_url, self.dashboard = metrics_url, Path(dashboard)
        self.log_files = [Path(p) for p in log_files]
        self.timeout_s, self.metrics_wait_s = timeout_s, metrics_wait_s
        self._tracker = tracker
        self._client: Any = None
        self.state = _State(run_tag=secrets.token_hex(4))

    # -- plumbing --------------------------------------------------------------------------

    @property
    def tracker(self) -> Any:
        if self._tracker is None:
            from rayrag.tracking.tracker import Tracker

            self._tracker = Tracker(self.config.tracking)
        return self._tracker

    def warm_up(self) -> None:
        if self._client is None:
            import httpx

            self._client = httpx.Client(base_url=self.url, timeout=self.timeout_s)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _rid(self, label: str) -> str:
        self.state.counter += 1
        return f"readiness-{self.state.run_tag}-{self.state.counter:02d}-{label}"[:64]

    def _call(
        self,
        method: str,
        path: str,
        key: str,
        label: str,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> _Reply:
        self.warm_up()
        rid = self._rid(label)
        # no-cache: every probe exercises the live pipeline, not the answer cache
        headers = {
            "Authorization": f"Bearer {key}",
            "X-Request-ID": rid,
            "Cache-Control": "no-cache",
        }
        response = self._client.request(
            method, path, json=json_body, params=params, headers=headers
        )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        return _Reply(
            response.status_code, rid, response.headers.get("x-request-id", ""), body, response.text
        )

    def _ask(self, key: str, label: str, question: str, **fields: Any) -> _Reply:
        reply = self._call("POST", "/v1/ask", key, label, {"question": question, **fields})
        self.state.request_ids.append(reply.request_id)
        if reply.status == 200:
            self.state.answers.append(reply.body)
            self.state.served_prompt = self.state.served_prompt or str(
                reply.body.get("prompt_version") or ""
            )
            self.state.served_model = self.state.served_model or str(
                reply.body.get("model_version") or ""
            )
        return reply

    def _admin(
        self,
        method: str,
        path: str,
        label: str,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        reply = self._call(method, path, self._admin_key, label, json_body, params)
        need(reply.status == 200, f"{method} {path} -> HTTP {reply.status}")
        return reply.body

    def _events(self, rid: str) -> list[dict[str, Any]]:
        events = self._admin("GET", "/v1/admin/events", "events", params={"request_id": rid}).get(
            "events"
        )
        need(isinstance(events, list), "GET /v1/admin/events: no events list")
        return events

    # -- running ---------------------------------------------------------------------------

    # Dependencies decide the order: traffic first, the gate before the alias flip, the
    # metrics and the log scan last (they look at everything the others sent).
    ORDER = (
        "tracing",
        "pii_detection",
        "access_control",
        "input_safety",
        "output_moderation",
        "escalation_path",
        "cost_attribution",
        "retention_configured",
        "regression_suite",
        "eval_versioned_with_prompt",
        "prompt_pinned",
        "ab_plan",
        "rollback_tested",
        "red_team",
        "slo_metrics",
        "logging_policy",
    )

    def run(
        self, only: Sequence[str] | None = None, progress: Callable[[Check], None] | None = None
    ) -> ReadinessReport:
        """Every probe (or those in `only`), each caught on its own; checks in checklist order."""
        areas = dict(CHECKS)
        results: dict[str, Check] = {}
        try:
            for name in self.ORDER:
                if only is not None and name not in only:
                    continue
                check = self.probe(name, areas[name])
                results[name] = check
                if progress is not None:
                    progress(check)
        finally:
            self.close()
        return ReadinessReport([results[n] for n, _ in CHECKS if n in results], target=self.url)

    def probe(self, name: str, area: str) -> Check:
        try:
            evidence = getattr(self, f"check_{name}")()
            return Check(name, area, True, clip(evidence))
        except ProbeFailed as failed:
            return Check(name, area, False, clip(str(failed)))
        except Exception as exc:  # noqa: BLE001 - a type name only: exception text may hold content
            return Check(name, area, False, clip(f"probe error {type(exc).__name__}"))


def response_doc_ids(body: Mapping[str, Any]) -> set[str]:
    """Every document id a /v1/ask response shows: citations, facts, the guard's claim facts."""
    ids = {str(c.get("doc_id")) for c in body.get("citations") or []}
    ids |= {str(d) for f in body.get("facts") or [] for d in f.get("doc_ids") or []}
    claims = (body.get("validation") or {}).get("claims") or []
    ids |= {str(d) for c in claims for d in c.get("fact_doc_ids") or []}
    truncated = (body.get("truncated") or {}).get("chunk_ids") or []
    ids |= {str(c).rsplit("#", 1)[0] for c in truncated}
    return ids


def count_of(value: Any) -> int:
    return len(value) if isinstance(value, (list, tuple, set, dict)) else int(value)
