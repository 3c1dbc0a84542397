"""Bench ep (quick): real shards on Ray, both transports, numbers equal to the local model."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_ep_bench_quick_reports_ratios_and_equal_numbers(ray_local):
    from rayrag.bench import ep

    result = json.loads(json.dumps(ep.run(quick=True)))  # JSON-able end to end
    assert result["bench"] == "ep" and result["max_abs_diff"] <= 1e-4 and result["shards"] == 2
    assert result["transports"] == {"compiled": "compiled", "actor": "actor"}
    for key in ("compiled_vs_actor_call", "compiled_vs_actor_round_trip", "ep_vs_local_prefill", "ep_vs_local_decode"):
        assert result["ratios"][key] > 0
    for transport in ("compiled", "actor"):  # the transport's part of a round trip, the shards' arithmetic taken out
        assert 0 < result["dispatch_overhead_us_per_layer"][transport] < result["dispatch_us_per_layer"][transport]
