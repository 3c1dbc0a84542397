"""Disaggregated evaluation: every metric per value of every metadata key, with bootstrap CIs.

One Fairlearn `MetricFrame` (Weerts et al. 2023) per metadata key scores all metrics by group
value (`hops=2`, `doc_type=press_release`, ...). Confidence intervals are percentile
bootstraps of each group's mean, resampled within the group with numpy, seeded from
`config.seed`: MetricFrame's own `n_boot` rebuilds a whole frame per resample (minutes for the
demo's resamples; measured: docs/DECISIONS.md), this takes milliseconds. Each group is compared with
the overall value; a group whose metric differs from the overall by more than
`evaluation.gap_threshold`, and that holds at least `evaluation.min_slice_size` scored examples, is
flagged (smaller slices are reported, never flagged: their gaps are mostly noise). The worst group
is the lowest, or the highest for a lower-is-better metric (`pii_leak_rate`). Per-example scores may
be undefined (None/NaN, e.g. recall without gold documents): they are left out of means and counts.

The result is plain JSON; `log_disaggregation` writes its flags as MLflow tags
(`gap_flag/<metric>/<key>` = the worst group) and one bar chart per metric through the
tracking door. Only group values, counts and numbers are involved, never text.

    >>> frame = pd.DataFrame({"answer_f1": [1, 0, 1, 1], "hops": [1, 1, 2, 2]})
    >>> report = disaggregate(frame, ["answer_f1"], ["hops"], cfg.evaluation, seed=0)
    >>> report["by_key"]["hops"]["answer_f1"]["worst"]
    '1'
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from rayrag.config import EvalConfig

LOWER_IS_BETTER = frozenset({"pii_leak_rate"})
MISSING = "(missing)"  # the group of examples whose metadata lacks the key
_UNSAFE = re.compile(r"[^0-9A-Za-z_.\- ]+")


def metric_key(*parts: Any) -> str:
    """An MLflow metric or tag name from parts joined by `/`, each part reduced to the
    characters MLflow accepts on every platform (alphanumerics, `_ - . space`; `/` is the
    separator, `:` is refused on Windows) and never `.`/`..`/empty, which MLflow rejects as
    path-like: `("answer_f1", "doc type", "a=b/c")` -> `answer_f1/doc type/a_b_c`."""
    clean = []
    for part in parts:
        text = _UNSAFE.sub("_", str(part)).strip()
        if not text.strip("."):
            text = f"_{text}"
        clean.append(text)
    return "/".join(clean)


def group_label(value: Any) -> str:
    """A metadata value as a group name: None/NaN -> `(missing)`, 2.0 -> `2` (pandas turns an
    int column with a gap into floats)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _mean_of(y_true: Any, y_pred: Any, values: Any) -> float:
    """A MetricFrame metric: the mean of the defined per-example values (y_true/y_pred unused)."""
    array = np.asarray(values, dtype=float)
    defined = array[~np.isnan(array)]
    return float(defined.mean()) if defined.size else math.nan


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def bootstrap_ci(
    values: np.ndarray, samples: int, level: float, rng: np.random.Generator
) -> list[float | None]:
    """Percentile bootstrap interval of the mean of the defined `values` (resampled within the
    group, `samples` times, vectorised); [None, None] when none is defined."""
    defined = values[~np.isnan(values)]
    if not defined.size:
        return [None, None]
    # (samples,)
    means = defined[rng.integers(0, defined.size, size=(samples, defined.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return [_number(low), _number(high)]


def disaggregate(
    frame: pd.DataFrame,
    metrics: Sequence[str],
    keys: Sequence[str],
    config: EvalConfig,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-group metrics, CIs, differences, worst groups and gap flags, JSON-able.

    `frame` has one row per example: a column per metric (numbers, None/NaN = undefined) and a
    column per metadata key. Returns {"overall": {metric: value}, "by_key": {key: {metric:
    {"overall", "worst", "groups": [{"value", "n", "metric", "ci", "difference", "flagged"}]}}},
    "flags": [{"metric", "key", "group", "n", "metric_value", "overall", "difference"}],
    "ci_level", "bootstrap_samples", "gap_threshold", "min_slice_size"}.
    """
    from fairlearn.metrics import MetricFrame

    metrics = [m for m in metrics if m in frame.columns]
    values = {m: pd.to_numeric(frame[m], errors="coerce").astype(float).to_numpy() for m in metrics}
    overall = {m: _number(_mean_of(None, None, values[m])) for m in metrics}
    boot = config.bootstrap_samples > 0 and len(frame) > 1
    report: dict[str, Any] = {
        "overall": overall,
        "by_key": {},
        "flags": [],
        "ci_level": config.ci_level,
        "bootstrap_samples": config.bootstrap_samples if boot else 0,
        "gap_threshold": config.gap_threshold,
        "min_slice_size": config.min_slice_size,
    }
    if not metrics or frame.empty:
        return report
    zeros = np.zeros(len(frame))
    rng = np.random.default_rng(seed)
    for key in keys:
        groups = frame[key].map(group_label).rename(key)
        mf = MetricFrame(
            metrics={m: _mean_of for m in metrics},
            y_true=zeros,
            y_pred=zeros,
            sensitive_features=groups,
            sample_params={m: {"values": values[m]} for m in metrics},
        )
        members = {value: np.flatnonzero(groups.to_numpy() == value) for value in mf.by_group.index}
        by_metric: dict[str, Any] = {}
        for m in metrics:
            defined = (
                pd.Series(~np.isnan(values[m]), index=frame.index).groupby(groups.to_numpy()).sum()
            )
            rows = []
            for value in mf.by_group.index:
                group_value, n = _number(mf.by_group.loc[value, m]), int(defined.get(value, 0))
                difference = (
                    None
                    if group_value is None or overall[m] is None
                    else round(group_value - overall[m], 6)
                )
                ci = (
                    bootstrap_ci(
                        values[m][members[value]], config.bootstrap_samples, config.ci_level, rng
                    )
                    if boot
                    else None
                )
                flagged = (
                    difference is not None
                    and abs(difference) > config.gap_threshold
                    and n >= config.min_slice_size
                )
                rows.append(
                    {
                        "value": str(value),
                        "n": n,
                        "metric": group_value,
                        "ci": ci,
                        "difference": difference,
                        "flagged": flagged,
                    }
                )
            scored = [r for r in rows if r["metric"] is not None]
            pick = max if m in LOWER_IS_BETTER else min
            worst = pick(scored, key=lambda r: r["metric"])["value"] if scored else None
            by_metric[m] = {"overall": overall[m], "worst": worst, "groups": rows}
            for row in rows:
                if row["flagged"]:
                    report["flags"].append(
                        {
                            "metric": m,
                            "key": key,
                            "group": row["value"],
                            "n": row["n"],
                            "metric_value": row["metric"],
                            "overall": overall[m],
                            "difference": row["difference"],
                        }
                    )
        report["by_key"][key] = by_metric
    return report


def slices(report: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """The flat view evaluate.py reports: {"key=value": {metric: value, ..., "n": examples}}."""
    flat: dict[str, dict[str, float | None]] = {}
    for key, by_metric in report["by_key"].items():
        for metric, entry in by_metric.items():
            for row in entry["groups"]:
                cell = flat.setdefault(f"{key}={row['value']}", {})
                cell[metric] = row["metric"]
                cell["n"] = float(max(cell.get("n") or 0, row["n"]))
    return dict(sorted(flat.items()))


def gap_tags(report: dict[str, Any]) -> dict[str, str]:
    """`gap_flag/<metric>/<key>` -> the key's worst group, for every (metric, key) with a flag."""
    flagged = {(f["metric"], f["key"]) for f in report["flags"]}
    return {
        metric_key("gap_flag", m, k): str(report["by_key"][k][m]["worst"])
        for m, k in sorted(flagged)
    }


def plot_metric(report: dict[str, Any], metric: str) -> Any:
    """A bar per group of every key (CI error bars; flagged bars hatched), the overall as a line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    labels, heights, errors, flagged = [], [], [[], []], []
    for key, by_metric in report["by_key"].items():
        for row in by_metric.get(metric, {}).get("groups", []):
            height = row["metric"] if row["metric"] is not None else 0.0
            labels.append(f"{key}={row['value']} (n={row['n']})")
            heights.append(height)
            lo, hi = row["ci"] or [height, height]
            errors[0].append(max(height - (lo if lo is not None else height), 0.0))
            errors[1].append(max((hi if hi is not None else height) - height, 0.0))
            flagged.append(row["flagged"])
    fig = Figure(figsize=(max(6.0, 0.3 * len(labels) + 2), 4.5), dpi=80)
    ax = fig.add_subplot()
    positions = np.arange(len(labels))
    bars = ax.bar(positions, heights, yerr=errors, capsize=3, color="#4c78a8")
    for bar, is_flagged in zip(bars, flagged, strict=True):
        if is_flagged:
            bar.set_color("#e45756")
            bar.set_hatch("//")
    overall = report["overall"].get(metric)
    if overall is not None:
        ax.axhline(
            overall, color="black", linestyle="--", linewidth=1, label=f"overall {overall:.3f}"
        )
        ax.legend(loc="best")
    ax.set_xticks(positions, labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ci = f", {round(report['ci_level'] * 100)}% bootstrap CI" if report["bootstrap_samples"] else ""
    ax.set_title(f"{metric} by slice{ci}")
    fig.subplots_adjust(bottom=0.4)  # room for the rotated group labels (tight_layout is slow)
    return fig


def log_disaggregation(
    run: Any, report: dict[str, Any], artifact_dir: str = "disaggregation"
) -> None:
    """Gap flags as tags, the report as JSON, one PNG per metric (through `RunHandle`)."""
    if run.run_id is None:  # tracking is off: nothing to draw for
        return
    tags = gap_tags(report)
    if tags:
        run.set_tags(tags)
    run.log_dict(report, f"{artifact_dir}/report.json")
    for metric in report["overall"]:
        run.log_figure(plot_metric(report, metric), f"{artifact_dir}/{metric_key(metric)}.png")
