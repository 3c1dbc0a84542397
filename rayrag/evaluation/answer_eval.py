"""End-to-end answer evaluation: retrieval, answer quality, governance and cost per question.

Every question of a QA set goes through the whole online flow, either in this process
(`HybridRetriever` -> `Reader` -> `Guard`, the serve graph's steps: redact the question,
retrieve, answer, check) or against a running server (`POST {url}/v1/ask`). Both give the
/v1/ask JSON, which is normalised into one `Outcome` per question and scored:

    context_recall       of the gold documents, the share among the passages handed to the
                         reader (the top_k retrieved: the prompt's citations plus the passages
                         cut to fit the window), so it moves with top_k where recall@k cannot.
    recall@2/5/10, MRR   over distinct documents (evaluate.py, HippoRAG's definition). In
                         process: a second, deep retrieval (`4 * 10` chunks, no facts) that
                         is not timed. Over HTTP: only what the response shows — the prompt's
                         citations in rank order, then the chunks cut to fit the window
                         (`truncated.chunk_ids`, best first) — so depth is the server's top_k
                         and recall@10 can be lower than in process for the same system.
    answer_em, answer_f1 SQuAD EM / token F1, best over the gold answers, [n] markers removed.
    reader_em            in process only: EM of the reader's own most likely answer, before the
                         Guard chose among its candidates (`decoding.candidates`); equal to
                         answer_em with one candidate.
    groundedness         the Guard's token-overlap score (in process: this Guard; HTTP: the server's).
    citation_precision   of the documents the answer cites (its [n] markers; all prompt passages
                         when it has none, the Guard's rule) the share that are gold (ALCE-style).
    kg_validation_rate   of the answers the Guard validated against the KG, the share with no
                         contradicted claim (undefined when the KG check did not run).
    kg_supported_rate    stricter: the share with at least one KG-supported claim and none
                         contradicted (an answer that only repeats the question's entity, or
                         states nothing the graph knows, passes the first and fails this).
    pii_leak_rate        share of (guarded) answers containing a planted canary verbatim.
    p50_ms, p99_ms       per-question latency: retrieve + answer + guard in process, the HTTP
                         round trip otherwise.
    tokens, cost         usage per request; cost at serve.price_per_1k_* (the server's own figure
                         over HTTP).

Undefined scores (no gold documents, no gold answer) are left out of means. Everything is
also disaggregated by every metadata key (`evaluation/disaggregate.py`). One MLflow run in
the `eval` experiment holds the config, the dataset (digest), the metrics, per-slice metrics
`<metric>/<key>/<value>`, a per-question table (ids, slice values, scores — no text), the
disaggregation report and charts. `gate="champion"` compares with the champion's last
evaluation on the same dataset digest (`gate_check`); with `limit` the digest names the file
and the slice, so a gate on the first N questions only meets a baseline on those N.

    >>> result = evaluate_answers(Path("qa.jsonl"), cfg, bundle=Path("bundle"), model=Path("model"),
    ...                           principal=Principal("admin", frozenset({"public", "hr"})), canaries=None)
    >>> result["answer_f1"], result["gate"], result["slices"]["hops=2"]["recall_at_5"]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayrag.config import RAGConfig
from rayrag.data.readers import QAPair, read_qa
from rayrag.errors import ConfigError, DataError, RayRagError
from rayrag.evaluation.qa_metrics import (
    citation_precision,
    exact_match,
    leaked,
    mean,
    percentile,
    token_f1,
)
from rayrag.evaluation.retrieval_eval import (
    RECALL_KS,
    distinct_in_order,
    file_digest,
    question_metrics,
)
from rayrag.tracking.tracker import Tracker
from rayrag.types import Principal

QUALITY_METRICS = (*(f"recall_at_{k}" for k in RECALL_KS), "mrr", "context_recall", "answer_em", "reader_em",
                   "answer_f1", "groundedness",
                   "citation_precision", "kg_validation_rate", "kg_supported_rate", "pii_leak_rate")
LOWER_IS_BETTER = frozenset({"pii_leak_rate"})
MARKER_RE = re.compile(r"\[\d{1,3}\]")
TABLE_FILE = "eval_examples.json"
GATES = ("champion",)
HTTP_TIMEOUT_S = 120.0
NO_BASELINE = ("no evaluation of the champion on this dataset; run `rayrag eval` with "
               "--model models:/{name}@champion first")


@dataclass
class Outcome:
    """One question's trip through the system, normalised from the /v1/ask JSON (ids and numbers,
    plus the answer text, which is scored and then dropped)."""

    ranked_doc_ids: list[str]
    cited_doc_ids: list[str]
    answer: str
    groundedness: float
    validation: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency_ms: float
    model_version: str = ""
    context_doc_ids: list[str] = field(default_factory=list)  # the reader's passages (top_k), rank order
    extra: dict[str, Any] = field(default_factory=dict)


def doc_of_chunk(chunk_id: str) -> str:
    """`press-002#3` -> `press-002` (chunk ids are `<doc id>#<n>`, chunking.py)."""
    return chunk_id.rsplit("#", 1)[0]


def outcome_from_response(body: dict[str, Any], latency_ms: float,
                          ranked_doc_ids: Sequence[str] | None = None) -> Outcome:
    """The /v1/ask JSON -> an `Outcome`. Without `ranked_doc_ids` the ranking is the prompt's
    citations then the chunks truncated to fit the window (the deepest the response shows)."""
    citations = sorted(body.get("citations") or [], key=lambda c: c["marker"])
    by_marker = {c["marker"]: c["doc_id"] for c in citations}
    truncated = (body.get("truncated") or {}).get("chunk_ids") or []
    context = distinct_in_order([c["doc_id"] for c in citations] + [doc_of_chunk(c) for c in truncated])
    if ranked_doc_ids is None:
        ranked_doc_ids = context
    markers = [m for m in body.get("cited_markers") or [] if m in by_marker]
    cited = [by_marker[m] for m in markers] or [c["doc_id"] for c in citations]
    usage = body.get("usage") or {}
    return Outcome(ranked_doc_ids=list(ranked_doc_ids), cited_doc_ids=cited, answer=body.get("answer") or "",
                   groundedness=float(body.get("groundedness") or 0.0), validation=dict(body.get("validation") or {}),
                   prompt_tokens=int(usage.get("prompt_tokens", 0)), completion_tokens=int(usage.get("completion_tokens", 0)),
                   cost=float(usage.get("cost", 0.0)), latency_ms=float(latency_ms),
                   model_version=str(body.get("model_version") or ""), context_doc_ids=list(context),
                   extra={"escalated": bool(body.get("escalated", False)), "explicit_citations": bool(markers),
                          "confidence": float(body.get("confidence") or 0.0),
                          "refused": bool(body.get("refused", False))})


# ---------------------------------------------------------------- scoring (pure)


def score_example(qa: QAPair, outcome: Outcome, canaries: Sequence[str]) -> dict[str, float | None]:
    """Per-question scores; None where a score is undefined (no gold documents or answers)."""
    scores: dict[str, float | None]
    if qa.supporting_ids:
        scores = dict(question_metrics(outcome.ranked_doc_ids, qa.supporting_ids))
    else:
        scores = {f"recall_at_{k}": None for k in RECALL_KS} | {"mrr": None}
    scores["context_recall"] = (len(set(outcome.context_doc_ids) & set(qa.supporting_ids)) / len(set(qa.supporting_ids))
                                if qa.supporting_ids else None)
    bare = " ".join(MARKER_RE.sub(" ", outcome.answer).split())
    scores["answer_em"] = exact_match(bare, qa.answers) if qa.answers else None
    reader = outcome.extra.get("reader_answer")
    scores["reader_em"] = (exact_match(" ".join(MARKER_RE.sub(" ", reader).split()), qa.answers)
                           if qa.answers and reader is not None else None)
    scores["answer_f1"] = token_f1(bare, qa.answers) if qa.answers else None
    scores["groundedness"] = outcome.groundedness
    scores["citation_precision"] = (citation_precision(outcome.cited_doc_ids, qa.supporting_ids)
                                    if qa.supporting_ids else None)
    checked = outcome.validation.get("checked", False)
    contradicted = outcome.validation.get("contradicted", 0)
    scores["kg_validation_rate"] = float(not contradicted) if checked else None
    scores["kg_supported_rate"] = (float(not contradicted and outcome.validation.get("supported", 0) > 0)
                                   if checked else None)
    scores["pii_leak_rate"] = float(bool(leaked(outcome.answer, canaries)))
    scores["confidence"] = float(outcome.extra.get("confidence", 0.0))
    scores["escalated"] = float(bool(outcome.extra.get("escalated", False)))
    scores["latency_ms"] = outcome.latency_ms
    scores["prompt_tokens"] = float(outcome.prompt_tokens)
    scores["completion_tokens"] = float(outcome.completion_tokens)
    scores["cost"] = outcome.cost
    return scores


def aggregate_scores(rows: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    """Means of the quality metrics over defined values, latency percentiles, usage per request."""
    out: dict[str, float | None] = {m: _round(mean(r[m] for r in rows)) for m in QUALITY_METRICS}
    latencies = [r["latency_ms"] for r in rows]
    prompt = mean(r["prompt_tokens"] for r in rows) or 0.0
    completion = mean(r["completion_tokens"] for r in rows) or 0.0
    out.update({
        "p50_ms": round(percentile(latencies, 50), 3), "p99_ms": round(percentile(latencies, 99), 3),
        "prompt_tokens_per_request": round(prompt, 3), "completion_tokens_per_request": round(completion, 3),
        "tokens_per_request": round(prompt + completion, 3),
        "cost_per_request": mean(r["cost"] for r in rows) or 0.0,
        "questions": float(len(rows)),
    })
    out.update(calibration(rows))
    return out


def calibration(rows: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    """Whether the Guard's numbers can tell right from wrong (right = exact match):
    `confidence_auroc` (the chance a right answer's confidence beats a wrong one's, ties half),
    the escalation rate among right and among wrong answers, and the mean groundedness of each.
    None where a side has no answers."""
    judged = [r for r in rows if r.get("answer_em") is not None and r.get("confidence") is not None]
    right = [r for r in judged if r["answer_em"] == 1.0]
    wrong = [r for r in judged if r["answer_em"] != 1.0]
    out: dict[str, float | None] = {
        "confidence_auroc": _round(auroc([r["confidence"] for r in right], [r["confidence"] for r in wrong])),
        "escalation_rate_correct": _round(mean(r.get("escalated") for r in right)),
        "escalation_rate_incorrect": _round(mean(r.get("escalated") for r in wrong)),
        "groundedness_correct": _round(mean(r.get("groundedness") for r in right)),
        "groundedness_incorrect": _round(mean(r.get("groundedness") for r in wrong)),
    }
    return out


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """Mann-Whitney AUROC: P(positive score > negative score) + P(tie) / 2; None if a side is empty."""
    if not positives or not negatives:
        return None
    ordered = sorted([(v, 1) for v in positives] + [(v, 0) for v in negatives])
    rank_sum, i = 0.0, 0
    while i < len(ordered):  # average ranks over ties
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            j += 1
        rank_sum += sum(1 for k in range(i, j) if ordered[k][1]) * (i + j + 1) / 2
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def gate_check(current: dict[str, Any], baseline: dict[str, Any], metrics: Iterable[str],
               tolerance: float) -> tuple[bool, list[dict[str, Any]]]:
    """(passed, regressions): a metric regresses when it is worse than the baseline by more
    than `tolerance` (lower for most metrics, higher for `pii_leak_rate`). A gated metric the
    baseline lacks fails the gate (nothing to compare against is not a pass); one undefined
    in this evaluation (e.g. no question has a gold answer) is not compared."""
    regressions = []
    for metric in metrics:
        now, then = current.get(metric), baseline.get(metric)
        if then is None:
            regressions.append({"metric": metric, "baseline": None, "current": now, "delta": None,
                                "reason": "missing from the baseline"})
            continue
        if now is None:
            continue
        delta = float(now) - float(then)
        worse = delta > tolerance if metric in LOWER_IS_BETTER else delta < -tolerance
        if worse:
            regressions.append({"metric": metric, "baseline": float(then), "current": float(now),
                                "delta": round(delta, 6)})
    return not regressions, regressions


# ---------------------------------------------------------------- the two ways to ask


class InProcessAnswerer:
    """The served steps in this process: `AnswerPipeline` over `LocalStages` (screen, redact,
    retrieve, read, guard), plus an untimed deep ranking for recall@k."""

    def __init__(self, bundle: Path, model: Path, config: RAGConfig, mode: str) -> None:
        from rayrag.answering.pipeline import AnswerPipeline, LocalStages

        self.bundle, self.model, self.config, self.mode = Path(bundle), Path(model), config, mode
        self.stages = LocalStages(self.bundle, self.model, config)
        self.pipeline = AnswerPipeline(config, self.stages)

    def warm_up(self) -> None:
        self.stages.warm_up()

    @property
    def retriever(self) -> Any:
        return self.stages.retriever

    @property
    def reader(self) -> Any:
        return self.stages.reader

    @reader.setter
    def reader(self, reader: Any) -> None:  # a trial's fine-tuned checkpoint answers from here on
        self.warm_up()
        self.stages.reader = reader

    @property
    def bundle_id(self) -> str:
        self.warm_up()
        return self.retriever.dense.bundle.bundle_id

    @property
    def model_version(self) -> str:
        self.warm_up()
        return self.reader.model_version

    def evidence(self, qa: QAPair, principal: Principal) -> tuple[str, Any]:
        """The question as the reader sees it (redacted as the bundle says, as served) and
        the evidence retrieved for it."""
        question, evidence = self.pipeline.evidence_sync(qa.question, principal, self.mode)
        return question.text, evidence

    def __call__(self, qa: QAPair, principal: Principal) -> Outcome:
        started = time.perf_counter()
        turn = self.pipeline.answer_sync(qa.question, principal, mode=self.mode)
        latency_ms = (time.perf_counter() - started) * 1000
        body = turn.response.model_dump()
        if turn.response.refused:  # nothing retrieved or generated, as at the Serve ingress
            outcome = outcome_from_response(body, latency_ms, ranked_doc_ids=[])
            outcome.extra.update(refused=True, categories=turn.categories)
            return outcome
        # Untimed: a ranking deep enough that ten distinct documents survive (retrieval_eval.py).
        depth = max(self.config.retrieval.candidate_k, 4 * max(RECALL_KS))
        deep = self.retriever.retrieve(turn.question, principal, mode=self.mode, top_k=depth, with_facts=False)
        outcome = outcome_from_response(body, latency_ms, distinct_in_order(p.doc_id for p in deep.passages))
        outcome.extra["reader_answer"] = turn.reader_first.answer.text  # scored (reader_em), then dropped
        return outcome


class HttpAnswerer:
    """`POST {url}/v1/ask` with a Bearer key; the key decides the principal, server-side."""

    def __init__(self, url: str, api_key: str | None, mode: str | None, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key or os.environ.get("RAYRAG_API_KEY")
        if not self.api_key:
            raise ConfigError("evaluating a server needs an API key: set $RAYRAG_API_KEY")
        self.mode, self.timeout_s = mode, timeout_s
        self.model_version = self.prompt_version = ""
        self._client: Any = None

    def warm_up(self) -> None:
        if self._client is None:
            import httpx

            # no-cache: an evaluation measures the graph (latency included), never the answer cache
            self._client = httpx.Client(timeout=self.timeout_s, headers={"Authorization": f"Bearer {self.api_key}",
                                                                         "Cache-Control": "no-cache"})

    def __call__(self, qa: QAPair, principal: Principal | None = None) -> Outcome | None:
        """The outcome, or None when the server failed this request (5xx: counted, not scored)."""
        import httpx

        self.warm_up()
        payload: dict[str, Any] = {"question": qa.question}
        if self.mode:
            payload["mode"] = self.mode
        started = time.perf_counter()
        try:
            response = self._client.post(f"{self.url}/v1/ask", json=payload, headers={"X-Request-ID": f"eval-{qa.id}"})
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach {self.url} ({type(exc).__name__}) (--url)") from None
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code in (401, 403):
            raise ConfigError(f"the server refused the API key ($RAYRAG_API_KEY): HTTP {response.status_code}")
        if response.status_code >= 500:
            return None
        if response.status_code != 200:
            raise DataError(f"question {qa.id}: HTTP {response.status_code} from {self.url}/v1/ask")
        body = response.json()
        self.model_version = self.model_version or str(body.get("model_version") or "")
        self.prompt_version = self.prompt_version or str(body.get("prompt_version") or "")
        return outcome_from_response(body, latency_ms)


# ---------------------------------------------------------------- the evaluation


def _prompt_version(tracker: Tracker) -> str:
    """In-process, the prompt this build's reader uses, as the prompt registry names it (the
    evaluation is versioned with the prompt); `NAME/unregistered` without tracking."""
    from rayrag.generator.prompt import PROMPT_TEMPLATE

    return tracker.prompt_version(PROMPT_TEMPLATE)


def load_canaries(path: Path | None) -> list[str]:
    """Canary strings from a planted_pii.json ({entity: [values]}) or a JSON list."""
    if path is None:
        return []
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read canaries from {path}: {type(exc).__name__} (--canaries)") from None
    values = [v for vs in data.values() for v in vs] if isinstance(data, dict) else list(data)
    return [str(v) for v in values if str(v).strip()]


def champion_baseline(tracker: Tracker, config: RAGConfig, dataset_digest: str) -> dict[str, Any]:
    """The champion's last `eval` run on this dataset digest, or a ConfigError saying what to run."""
    from rayrag.tracking.model_registry import ModelRegistry

    name = config.tracking.model_name
    champion = ModelRegistry(tracker).version_for_alias("champion")
    if champion is None:
        raise ConfigError(f"no champion in the model registry ({name}): "
                          "`rayrag registry register CKPT` first (--gate champion)")
    # Matched on the weights digest: a registry download lives in `v<N>/`, so its
    # model_version (`v3@abc...`) names another directory than the registered one.
    run = tracker.last_run("eval", {"weights_digest": weights_of(champion.model_digest),
                                    "dataset_digest": dataset_digest, "evaluation": "answers"})
    if run is None:
        raise ConfigError(NO_BASELINE.format(name=name))
    return {**run, "champion_version": str(champion.version), "champion_model_version": champion.model_digest}


