"""Bench kg at its quick size: the output's shape and sanity (no timing assertions)."""

from __future__ import annotations

import json
import math

from rayrag.bench import kg


def test_kg_bench_quick_reports_every_solver_size_and_ratio():
    result = json.loads(json.dumps(kg.run(quick=True)))  # JSON-able end to end
    assert result["bench"] == "kg" and result["quick"] is True and 0 < result["damping"] < 1
    assert set(result["sizes"]) == {"2k", "10k"}
    for name, size in result["sizes"].items():
        assert (
            set(size["p50_ms"])
            == set(size["cpu_p50_ms"])
            == set(size["first_call_seconds"])
            == set(kg.METHODS)
        )
        assert all(v > 0 for v in size["p50_ms"].values())
        # The synthetic graph is HippoRAG-shaped: about 40% passages, as many edges as it says.
        assert 0.3 < size["passages"] / size["nodes"] < 0.5 and size["edges"] > size["nodes"]
        # sparse and networkx solve the same PageRank: their top 10 agree on (nearly) every query.
        assert size["top10_identical"] >= 0.8, name
        assert 0 <= size["push_top10_identical"] <= 1 and 0.5 <= size["push_top10_overlap"] <= 1
    ratios = result["ratios"]
    assert {
        "sparse_vs_networkx",
        "push_vs_sparse",
        "sparse_vs_networkx_10k",
        "push_vs_sparse_cpu_2k",
        "push_top10_identical_10k",
    } <= set(ratios)
    # the headline is the largest size's
    assert ratios["sparse_vs_networkx"] == ratios["sparse_vs_networkx_10k"]
    speed = {k: v for k, v in ratios.items() if not k.startswith("push_top10")}
    assert all(math.isfinite(v) and v > 0 for v in speed.values())
