"""Scale curve `moe`: one MoE layer's step time vs number of experts at fixed active parameters.

Part of `rayrag bench scale` (rayrag/bench/scale.py). rayrag's real `MoELayer` in eval mode
(dropless, as bench/moe.py runs it; autograd on), top-2, d_model, expert ffn_dim and tokens
fixed, so every token meets the same expert FLOPs whatever E is: only the router (d x E), the
sort/dispatch and the total expert weights (E x 3 x d x ffn) grow with E. Series:

    train_step   forward, then backward of a fixed output gradient (weights and input get
                 gradients), gradients cleared first: bench/moe.py's step
    forward      `torch.no_grad()` forward only: what serving pays per layer

`meta.dense_equivalent_ms` is a SwiGLU FFN with hidden = k * ffn_dim (the same active FLOPs,
no routing), timed in the same rounds, for context. All configurations (every E, both
series, the dense one) alternate inside each round, so machine noise spreads evenly over
them; figures are medians, and `cpu_ms` twins use process CPU time, which swings less than
wall time on shared cores at one thread (torch threads as bench/moe.py picks them).

The goal `ratios.moe_time_e64_vs_e8_fixed_active` = train_step(E=64) / train_step(E=8) <= 1.5.
Sizes follow bench/moe.py (d_model 512, ffn_dim 1024, 4096 tokens): at E = 64 each expert
gets 128 rows on average. Quick mode shrinks d_model, ffn_dim, tokens and rounds, keeping
the expert counts so the same ratio is computed; quick ratios are not the goal's figures.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from rayrag.bench import alternate, median
from rayrag.generator.moe import MoELayer, SwiGLU

TOP_K = 2
EXPERTS = (8, 16, 32, 64)
FULL = {"d_model": 512, "ffn_dim": 1024, "tokens": 4096, "rounds": 4}
QUICK = {"d_model": 64, "ffn_dim": 128, "tokens": 512, "rounds": 2}


def bench_threads() -> int:
    """Torch threads: $RAYRAG_BENCH_THREADS, else the cores other jobs leave idle.

    bench/moe.py's rule and reason (OpenMP spin-waits on busy shared cores make small
    matmuls far slower at two threads; measured: docs/DECISIONS.md), restated so this module
    does not import that one's Hugging Face transformers dependency (slow to import)."""
    if os.environ.get("RAYRAG_BENCH_THREADS"):
        return max(1, int(os.environ["RAYRAG_BENCH_THREADS"]))
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores, cores - busy))


def _train_step(
    module: torch.nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    grad: torch.Tensor,
    cpu: list[float],
) -> Callable[[], None]:
    def call() -> None:
        start = time.process_time()
        module.zero_grad(set_to_none=True)
        x.grad = None
        forward(x).backward(grad)
        cpu.append(time.process_time() - start)

    return call


def _forward_only(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, cpu: list[float]
) -> Callable[[], None]:
    def call() -> None:
        start = time.process_time()
        with torch.no_grad():
            forward(x)
        cpu.append(time.process_time() - start)

    return call


def curve(
    quick: bool = False,
    experts: tuple[int, ...] = EXPERTS,
    d_model: int | None = None,
    ffn_dim: int | None = None,
    tokens: int | None = None,
    rounds: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """MoE layer ms per step vs E at fixed top-k, d_model, ffn_dim, tokens; see the docstring."""
    plan = dict(QUICK if quick else FULL)
    for key, value in (
        ("d_model", d_model),
        ("ffn_dim", ffn_dim),
        ("tokens", tokens),
        ("rounds", rounds),
    ):
        if value is not None:
            plan[key] = value
    experts = tuple(sorted(experts))
    d, f, t = plan["d_model"], plan["ffn_dim"], plan["tokens"]
    threads_before = torch.get_num_threads()
    threads = bench_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        torch.manual_seed(seed)
        x = torch.randn(1, t, d, requires_grad=True)  # (B=1, S=T, d)
        grad = torch.randn(1, t, d)
        competitors: dict[str, Callable[[], None]] = {}
        cpu: dict[str, list[float]] = {}
        dispatch: dict[int, str] = {}
        layers = {e: MoELayer(d, f, e, TOP_K).eval() for e in experts}  # eval = dropless
        for e, layer in layers.items():

            def forward(v: torch.Tensor, layer: MoELayer = layer) -> torch.Tensor:
                return layer(v)[0]

            competitors[f"train_step/{e}"] = _train_step(
                layer, forward, x, grad, cpu.setdefault(f"train_step/{e}", [])
            )
            competitors[f"forward/{e}"] = _forward_only(
                forward, x, cpu.setdefault(f"forward/{e}", [])
            )
        dense = SwiGLU(d, TOP_K * f)
        competitors["dense_train_step"] = _train_step(
            dense, dense, x, grad, cpu.setdefault("dense_train_step", [])
        )
        competitors["dense_forward"] = _forward_only(dense, x, cpu.setdefault("dense_forward", []))
        alternate(competitors, 1)  # warm-up: allocator, the grouped_mm probe, BLAS threads
        dispatch = {e: layer.experts.last_dispatch for e, layer in layers.items()}
        for values in cpu.values():
            values.clear()
        seconds = alternate(competitors, plan["rounds"])
    finally:
        torch.set_num_threads(threads_before)
    ms = {name: round(1000 * median(s), 3) for name, s in seconds.items()}
    cpu_ms = {name: round(1000 * median(s), 3) for name, s in cpu.items()}
    series = {kind: [[e, ms[f"{kind}/{e}"]] for e in experts] for kind in ("train_step", "forward")}
    print(
        f"[bench scale/moe {time.perf_counter() - started:6.1f}s] ms={ms}",
        file=sys.stderr,
        flush=True,
    )
    largest = experts[-1]
    return {
        "name": "moe",
        "x": "experts",
        "y": "ms_median_step",
        "series": series,
        "per_unit": {
            # Per token at fixed active params: what a generator layer costs, whatever E.
            f"train_step_us_per_token_e{largest}": round(1000 * ms[f"train_step/{largest}"] / t, 3),
            f"forward_us_per_token_e{largest}": round(1000 * ms[f"forward/{largest}"] / t, 3),
            "dense_equivalent_train_step_us_per_token": round(1000 * ms["dense_train_step"] / t, 3),
        },
        "meta": {
            **plan,
            "top_k": TOP_K,
            "experts": list(experts),
            "torch_threads": threads,
            "dispatch": {str(e): v for e, v in dispatch.items()},
            "active_expert_params_per_token": TOP_K * 3 * d * f,
            "total_expert_params": {str(e): e * 3 * d * f for e in experts},
            "dense_equivalent_ms": {
                "train_step": ms["dense_train_step"],
                "forward": ms["dense_forward"],
            },
            "cpu_ms": cpu_ms,
            "wall_s": round(time.perf_counter() - started, 1),
        },
    }