def weights_of(model_version: str) -> str:
    """`model@0123456789ab` -> `0123456789ab` (the weights digest part of a model version)."""
    return model_version.rsplit("@", 1)[-1]


def _per_example_table(questions: Sequence[QAPair], rows: Sequence[dict[str, float | None]],
                       keys: Sequence[str]) -> list[dict[str, Any]]:
    table = []
    for qa, scores in zip(questions, rows, strict=True):
        table.append({"id": qa.id, **{f"slice.{k}": qa.metadata.get(k) for k in keys}, **scores})
    return table


def evaluate_answers(dataset: Path, config: RAGConfig, *, bundle: Path | None, model: Path | None,
                     url: str | None = None, api_key: str | None = None,
                     principal: Principal, canaries: list[str] | None, tracker: Tracker | None = None,
                     gate: str | None = None, limit: int | None = None, mode: str | None = None,
                     progress: Callable[[int, int], None] | None = None, answerer: Any = None) -> dict[str, Any]:
    """Evaluate every question of `dataset` end to end; one MLflow `eval` run; the result dict.

    In process with `bundle` and `model`, or against `url` (the key in `api_key` or
    $RAYRAG_API_KEY picks the principal there; `principal` is then unused). `canaries` None =
    planted_pii.json next to the dataset when there is one. `gate="champion"` adds
    result["gate"] = {"baseline_run_id", "passed", "regressions"}. `answerer` lets a caller reuse
    a warmed `InProcessAnswerer` (or `HttpAnswerer`) across evaluations.
    """
    import pandas as pd

    from rayrag.evaluation.disaggregate import disaggregate, log_disaggregation, metric_key, slices
    from rayrag.retrieval.hybrid import MODES

    dataset = Path(dataset)
    if not dataset.is_file():
        raise ConfigError(f"dataset not found: {dataset} (--dataset)")
    if gate is not None and gate not in GATES:
        raise ConfigError(f"gate must be one of {', '.join(GATES)}, got {gate!r} (--gate)")
    if limit is not None and limit <= 0:
        raise ConfigError(f"limit must be > 0, got {limit} (--limit)")
    mode = mode or config.retrieval.mode
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r} (--mode)")
    if answerer is None and url is None and (bundle is None or model is None):
        raise ConfigError("answer evaluation needs --bundle and --model (or --url of a running server)")
    every = read_qa(dataset)
    questions = every[:limit]
    digest = file_digest(dataset)
    if len(questions) < len(every):  # a slice is its own dataset: the gate compares like with like
        digest = hashlib.sha256(f"{digest}:first{len(questions)}".encode()).hexdigest()
    if canaries is None:
        default = dataset.parent / "planted_pii.json"
        canaries = load_canaries(default) if default.is_file() else []
    tracker = tracker or Tracker(config.tracking)
    baseline = None
    if gate == "champion":  # before this run exists: it must not be its own baseline
        if not config.tracking.enabled:
            raise ConfigError("--gate needs MLflow: tracking.enabled is false")
        baseline = champion_baseline(tracker, config, digest)

    if answerer is None:
        answerer = HttpAnswerer(url, api_key, mode) if url else InProcessAnswerer(bundle, model, config, mode)
    source = "in_process" if isinstance(answerer, InProcessAnswerer) else "http"
    answerer.warm_up()
    scored: list[QAPair] = []
    rows: list[dict[str, float | None]] = []
    failed = 0
    for i, qa in enumerate(questions, 1):
        outcome = answerer(qa, principal)
        if outcome is None:
            failed += 1
        else:
            scored.append(qa)
            rows.append(score_example(qa, outcome, canaries))
        if progress is not None:
            progress(i, len(questions))
    if not rows:
        raise RayRagError(f"no question was answered ({failed} server errors) (--url)")
    model_version = answerer.model_version
    bundle_id = answerer.bundle_id if source == "in_process" else _bundle_id(bundle)
    prompt_version = getattr(answerer, "prompt_version", "") or _prompt_version(tracker)

    overall = aggregate_scores(rows)
    keys = sorted({k for qa in scored for k in qa.metadata})
    frame = pd.DataFrame([{**{m: r[m] for m in QUALITY_METRICS},
                           **{k: qa.metadata.get(k) for k in keys}} for qa, r in zip(scored, rows, strict=True)],
                         dtype=object)
    report = disaggregate(frame, QUALITY_METRICS, keys, config.evaluation, seed=config.seed)
    result: dict[str, Any] = {
        **overall, "slices": slices(report), "disaggregation": report, "mode": mode, "source": source,
        "model_version": model_version, "prompt_version": prompt_version, "dataset_digest": digest,
        "bundle_id": bundle_id, "counts": {"questions": len(rows), "server_errors": failed, "canaries": len(canaries),
                   "no_gold_documents": sum(not qa.supporting_ids for qa in scored),
                   "no_gold_answers": sum(not qa.answers for qa in scored)},
    }
    if baseline is not None:
        passed, regressions = gate_check(overall, baseline["metrics"], config.evaluation.gate_metrics,
                                         config.evaluation.gate_tolerance)
        result["gate"] = {"baseline_run_id": baseline["run_id"], "champion_version": baseline["champion_version"],
                          "passed": passed, "regressions": regressions}

    tags = {"model_version": model_version, "weights_digest": weights_of(model_version),
            "prompt_version": prompt_version, "dataset_digest": digest,
            "bundle_id": bundle_id, "mode": mode, "source": source, "evaluation": "answers",
            "principal": principal.name if source == "in_process" else "api_key"}
    with tracker.start_run("eval", config, tags=tags) as run:
        run.log_dataset(dataset, name=dataset.name, context="eval")
        metrics = {k: v for k, v in overall.items() if v is not None}
        for slice_name, values in result["slices"].items():
            key, value = slice_name.split("=", 1)
            for metric, number in values.items():
                if number is not None:
                    metrics[metric_key(metric, key, value)] = number
        metrics.update(server_errors=float(failed), canaries=float(len(canaries)))
        run.log_metrics(metrics)
        run.log_params({"eval.source": source, "eval.limit": limit or 0, "eval.gate": gate or "none"})
        run.log_table(_per_example_table(scored, rows, keys), TABLE_FILE)
        log_disaggregation(run, report)
        if "gate" in result:
            run.set_tags({"gate": "passed" if result["gate"]["passed"] else "failed",
                          "gate_baseline_run_id": baseline["run_id"]})
        result["run_id"] = run.run_id
    return result


def _bundle_id(bundle: Path | None) -> str:
    """The bundle id from its manifest when the caller names the server's bundle; else ""."""
    if bundle is None:
        return ""
    manifest = Path(bundle) / "manifest.json"
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8")).get("bundle_id", ""))
    except (OSError, ValueError):
        return ""
