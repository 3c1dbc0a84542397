"""MoE routing health: turns per-layer routing statistics into collapse alarms.

A mixture of experts fails quietly: the router can send most tokens to one or two experts
(collapse; Shazeer et al. 2017, Fedus et al. 2021 "Switch Transformer"), leave experts that
never learn (dead), or overflow expert capacity so tokens skip the FFN (drops). The model
still answers, only worse. This module reads the `RoutingStats` every MoE layer returns
(`rayrag.generator.moe`), or their `to_dict()` form from logs and the API, and checks each
layer against `RoutingAlarmConfig` (`governance.routing`):

    collapsed   entropy of the expert shares / log(E) below `min_entropy`
    hogging     (max load - mean load) / mean load above `max_violation`
    dropping    dropped token-slots / all token-slots above `max_drop_rate`
    dead        an expert's share of token-slots below `min_share`

Load figures from a handful of tokens are noise (40 slots over 8 experts leave some empty by
chance), so the load checks (collapsed, hogging, dead) run only where a layer routed at least
`min_tokens_per_expert` tokens per expert; drops are always judged. Merge several forwards with
`merge_stats` to judge a window of traffic. Alarms carry layer indices, metric names and
numbers only, never text.

    >>> report = check_routing(model_output.routing, config.governance.routing)
    >>> report.ok, report.alarms      # False, ['layer 2: entropy 0.12 < 0.50 (collapsed)']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rayrag.config import RoutingAlarmConfig

MIN_TOKENS_PER_EXPERT = 8  # below this, a forward says little about an expert's load


@dataclass(frozen=True)
class LayerFinding:
    layer: int
    experts: int
    tokens: int
    entropy: float
    max_violation: float
    drop_rate: float
    dead_experts: list[int] = field(default_factory=list)  # expert ids with share < min_share
    judged_load: bool = True  # False: too few tokens to judge collapse, hogging or dead experts
    collapsed: bool = False
    hogging: bool = False
    dropping: bool = False

    @property
    def ok(self) -> bool:
        return not (self.collapsed or self.hogging or self.dropping or self.dead_experts)


@dataclass(frozen=True)
class RoutingReport:
    layers: list[LayerFinding]
    alarms: list[str]  # "layer 2: entropy 0.12 < 0.50 (collapsed)"; numbers only, never text
    expert_load: list[list[float]]  # per layer, each expert's share of token-slots

    @property
    def ok(self) -> bool:
        return not self.alarms

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "alarms": list(self.alarms),
            "layers": [asdict(f) for f in self.layers],
            "expert_load": self.expert_load,
        }


def _as_dict(stats: Any) -> Mapping[str, Any]:
    """A RoutingStats (anything with to_dict) or its dict form -> the dict form."""
    return stats.to_dict() if hasattr(stats, "to_dict") else stats


def _shares(stats: Mapping[str, Any]) -> list[float]:
    share = stats["token_share"]
    return [float(s) for s in (share.tolist() if hasattr(share, "tolist") else share)]


def expert_load(stats: Sequence[Any], digits: int = 4) -> list[list[float]]:
    """Per layer, each expert's share of token-slots, rounded: the API's routing summary."""
    return [[round(s, digits) for s in _shares(_as_dict(layer))] for layer in stats]


def shard_shares(
    expert_share: Sequence[Sequence[float]], ranges: Sequence[tuple[int, int]], digits: int = 4
) -> list[float]:
    """Per expert-parallel shard (experts [lo, hi) each), its share of all token-slots, averaged
    over layers: what expert parallelism's load balance looks like from the routing.

    >>> shard_shares([[0.4, 0.1, 0.3, 0.2]], [(0, 2), (2, 4)])
    [0.5, 0.5]"""
    layers = [layer for layer in expert_share if sum(layer) > 0]
    if not layers:
        return [0.0] * len(ranges)
    return [
        round(sum(sum(layer[lo:hi]) for layer in layers) / len(layers), digits) for lo, hi in ranges
    ]


def shard_imbalance(shares: Sequence[float]) -> float:
    """(max - mean) / mean of per-shard shares: 0 when the shards get equal work; with N shards,
    N - 1 when one gets it all. The slowest shard sets an expert-parallel layer's time."""
    return round(_violation(list(shares)), 4)


