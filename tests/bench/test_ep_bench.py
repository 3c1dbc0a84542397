"""Bench ep (quick): real shards on Ray, both transports, numbers equal to the local model."""

from __future__ import annotations

import json
import math

import pytest
import torch


@pytest.mark.slow
def test_ep_bench_quick_reports_ratios_equal_numbers_and_equal_cores(ray_local):
    from rayrag.bench import ep

    threads_before = torch.get_num_threads()
    result = json.loads(json.dumps(ep.run(quick=True)))  # JSON-able end to end
    assert torch.get_num_threads() == threads_before  # restored
    assert result["bench"] == "ep" and result["max_abs_diff"] <= 1e-4 and result["shards"] == 2
    assert result["transports"] == {"compiled": "compiled", "actor": "actor"}
    for key in (
        "compiled_vs_actor_call",
        "compiled_vs_actor_round_trip",
        "ep_vs_local_prefill",
        "ep_vs_local_decode",
    ):
        assert math.isfinite(result["ratios"][key]) and result["ratios"][key] > 0
    for transport in (
        "compiled",
        "actor",
    ):  # the transport's part of a round trip, the shards' arithmetic taken out
        assert (
            0
            < result["dispatch_overhead_us_per_layer"][transport]
            < result["dispatch_us_per_layer"][transport]
        )
    threads = result["torch_threads"]  # as read inside the timed calls and inside each shard
    assert len(threads["ep_shards"]) == 2 and all(t >= 1 for t in threads["ep_shards"])
    assert threads["local"] == sum(threads["ep_shards"])  # each side's experts on as many threads
    assert threads["ep_driver"] == ep.EP_DRIVER_THREADS
