"""Bench ep-memory (quick): peak memory of each expert-parallel process, each measured fresh."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_ep_memory_bench_quick_reports_every_process():
    from rayrag.bench import BENCHES, ep_memory

    assert BENCHES["ep-memory"] == "rayrag.bench.ep_memory"
    result = json.loads(json.dumps(ep_memory.run(quick=True)))  # JSON-able end to end
    peaks = result["peak_rss_bytes"]
    assert result["bench"] == "ep-memory" and result["shards"] == 2
    assert result["checkpoint_bytes"] > 2 * result["parameters"] * 0.9  # bfloat16 on disk
    assert len(peaks["ep_shards"]) == 2 and peaks["actor_floor"] > 0
    # Every measured process at least at its floor; loading the whole model costs something.
    assert peaks["load_checkpoint"] >= peaks["bare"] and peaks["load_experts"] >= peaks["bare"]
    assert peaks["ep_driver"] >= peaks["bare"]
    assert set(result["over_checkpoint"]) == {
        "load_checkpoint",
        "load_experts",
        "ep_driver",
        "ep_shards",
    }