def merge_stats(forwards: Sequence[Mapping[str, Any] | Any]) -> dict[str, Any]:
    """Several forwards of ONE layer -> one stats dict (a window of traffic).

    Every forward routes tokens * k slots with the same k, so weighting shares and drop
    rates by tokens is exact; entropy and max violation are recomputed from the merged shares."""
    rows = [_as_dict(f) for f in forwards]
    if not rows:
        raise ValueError("merge_stats needs at least one forward's stats")
    n_experts = len(_shares(rows[0]))
    tokens = sum(int(row["tokens"]) for row in rows)
    loads, drop_weight = [0.0] * n_experts, 0.0
    for row in rows:
        drop_weight += float(row["drop_rate"]) * int(row["tokens"])
        for e, share in enumerate(_shares(row)):
            loads[e] += share * int(row["tokens"])
    shares = [load / tokens if tokens else 0.0 for load in loads]
    return {
        "token_share": shares,
        "entropy": _entropy(shares),
        "drop_rate": drop_weight / max(tokens, 1),
        "max_violation": _violation(shares),
        "dropped": sum(int(row["dropped"]) for row in rows),
        "tokens": tokens,
    }


def _entropy(shares: Sequence[float]) -> float:
    if len(shares) < 2:
        return 1.0
    h = -sum(s * math.log(s) for s in shares if s > 0)
    return min(max(h / math.log(len(shares)), 0.0), 1.0)


def _violation(shares: Sequence[float]) -> float:
    mean = 1.0 / len(shares) if shares else 0.0
    return (max(shares) - mean) / mean if shares and sum(shares) > 0 else 0.0


def check_layer(
    layer: int,
    stats: Any,
    config: RoutingAlarmConfig,
    min_tokens_per_expert: int = MIN_TOKENS_PER_EXPERT,
) -> tuple[LayerFinding, list[str]]:
    """One layer's finding and its alarm lines."""
    row = _as_dict(stats)
    shares = _shares(row)
    n_experts = len(shares)
    tokens = int(row["tokens"])
    entropy, violation = float(row["entropy"]), float(row["max_violation"])
    drop_rate = float(row["drop_rate"])
    judged = tokens >= min_tokens_per_expert * n_experts
    dead = [e for e, s in enumerate(shares) if s < config.min_share] if judged else []
    finding = LayerFinding(
        layer=layer,
        experts=n_experts,
        tokens=tokens,
        entropy=round(entropy, 4),
        max_violation=round(violation, 4),
        drop_rate=round(drop_rate, 4),
        dead_experts=dead,
        judged_load=judged,
        collapsed=judged and n_experts > 1 and entropy < config.min_entropy,
        hogging=judged and violation > config.max_violation,
        dropping=drop_rate > config.max_drop_rate,
    )
    alarms = []
    if finding.collapsed:
        alarms.append(
            f"layer {layer}: entropy {entropy:.2f} < {config.min_entropy:.2f} (collapsed)"
        )
    if finding.hogging:
        alarms.append(
            f"layer {layer}: max_violation {violation:.2f} > {config.max_violation:.2f} (hogging)"
        )
    if finding.dropping:
        alarms.append(
            f"layer {layer}: drop_rate {drop_rate:.3f} > {config.max_drop_rate:.3f} (dropping)"
        )
    if dead:
        alarms.append(
            f"layer {layer}: {len(dead)} dead expert(s) {dead} share < {config.min_share:.3f}"
        )
    return finding, alarms


def check_routing(
    stats: Sequence[Any],
    config: RoutingAlarmConfig | None = None,
    min_tokens_per_expert: int = MIN_TOKENS_PER_EXPERT,
) -> RoutingReport:
    """Per-layer routing stats (RoutingStats or their dicts, layer order) -> RoutingReport.

    >>> check_routing(out.routing, RoutingAlarmConfig()).ok
    """
    config = config or RoutingAlarmConfig()
    if min_tokens_per_expert < 0:
        raise ValueError(f"min_tokens_per_expert must be >= 0, got {min_tokens_per_expert}")
    findings: list[LayerFinding] = []
    alarms: list[str] = []
    for layer, layer_stats in enumerate(stats):
        finding, layer_alarms = check_layer(layer, layer_stats, config, min_tokens_per_expert)
        findings.append(finding)
        alarms.extend(layer_alarms)
    return RoutingReport(layers=findings, alarms=alarms, expert_load=expert_load(stats))
