"""Reporting for a Tune sweep: which knob moved the objective, the best trials, two plots.

Pure Python over plain `TrialRecord`s (no Ray, no MLflow), so the sweep driver turns Tune's
results into records once and everything here is tested directly.

The sensitivity analysis is the one-factor marginal view: for each knob, the mean objective
of the completed trials at each of its values, and the spread (`range`) between the best and
worst of those means. It is the view of Optuna's slice plot (objective against one
parameter at a time) reduced to per-value means; unlike Optuna's fANOVA importance it fits no
model of the objective, and it ignores interactions: a knob that only matters together with
another one can show a small range. With a full grid every value of one knob sees the same
mix of the others, so the marginal means are comparable; with random or early-stopped sweeps
they are only a first look.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_METRICS = ("objective", "context_recall", "recall_at_5", "answer_f1", "p50_ms", "val_loss")


@dataclass
class TrialRecord:
    """One trial of a sweep, as the driver read it back from Tune.

    >>> r = TrialRecord("t1", {"top_k": 4}, "completed", {"objective": 0.5})
    >>> r.objective
    0.5
    """

    trial_id: str
    params: dict[str, Any]  # knob name -> value the trial ran with
    status: str  # "completed" (reported an objective), "stopped" (ASHA early stop), "error"
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # one line, for "error" trials
    iterations: int = 0

    @property
    def objective(self) -> float | None:
        if self.status != "completed":
            return None
        value = self.metrics.get("objective")
        return None if value is None else float(value)


def _scored(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Completed trials with a finite objective: the only ones the analysis averages."""
    return [r for r in records if r.objective is not None and math.isfinite(r.objective)]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _sorted_values(values: Sequence[Any]) -> list[Any]:
    """Knob values in natural order; mixed types fall back to (type, text) order."""
    unique = list(dict.fromkeys(values))
    try:
        return sorted(unique)
    except TypeError:
        return sorted(unique, key=lambda v: (type(v).__name__, str(v)))


def _marginal(
    records: Sequence[TrialRecord], knob: str, metric: str | None = None
) -> dict[Any, list[float]]:
    """value -> objectives of the scored trials that ran with it (records lacking the knob
    skipped); with `metric`, that metric of every trial that reported it, stopped ones included."""
    by_value: dict[Any, list[float]] = {}
    if metric is None:
        pairs = [(record, record.objective) for record in _scored(records)]
    else:
        pairs = [
            (record, record.metrics[metric])
            for record in records
            if record.status != "error"
            and _is_number(record.metrics.get(metric))
            and math.isfinite(record.metrics[metric])
        ]
    for record, value in pairs:
        if knob in record.params:
            by_value.setdefault(record.params[knob], []).append(float(value))
    return {value: by_value[value] for value in _sorted_values(list(by_value))}


def sensitivity(
    records: Sequence[TrialRecord],
    knobs: Sequence[str],
    metric: str | None = None,
    lower_is_better: bool = False,
) -> list[dict[str, Any]]:
    """Per knob, how much the objective moves with it; most influential knob first.

    Over completed trials only (stopped and errored ones have no objective), for each knob:

    - `means`: value -> mean objective of the trials run with that value (marginal mean,
      averaging over whatever the other knobs were);
    - `counts`: value -> number of those trials; `values_seen`: how many values have any;
    - `range`: max(means) - min(means), 0.0 with fewer than 2 values seen;
    - `best_value`: the value with the highest mean (None when none completed);
    - `spearman`: Spearman rank correlation of knob value vs objective over the trials, when
      every value is numeric and there are >= 3 trials and >= 2 distinct values, else None
      (also None when the objective is constant, where the correlation is undefined).

    Rows are sorted by `range`, descending. One factor at a time: interactions are ignored.
    With `metric` (e.g. the first rung's validation loss, which every trial reports before
    ASHA can stop it) the same analysis runs on that metric over all non-failed trials;
    `lower_is_better` makes `best_value` the value with the lowest mean.
    """
    rows = []
    for knob in knobs:
        by_value = _marginal(records, knob, metric)
        means = {value: float(np.mean(objectives)) for value, objectives in by_value.items()}
        counts = {value: len(objectives) for value, objectives in by_value.items()}
        spread = max(means.values()) - min(means.values()) if len(means) >= 2 else 0.0
        pick = min if lower_is_better else max
        best_value = pick(means, key=means.__getitem__) if means else None
        rows.append(
            {
                "knob": knob,
                "means": means,
                "counts": counts,
                "values_seen": len(means),
                "range": float(spread),
                "best_value": best_value,
                "spearman": _spearman(by_value),
            }
        )
    return sorted(rows, key=lambda row: row["range"], reverse=True)


