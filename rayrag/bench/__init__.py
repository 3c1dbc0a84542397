"""`rayrag bench NAME`: competitors side by side in one process; ratios are the figures.

Each bench module exposes `run(quick: bool) -> dict` returning at least
`{"bench": NAME, "ratios": {...}}`; the CLI prints that dict as the last stdout line.
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable
from typing import Any

from rayrag.errors import ConfigError

BENCHES = {"redaction": "rayrag.bench.redaction", "ingest": "rayrag.bench.ingest",
           "retrieval": "rayrag.bench.retrieval", "kg": "rayrag.bench.kg",
           "moe": "rayrag.bench.moe", "softmax": "rayrag.bench.softmax",
           "decode": "rayrag.bench.decode", "moe-quality": "rayrag.bench.moe_quality",
           "serve": "rayrag.bench.serve", "ep": "rayrag.bench.ep", "scale": "rayrag.bench.scale"}


def run_bench(name: str, quick: bool = False) -> dict[str, Any]:
    if name not in BENCHES:
        raise ConfigError(f"unknown bench {name!r}; choose one of: {', '.join(sorted(BENCHES))}")
    module = importlib.import_module(BENCHES[name])
    return module.run(quick=quick)


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
