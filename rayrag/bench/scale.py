"""Bench `scale`: how cost grows with size, five curves measured on this machine.

`rayrag bench scale [--quick] --json` (docs/SCALING.md reads the figures):

    ingest   seconds vs corpus tokens             (bench/scale_ingest.py)
    search   batch-1 ms p50 vs index vectors      (bench/scale_search.py: flat, ivf, hnsw, ivf_acl)
    ppr      ms p50 per query vs graph nodes      (bench/scale_ppr.py: sparse, push, networkx)
    serve    requests/s vs Serve replicas          (bench/scale_serve.py)
    moe      layer ms vs #experts, fixed active   (bench/scale_moe.py: train_step, forward)

Each curve module has `curve(quick: bool = False, **sizes) -> dict`:

    {"name": ..., "x": "<what x counts>", "y": "<what y measures>",
     "series": {"<series>": [[x, y], ...]},   # numbers only, x ascending
     "per_unit": {"<name>": float},           # constants to project with, from the largest size
     "meta": {...}}                           # sizes, dims, threads: enough to reproduce

`run` adds `slopes` (least-squares slope of log y on log x per series: 1 = linear, 0.5 =
square root, 0 = flat) and `ratios`, the figures that count:
`moe_time_e64_vs_e8_fixed_active` (goal <= 1.5), `serve_throughput_2_vs_1_replicas`,
`search_p50_<largest>_vs_<smallest>_<series>`, `ppr_p50_largest_vs_smallest`,
`ingest_time_largest_vs_smallest` over `ingest_size_largest_vs_smallest` (`ingest_linearity`,
1 = linear). Progress goes to stderr, one line per point.

Files: every run writes one log-log PNG per curve (bench/scale_plot.py) and the result as
`scale.json` to `output_dir("scale")` (.rayrag/bench/scale/, or under $RAYRAG_BENCH_OUT or
`out_dir`); `result["plots"]` and `result["result_file"]` give the paths. The pictures
docs/SCALING.md embeds (docs/scaling_<curve>.png) change only on request: `run(docs=True)` on
a full run, or `python -m rayrag.bench.scale_plot .rayrag/bench/scale/scale.json --docs` from
the repository root (bench/scale_plot.py `refresh_docs`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from rayrag.atomic import atomic_text
from rayrag.bench import output_dir, scale_ingest, scale_moe, scale_ppr, scale_search, scale_serve
from rayrag.bench.scale_plot import RESULT_FILE, docs_folder, refresh_docs, write_plots
from rayrag.errors import ConfigError

CURVES = {
    "ingest": scale_ingest,
    "search": scale_search,
    "ppr": scale_ppr,
    "serve": scale_serve,
    "moe": scale_moe,
}


def loglog_slope(points: list[list[float]]) -> float | None:
    """Least-squares slope of log(y) on log(x): the exponent b of y ~ a * x^b.

    None when fewer than two distinct positive x values (no slope to fit)."""
    pairs = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len({lx for lx, _ in pairs}) < 2:
        return None
    mean_x = sum(lx for lx, _ in pairs) / len(pairs)
    mean_y = sum(ly for _, ly in pairs) / len(pairs)
    sxx = sum((lx - mean_x) ** 2 for lx, _ in pairs)
    sxy = sum((lx - mean_x) * (ly - mean_y) for lx, ly in pairs)
    return sxy / sxx


def _at(points: list[list[float]], x: float) -> float | None:
    return next((y for px, y in points if px == x), None)


def _label(n: float) -> str:
    n = int(n)
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def ratios(curves: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The headline ratios from whichever curves are present (None where a point is missing)."""
    out: dict[str, float | None] = {}
    if "moe" in curves:
        moe = curves["moe"]
        for kind, suffix in (("train_step", ""), ("forward", "_forward")):
            points = moe["series"].get(kind, [])
            e8, e64 = _at(points, 8), _at(points, 64)
            out[f"moe_time_e64_vs_e8_fixed_active{suffix}"] = _round(
                e64 / e8 if e8 and e64 else None
            )
        cpu = moe["meta"].get("cpu_ms", {})
        if cpu.get("train_step/8") and cpu.get("train_step/64"):
            out["moe_time_e64_vs_e8_fixed_active_cpu"] = _round(
                cpu["train_step/64"] / cpu["train_step/8"]
            )
    if "serve" in curves:
        series = curves["serve"]["series"]
        points = series.get("requests_per_s") or next(iter(series.values()), [])
        one, two = _at(points, 1), _at(points, 2)
        out["serve_throughput_2_vs_1_replicas"] = _round(two / one if one and two else None)
    if "search" in curves:
        for name, points in curves["search"]["series"].items():
            (x0, y0), (x1, y1) = points[0], points[-1]
            if x1 > x0:
                out[f"search_p50_{_label(x1)}_vs_{_label(x0)}_{name}"] = _round(y1 / y0)
    if "ppr" in curves:
        series = curves["ppr"]["series"]
        for name, points in series.items():
            suffix = "" if name == "sparse" else f"_{name}"
            out[f"ppr_p50_largest_vs_smallest{suffix}"] = _round(points[-1][1] / points[0][1])
        sparse = series.get("sparse") or next(iter(series.values()))
        out["ppr_nodes_largest_vs_smallest"] = _round(sparse[-1][0] / sparse[0][0])
        if "push" in series and "sparse" in series:  # > 1: push is faster on the largest graph
            out["ppr_push_vs_sparse_at_largest"] = _round(sparse[-1][1] / series["push"][-1][1])
    if "ingest" in curves:
        series = curves["ingest"]["series"]
        points = series.get("pipeline") or next(iter(series.values()))
        time_ratio = points[-1][1] / points[0][1]
        size_ratio = points[-1][0] / points[0][0]
        out["ingest_time_largest_vs_smallest"] = _round(time_ratio)
        out["ingest_size_largest_vs_smallest"] = _round(size_ratio)
        out["ingest_linearity"] = _round(time_ratio / size_ratio)  # 1 = linear in tokens
    return out


