"""`rayrag bench NAME`: competitors side by side in one process; ratios are the figures.

Each bench module exposes `run(quick: bool, **options) -> dict` returning at least
`{"bench": NAME, "ratios": {...}}`; the CLI prints that dict as the last stdout line.
A bench that writes files (plots) writes them under `output_dir(NAME)`: $RAYRAG_BENCH_OUT,
else `.rayrag/bench/`, in a folder named after the bench; never into the repository's
tracked files (docs/ pictures are refreshed only by `rayrag.bench.scale_plot --docs`).
"""

from __future__ import annotations

import importlib
import inspect
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rayrag.errors import ConfigError

BENCHES = {
    "redaction": "rayrag.bench.redaction",
    "ingest": "rayrag.bench.ingest",
    "retrieval": "rayrag.bench.retrieval",
    "kg": "rayrag.bench.kg",
    "moe": "rayrag.bench.moe",
    "softmax": "rayrag.bench.softmax",
    "decode": "rayrag.bench.decode",
    "moe-quality": "rayrag.bench.moe_quality",
    "serve": "rayrag.bench.serve",
    "ep": "rayrag.bench.ep",
    "ep-memory": "rayrag.bench.ep_memory",
    "scale": "rayrag.bench.scale",
    "openai": "rayrag.bench.openai_backend",
    "files": "rayrag.bench.files",
}


OUT_DIR = Path(".rayrag") / "bench"


def run_bench(name: str, quick: bool = False, **options: Any) -> dict[str, Any]:
    """Run bench `name`; `options` (e.g. serve's bundle and model) go to its `run` as keywords,
    those left at None are dropped."""
    if name not in BENCHES:
        raise ConfigError(f"unknown bench {name!r}; choose one of: {', '.join(sorted(BENCHES))}")
    module = importlib.import_module(BENCHES[name])
    given = {key: value for key, value in options.items() if value is not None}
    accepted = set(inspect.signature(module.run).parameters) - {"quick"}
    if unknown := sorted(set(given) - accepted):
        raise ConfigError(
            f"bench {name} takes no option {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(accepted)) or 'none'}"
        )
    return module.run(quick=quick, **given)


def output_dir(bench: str, base: str | Path | None = None) -> Path:
    """Where bench `bench` writes its files: BASE/<bench>, BASE being `base`, else
    $RAYRAG_BENCH_OUT, else .rayrag/bench (ignored by git); created if missing."""
    root = Path(base) if base is not None else Path(os.environ.get("RAYRAG_BENCH_OUT") or OUT_DIR)
    path = root / bench
    path.mkdir(parents=True, exist_ok=True)
    return path


def alternate(competitors: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Run each competitor once per round, alternating order, and return the seconds each took.

    Alternating (A B, B A, ...) spreads the machine's noise evenly over the competitors."""
    seconds: dict[str, list[float]] = {name: [] for name in competitors}
    names = list(competitors)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            competitors[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)
