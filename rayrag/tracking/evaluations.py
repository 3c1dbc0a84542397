"""Per-question rows in MLflow's Evaluations tab, through `mlflow.genai.evaluate`.

`rayrag eval` answers every question itself (the answering path and its timings are the
ones it always had) and then hands MLflow the finished rows: `inputs` (the question id, the
question's slices, the question text when `evaluation.log_text`), `outputs` (what the system
returned: cited and context document ids, refusal, escalation, the answer text when
allowed) and `expectations` (gold document ids, gold answers when allowed). Each rayrag metric
becomes one code scorer that returns the score `answer_scoring.score_example` gave that row,
so the tab and the run's aggregate metrics agree by construction. No predict function and no
LLM judge: nothing is called or downloaded, and a SQLite store is enough (MLflow records one
trace per row in the eval experiment, linked to the run).

    >>> rows = [EvalRow({"question_id": "q1"}, {"cited_doc_ids": ["d1"]}, {}, {"answer_em": 1.0})]
    >>> with tracker.start_run("eval", cfg) as run:
    ...     log_evaluation(run, rows, ["answer_em"])
    {'answer_em/mean': 1.0}
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rayrag.errors import ConfigError
from rayrag.tracking.tracker import RunHandle

ROW_ID = "question_id"
WORKERS_ENV = "MLFLOW_GENAI_EVAL_MAX_WORKERS"


@contextlib.contextmanager
def _one_worker() -> Iterator[None]:
    """MLflow's row workers, one unless the environment says otherwise; put back afterwards.
    Parallel rows only pay off for LLM judges; code scorers are instant, and MLflow's threads
    writing traces and assessments into one SQLite store at once mostly wait on its lock."""
    saved = os.environ.get(WORKERS_ENV)
    if saved is None:
        os.environ[WORKERS_ENV] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(WORKERS_ENV, None)


@dataclass(frozen=True)
class EvalRow:
    """One evaluated question: what MLflow shows for it and the scores its scorers return."""

    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    expectations: Mapping[str, Any]
    scores: Mapping[str, float | None] = field(default_factory=dict)


def _scorer(metric: str, scores_by_id: Mapping[str, Mapping[str, float | None]]) -> Any:
    """A code scorer named `metric`: the row's score, looked up by its question id (None, an
    undefined score, is left out of MLflow's mean as rayrag leaves it out of its own)."""
    from mlflow.genai.scorers import scorer

    @scorer(name=metric)
    def score(inputs: dict[str, Any]) -> float | None:
        value = scores_by_id[str(inputs[ROW_ID])].get(metric)
        return None if value is None else float(value)

    return score


def log_evaluation(
    run: RunHandle, rows: Sequence[EvalRow], metrics: Sequence[str]
) -> dict[str, float]:
    """Log `rows` into `run` through `mlflow.genai.evaluate`, one scorer per metric; MLflow's
    aggregates (`<metric>/mean`) come back. Nothing happens with tracking off."""
    if run._mlflow is None or not rows:
        return {}
    scores_by_id: dict[str, Mapping[str, float | None]] = {}
    for row in rows:
        row_id = str(row.inputs.get(ROW_ID, ""))
        if not row_id or row_id in scores_by_id:
            raise ConfigError(f"evaluation rows need distinct {ROW_ID} inputs, got {row_id!r}")
        scores_by_id[row_id] = row.scores
    data = [
        {"inputs": dict(r.inputs), "outputs": dict(r.outputs), "expectations": dict(r.expectations)}
        for r in rows
    ]
    scorers = [_scorer(metric, scores_by_id) for metric in metrics]
    # MLflow prints a summary to stdout; a CLI's stdout ends in one JSON line.
    with contextlib.redirect_stdout(sys.stderr), _one_worker():
        result = run._mlflow.genai.evaluate(data=data, scorers=scorers)
    return {key: float(value) for key, value in result.metrics.items() if value is not None}


__all__ = ["EvalRow", "log_evaluation"]