def summarise(curves: dict[str, dict[str, Any]], quick: bool) -> dict[str, Any]:
    """The bench's result from measured curves: slopes, ratios, per-unit costs."""
    return {
        "bench": "scale",
        "quick": quick,
        "curves": curves,
        "slopes": {
            name: {series: _round(loglog_slope(points)) for series, points in c["series"].items()}
            for name, c in curves.items()
        },
        "ratios": ratios(curves),
        "per_unit": {name: c.get("per_unit", {}) for name, c in curves.items()},
    }


def run(
    quick: bool = False, out_dir: str | Path | None = None, docs: bool = False
) -> dict[str, Any]:
    """Measure the curves; plots and scale.json to `output_dir("scale", out_dir)`; with `docs`
    (full runs only) also the docs/ pictures."""
    if docs and quick:  # checked first: a quick run's curves must not become the docs' figures
        raise ConfigError("bench scale --docs needs a full run (drop --quick)")
    docs_dir = docs_folder() if docs else None  # checked before the curves, not after 10 minutes
    started = time.perf_counter()
    curves: dict[str, dict[str, Any]] = {}
    for name, module in CURVES.items():
        print(
            f"[bench scale {time.perf_counter() - started:7.1f}s] curve {name}",
            file=sys.stderr,
            flush=True,
        )
        curves[name] = module.curve(quick=quick)
    result = summarise(curves, quick)
    folder = output_dir("scale", out_dir)
    result["plots"] = [str(p) for p in write_plots(result, folder)]
    if docs_dir is not None:
        result["docs_plots"] = [str(p) for p in refresh_docs(result, docs_dir)]
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["result_file"] = str(folder / RESULT_FILE)
    with atomic_text(folder / RESULT_FILE) as handle:
        handle.write(json.dumps(result))
    return result