def _spearman(by_value: dict[Any, list[float]]) -> float | None:
    pairs = [(value, obj) for value, objectives in by_value.items() for obj in objectives]
    if len(pairs) < 3 or len(by_value) < 2 or not all(_is_number(v) for v in by_value):
        return None
    knob_values, objectives = zip(*pairs, strict=True)
    if len(set(objectives)) < 2:
        return None
    rho = stats.spearmanr(np.asarray(knob_values, float), np.asarray(objectives, float)).statistic
    return None if not math.isfinite(rho) else float(rho)


def _fmt(value: Any, metric: str = "") -> str:
    """Compact cell text: ints as-is, latencies (`*_ms`) as whole ms, floats to 3 significant."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if not _is_number(value):
        return str(value)
    if metric.endswith("_ms"):
        return str(round(value))
    if isinstance(value, numbers.Integral):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_sensitivity(rows: list[dict[str, Any]], measure: str = "objective") -> str:
    """`sensitivity()` rows as a fixed-width table: knob, range, best value, spearman, means."""
    if not rows:
        return "no knobs"
    body = []
    for row in rows:
        means = ", ".join(
            f"{value}: {_fmt(mean)} (n={row['counts'][value]})"
            for value, mean in row["means"].items()
        )
        body.append(
            [
                row["knob"],
                _fmt(row["range"]),
                _fmt(row["best_value"]),
                _fmt(row["spearman"]),
                means or "no completed trials",
            ]
        )
    return _table(["knob", "range", "best", "spearman", f"mean {measure} per value"], body)


def format_top_trials(
    records: Sequence[TrialRecord],
    knobs: Sequence[str],
    n: int = 5,
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> str:
    """The `n` best completed trials by objective, then a line on the stopped and failed ones."""
    ranked = sorted(_scored(records), key=lambda r: r.objective, reverse=True)[:n]
    header = ["rank", "trial", *knobs, *metrics]
    body = [
        [
            str(rank),
            record.trial_id,
            *(_fmt(record.params.get(knob)) for knob in knobs),
            *(_fmt(record.metrics.get(metric), metric) for metric in metrics),
        ]
        for rank, record in enumerate(ranked, start=1)
    ]
    table = _table(header, body) if body else "no completed trials"
    return table + "\n" + _summary(records)


def _summary(records: Sequence[TrialRecord]) -> str:
    completed = sum(r.status == "completed" for r in records)
    stopped = sum(r.status == "stopped" for r in records)
    errored = [r for r in records if r.status == "error"]
    line = (
        f"{len(records)} trials: {completed} completed, {stopped} stopped early, "
        f"{len(errored)} errored"
    )
    unscored = completed - len(_scored(records))
    if unscored:
        line += f" ({unscored} completed without a finite objective)"
    if errored:
        shown = [f"{r.trial_id}: {_shorten(r.error or 'no message')}" for r in errored[:3]]
        more = f"; ... {len(errored) - 3} more" if len(errored) > 3 else ""
        line += "\n  errors: " + "; ".join(shown) + more
    return line


def _shorten(text: str, limit: int = 100) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def sensitivity_table(
    rows: list[dict[str, Any]], measure: str = "objective"
) -> list[dict[str, Any]]:
    """`sensitivity()` flattened to one row per (knob, value), for an MLflow JSON table."""
    return [
        {
            "knob": row["knob"],
            "value": value,
            f"mean_{measure}": mean,
            "trials": row["counts"][value],
            "range": row["range"],
        }
        for row in rows
        for value, mean in row["means"].items()
    ]


def _empty_figure(title: str, figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, "no completed trials", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def plot_objective_grid(
    records: Sequence[TrialRecord], row_knob: str = "chunk_size", col_knob: str = "top_k"
) -> Figure:
    """Heatmap of the mean objective per (row value, column value); blank grey where no trial ran.

    Each cell reads "mean\\nn=count". A standalone `Figure` (no pyplot state), so call
    `fig.savefig(path)` and drop it.
    """
    import matplotlib
    from matplotlib.figure import Figure

    title = f"mean objective by {row_knob} x {col_knob}"
    cells: dict[tuple[Any, Any], list[float]] = {}
    for record in _scored(records):
        if row_knob in record.params and col_knob in record.params:
            key = (record.params[row_knob], record.params[col_knob])
            cells.setdefault(key, []).append(record.objective)
    if not cells:
        return _empty_figure(title, (6, 4.5))

    row_values = _sorted_values([row for row, _ in cells])
    col_values = _sorted_values([col for _, col in cells])
    means = np.full((len(row_values), len(col_values)), np.nan)  # (rows, cols)
    for (row, col), objectives in cells.items():
        means[row_values.index(row), col_values.index(col)] = np.mean(objectives)

    fig = Figure(figsize=(1.2 * len(col_values) + 3, 0.9 * len(row_values) + 2.5))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(means), cmap=cmap, aspect="auto")
    finite = means[np.isfinite(means)]
    midpoint = (finite.min() + finite.max()) / 2
    for i, row in enumerate(row_values):
        for j, col in enumerate(col_values):
            count = len(cells.get((row, col), []))
            text = "-" if count == 0 else f"{_fmt(float(means[i, j]))}\nn={count}"
            dark_cell = count > 0 and means[i, j] < midpoint
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=9,
                color="white" if dark_cell else "black",
            )
    ax.set_xticks(range(len(col_values)), [str(v) for v in col_values])
    ax.set_yticks(range(len(row_values)), [str(v) for v in row_values])
    ax.set_xlabel(col_knob)
    ax.set_ylabel(row_knob)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="mean objective")
    fig.tight_layout()
    return fig


def plot_objective_by(records: Sequence[TrialRecord], knob: str = "lora_rank") -> Figure:
    """Bars of the mean objective per value of `knob`, each completed trial a dot over its bar."""
    from matplotlib.figure import Figure

    title = f"objective by {knob}"
    by_value = _marginal(records, knob)
    if not by_value:
        return _empty_figure(title, (6, 4))

    fig = Figure(figsize=(max(4.0, 1.1 * len(by_value) + 2), 4))
    ax = fig.add_subplot()
    positions = np.arange(len(by_value))
    ax.bar(
        positions,
        [np.mean(objs) for objs in by_value.values()],
        width=0.6,
        alpha=0.6,
        color="tab:blue",
        label="mean",
    )
    for position, objectives in zip(positions, by_value.values(), strict=True):
        # Spread the dots deterministically across the bar so equal objectives stay visible.
        offsets = np.linspace(-0.2, 0.2, len(objectives)) if len(objectives) > 1 else [0.0]
        ax.scatter(
            position + np.asarray(offsets),
            objectives,
            color="black",
            s=14,
            zorder=3,
            label="trial" if position == 0 else None,
        )
    ax.set_xticks(positions, [f"{value}\nn={len(objs)}" for value, objs in by_value.items()])
    ax.set_xlabel(knob)
    ax.set_ylabel("objective")
    ax.set_title(title)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig
