"""End-to-end answer evaluation: retrieval, answer quality, governance and cost per question.

Every question of a QA set goes through the whole online flow, either in this process (the
`AnswerPipeline` the serve graph runs: screen, redact, retrieve, read, guard) or against a
running server (`POST {url}/v1/ask`); `answerers.py` holds both. Both give the /v1/ask JSON,
which is normalised into one `Outcome` per question and scored (`answer_scoring.py`):

    context_recall       of the gold documents, the share among the passages handed to the
                         reader (the top_k retrieved: the prompt's citations plus the passages
                         cut to fit the window), so it moves with top_k where recall@k cannot.
    recall@2/5/10, MRR   over distinct documents (retrieval_eval.py, HippoRAG's definition). In
                         process: a second, deep retrieval (`4 * 10` chunks, no facts) that
                         is not timed. Over HTTP: only what the response shows — the prompt's
                         citations in rank order, then the chunks cut to fit the window
                         (`truncated.chunk_ids`, best first) — so depth is the server's top_k
                         and recall@10 can be lower than in process for the same system.
    answer_em, answer_f1 SQuAD EM / token F1, best over the gold answers, [n] markers removed.
    reader_em            in process only: EM of the reader's own most likely answer, before the
                         Guard chose among its candidates (`decoding.candidates`); equal to
                         answer_em with one candidate.
    groundedness         the Guard's token-overlap score (in process: this Guard; HTTP: the
                         server's).
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
disaggregation report and charts, and one row per question in MLflow's Evaluations tab
(`mlflow.genai.evaluate`, `tracking/evaluations.py`; text only with `evaluation.log_text`).
`gate="champion"` compares with the champion's last evaluation on the same dataset digest
(`gate_check`); with `limit` the digest names the file and the slice, so a gate on the first
N questions only meets a baseline on those N.

    >>> result = evaluate_answers(Path("qa.jsonl"), cfg, bundle=Path("bundle"), model=Path("model"),
    ...                           principal=Principal("admin", frozenset({"public", "hr"})),
    ...                           canaries=None)
    >>> result["answer_f1"], result["gate"], result["slices"]["hops=2"]["recall_at_5"]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rayrag.config import RAGConfig
from rayrag.data.readers import QAPair, read_qa
from rayrag.errors import ConfigError, RayRagError
from rayrag.evaluation.answer_scoring import (
    QUALITY_METRICS,
    Outcome,
    aggregate_scores,
    gate_check,
    score_example,
)
from rayrag.evaluation.answerers import HttpAnswerer, InProcessAnswerer
from rayrag.evaluation.retrieval_eval import (
    file_digest,
)
from rayrag.tracking.evaluations import EvalRow, log_evaluation
from rayrag.tracking.tracker import Tracker, compose_run_name
from rayrag.types import Principal

TABLE_FILE = "eval_examples.json"
# MLflow scorer name -> the rayrag metric it shows per question in the Evaluations tab (this
# docstring defines them; `confidence` and `refused` are the Guard's). `groundedness` is
# MLflow's name for its own pass/fail judge, which its UI draws as yes/no: ours is renamed.
ROW_SCORERS = {
    "answer_em": "answer_em",
    "answer_f1": "answer_f1",
    "citation_precision": "citation_precision",
    "guard_groundedness": "groundedness",
    "confidence": "confidence",
    "refused": "refused",
    "recall_at_5": "recall_at_5",
    "context_recall": "context_recall",
    "mrr": "mrr",
    "pii_leak_rate": "pii_leak_rate",
}
GATES = ("champion",)
NO_BASELINE = (
    "no evaluation of the champion on this dataset; run `rayrag eval` with "
    "--model models:/{name}@champion first"
)


# ---------------------------------------------------------------- scoring (pure)


# ---------------------------------------------------------------- the two ways to ask


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
        raise ConfigError(
            f"cannot read canaries from {path}: {type(exc).__name__} (--canaries)"
        ) from None
    values = [v for vs in data.values() for v in vs] if isinstance(data, dict) else list(data)
    return [str(v) for v in values if str(v).strip()]


def champion_baseline(tracker: Tracker, config: RAGConfig, dataset_digest: str) -> dict[str, Any]:
    """The champion's last `eval` run on this dataset digest,
    or a ConfigError saying what to run."""
    from rayrag.tracking.model_registry import ModelRegistry

    name = config.tracking.model_name
    champion = ModelRegistry(tracker).version_for_alias("champion")
    if champion is None:
        raise ConfigError(
            f"no champion in the model registry ({name}): "
            "`rayrag registry register CKPT` first (--gate champion)"
        )
    # Matched on the weights digest: a registry download lives in `v<N>/`, so its
    # model_version (`v3@abc...`) names another directory than the registered one.
    run = tracker.last_run(
        "eval",
        {
            "weights_digest": weights_of(champion.model_digest),
            "dataset_digest": dataset_digest,
            "evaluation": "answers",
        },
    )
    if run is None:
        raise ConfigError(NO_BASELINE.format(name=name))
    return {
        **run,
        "champion_version": str(champion.version),
        "champion_model_version": champion.model_digest,
    }


def weights_of(model_version: str) -> str:
    """`model@0123456789ab` -> `0123456789ab` (the weights digest part of a model version)."""
    return model_version.rsplit("@", 1)[-1]


def _per_example_table(
    questions: Sequence[QAPair], rows: Sequence[dict[str, float | None]], keys: Sequence[str]
) -> list[dict[str, Any]]:
    table = []
    for qa, scores in zip(questions, rows, strict=True):
        table.append({"id": qa.id, **{f"slice.{k}": qa.metadata.get(k) for k in keys}, **scores})
    return table


def evaluation_row(
    qa: QAPair, outcome: Outcome, scores: dict[str, float | None], log_text: bool
) -> EvalRow:
    """What MLflow's Evaluations tab shows for one question: ids, slices and what the system
    returned; the question, answer and gold-answer text only with `log_text`."""
    inputs: dict[str, Any] = {"question_id": qa.id}
    if log_text:
        inputs["question"] = qa.question
    inputs.update({f"slice.{k}": v for k, v in sorted(qa.metadata.items())})
    outputs: dict[str, Any] = {
        "cited_doc_ids": list(outcome.cited_doc_ids),
        "context_doc_ids": list(outcome.context_doc_ids),
        "refused": bool(outcome.extra.get("refused", False)),
        "escalated": bool(outcome.extra.get("escalated", False)),
    }
    if log_text:
        outputs = {"answer": outcome.answer, **outputs}
    expectations: dict[str, Any] = {"supporting_ids": list(qa.supporting_ids)}
    if log_text and qa.answers:
        expectations["answers"] = list(qa.answers)
    row_scores = {name: scores.get(metric) for name, metric in ROW_SCORERS.items()}
    return EvalRow(inputs, outputs, expectations, row_scores)


def evaluate_answers(
    dataset: Path,
    config: RAGConfig,
    *,
    bundle: Path | None,
    model: Path | None,
    url: str | None = None,
    api_key: str | None = None,
    principal: Principal,
    canaries: list[str] | None,
    tracker: Tracker | None = None,
    gate: str | None = None,
    limit: int | None = None,
    mode: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    answerer: Any = None,
) -> dict[str, Any]:
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
    needs_model = config.generator.backend == "moe"  # openai: the endpoint generates
    if answerer is None and url is None and (bundle is None or (model is None and needs_model)):
        raise ConfigError(
            "answer evaluation needs --bundle and --model (or --url of a running server)"
        )
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
        answerer = (
            HttpAnswerer(url, api_key, mode)
            if url
            else InProcessAnswerer(bundle, model, config, mode)
        )
    source = "in_process" if isinstance(answerer, InProcessAnswerer) else "http"
    answerer.warm_up()
    scored: list[QAPair] = []
    rows: list[dict[str, float | None]] = []
    mlflow_rows: list[EvalRow] = []
    failed = 0
    for i, qa in enumerate(questions, 1):
        outcome = answerer(qa, principal)
        if outcome is None:
            failed += 1
        else:
            scored.append(qa)
            rows.append(score_example(qa, outcome, canaries))
            mlflow_rows.append(evaluation_row(qa, outcome, rows[-1], config.evaluation.log_text))
        if progress is not None:
            progress(i, len(questions))
    if not rows:
        raise RayRagError(f"no question was answered ({failed} server errors) (--url)")
    model_version = answerer.model_version
    bundle_id = answerer.bundle_id if source == "in_process" else _bundle_id(bundle)
    prompt_version = getattr(answerer, "prompt_version", "") or _prompt_version(tracker)

    overall = aggregate_scores(rows)
    keys = sorted({k for qa in scored for k in qa.metadata})
    frame = pd.DataFrame(
        [
            {**{m: r[m] for m in QUALITY_METRICS}, **{k: qa.metadata.get(k) for k in keys}}
            for qa, r in zip(scored, rows, strict=True)
        ],
        dtype=object,
    )
    report = disaggregate(frame, QUALITY_METRICS, keys, config.evaluation, seed=config.seed)
    result: dict[str, Any] = {
        **overall,
        "slices": slices(report),
        "disaggregation": report,
        "mode": mode,
        "source": source,
        "model_version": model_version,
        "prompt_version": prompt_version,
        "dataset_digest": digest,
        "bundle_id": bundle_id,
        "counts": {
            "questions": len(rows),
            "server_errors": failed,
            "canaries": len(canaries),
            "no_gold_documents": sum(not qa.supporting_ids for qa in scored),
            "no_gold_answers": sum(not qa.answers for qa in scored),
        },
    }
    if baseline is not None:
        passed, regressions = gate_check(
            overall,
            baseline["metrics"],
            config.evaluation.gate_metrics,
            config.evaluation.gate_tolerance,
        )
        result["gate"] = {
            "baseline_run_id": baseline["run_id"],
            "champion_version": baseline["champion_version"],
            "passed": passed,
            "regressions": regressions,
        }

    tags = {
        "model_version": model_version,
        "weights_digest": weights_of(model_version),
        "prompt_version": prompt_version,
        "dataset_digest": digest,
        "bundle_id": bundle_id,
        "mode": mode,
        "source": source,
        "evaluation": "answers",
        "principal": principal.name if source == "in_process" else "api_key",
    }
    name = compose_run_name("eval", config, mode, *_registered_model(tracker, model_version))
    with tracker.start_run("eval", config, tags=tags, run_name=name) as run:
        run.log_dataset(dataset, name=dataset.name, context="eval")
        metrics = {k: v for k, v in overall.items() if v is not None}
        for slice_name, values in result["slices"].items():
            key, value = slice_name.split("=", 1)
            for metric, number in values.items():
                if number is not None:
                    metrics[metric_key(metric, key, value)] = number
        metrics.update(server_errors=float(failed), canaries=float(len(canaries)))
        run.log_metrics(metrics)
        run.log_params(
            {"eval.source": source, "eval.limit": limit or 0, "eval.gate": gate or "none"}
        )
        run.log_table(_per_example_table(scored, rows, keys), TABLE_FILE)
        log_disaggregation(run, report)
        log_evaluation(run, mlflow_rows, list(ROW_SCORERS))
        if "gate" in result:
            run.set_tags(
                {
                    "gate": "passed" if result["gate"]["passed"] else "failed",
                    "gate_baseline_run_id": baseline["run_id"],
                }
            )
        result["run_id"] = run.run_id
    return result


def _registered_model(tracker: Tracker, model_version: str) -> tuple[str, int | None]:
    """(model name, registry version) for the run's name: the registered model holding these
    weights, else the checkpoint's directory name and no version."""
    if tracker.config.enabled and model_version:
        from rayrag.tracking.model_registry import ModelRegistry

        registry = ModelRegistry(tracker)
        info = registry.version_for_weights(model_version)
        if info is not None:
            return registry.name, info.version
    return model_version.rsplit("@", 1)[0], None


def _bundle_id(bundle: Path | None) -> str:
    """The bundle id from its manifest when the caller names the server's bundle; else ""."""
    if bundle is None:
        return ""
    manifest = Path(bundle) / "manifest.json"
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8")).get("bundle_id", ""))
    except (OSError, ValueError):
        return ""
