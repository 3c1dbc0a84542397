"""Routing alarms: collapse, hogging, drops and dead experts from MoE routing statistics."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rayrag.config import RoutingAlarmConfig
from rayrag.generator.moe import MoELayer, routing_stats
from rayrag.generator.routing_health import (
    check_routing,
    expert_load,
    merge_stats,
    shard_imbalance,
    shard_shares,
)


def _stats(counts: list[int], tokens: int, dropped: int = 0) -> dict:
    return routing_stats(torch.tensor(counts), dropped, tokens).to_dict()


def test_balanced_routing_raises_no_alarm():
    balanced = _stats([100, 98, 102, 100], tokens=200)
    report = check_routing([balanced, balanced], RoutingAlarmConfig())
    assert report.ok and report.alarms == []
    assert [f.layer for f in report.layers] == [0, 1] and all(f.judged_load for f in report.layers)


def test_collapsed_routing_fires_collapse_hogging_and_dead_alarms():
    balanced = _stats([50, 50, 50, 50], tokens=100)
    collapsed = _stats([196, 4, 0, 0], tokens=100)
    report = check_routing([balanced, collapsed], RoutingAlarmConfig())
    assert not report.ok
    finding = report.layers[1]
    assert finding.collapsed and finding.hogging and finding.dead_experts == [2, 3]
    assert report.layers[0].ok
    assert all(alarm.startswith("layer 1: ") for alarm in report.alarms)
    assert any("entropy" in a and "collapsed" in a for a in report.alarms)
    assert any("max_violation 2.92" in a for a in report.alarms)


def test_dropping_alarm_reads_the_drop_rate():
    dropping = _stats([60, 40, 50, 50], tokens=100, dropped=40)  # 40 / 200 slots
    report = check_routing([dropping], RoutingAlarmConfig(max_drop_rate=0.1))
    assert report.layers[0].dropping and report.alarms == [
        "layer 0: drop_rate 0.200 > 0.100 (dropping)"
    ]


def test_too_few_tokens_are_not_judged_for_load():
    # 6 tokens over 4 experts: empty experts are chance, not death.
    report = check_routing([_stats([8, 4, 0, 0], tokens=6)], RoutingAlarmConfig())
    assert report.ok and not report.layers[0].judged_load


def test_accepts_routing_stats_from_a_real_layer_and_serialises():
    torch.manual_seed(0)
    layer = MoELayer(16, 32, n_experts=4, top_k=2).eval()
    _, out = layer(torch.randn(1, 64, 16))
    report = check_routing([out.stats], RoutingAlarmConfig())
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["ok"] == report.ok and len(as_dict["layers"]) == 1
    assert as_dict["expert_load"][0] == pytest.approx(out.stats.token_share.tolist(), abs=1e-4)


def test_expert_load_and_merge_stats():
    a, b = _stats([30, 10], tokens=20), _stats([0, 20], tokens=10, dropped=5)
    assert expert_load([a, b]) == [[0.75, 0.25], [0.0, 1.0]]
    merged = merge_stats([a, b])
    assert merged["tokens"] == 30 and merged["dropped"] == 5
    assert merged["token_share"] == pytest.approx([0.5, 0.5])  # (0.75*20 + 0)/30, (0.25*20 + 10)/30
    assert merged["entropy"] == pytest.approx(1.0) and merged["max_violation"] == pytest.approx(0.0)
    assert merged["drop_rate"] == pytest.approx(5 / 60)  # 5 of 30 tokens * 2 slots
    assert math.isclose(sum(merged["token_share"]), 1.0)


def test_shard_shares_and_imbalance_by_hand():
    # two layers, four experts over shards [0, 2) and [2, 4): (0.5 + 0.75) / 2, (0.5 + 0.25) / 2
    shares = shard_shares([[0.4, 0.1, 0.3, 0.2], [0.5, 0.25, 0.125, 0.125]], [(0, 2), (2, 4)])
    assert shares == [0.625, 0.375]
    assert shard_imbalance(shares) == 0.25  # (0.625 - 0.5) / 0.5
    assert shard_imbalance([0.5, 0.5]) == 0.0 and shard_imbalance([1.0, 0.0, 0.0]) == 2.0
    assert shard_shares([[0.0, 0.0]], [(0, 1), (1, 2)]) == [
        0.0,
        0.0,
    ]  # no tokens routed: no division
