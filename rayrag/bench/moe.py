"""Bench `moe`: one MoE layer's forward + backward, sorted dispatch vs the textbook loop vs dense.

`rayrag bench moe [--quick] --json`. One layer, d_model 512, 4096 tokens,
top-2, at E = 8 and E = 64 experts, in one process, alternating over rounds, median times:

    ours    `MoELayer`: tokens sorted by expert, one `torch._grouped_mm` per projection where
            it runs (else a loop over contiguous slices); `dispatch` says which ran
    naive   `naive_moe_forward`: for each choice, for each expert, a boolean mask, a gather
            and an index_add (HF Mixtral's loop), on the same layer and weights
    dense   a SwiGLU FFN with hidden = k * ffn_dim: the same active FLOPs per token as the
            MoE's experts, with none of the routing, the sort or the combine
    hf      Hugging Face transformers' own `MixtralExperts` (5.x: stacked `gate_up_proj` /
            `down_proj`, a loop over the experts hit, indexing the stacks), loaded with the
            same weights and fed the same router's choices: what a user of HF gets today

Each step is forward, then backward of a fixed random output gradient (weights and input
get gradients). Layers run in eval mode, i.e. dropless, so ours and naive do exactly the
same work (in training, capacity drops would hand ours fewer slots); autograd stays on.

ffn_dim = 2 * d_model = 1024. Mixtral's ratio is 3.5, but at E = 64 the stacked expert
weights and their gradients are already 0.8 GB in fp32 at 1024, and each dense-equivalent
step is ~77 GFLOP, a couple of seconds on two shared cores; 2x keeps the full run within a
few minutes while the matmuls stay large enough (1024 rows per expert at E = 8, 128 at
E = 64) for BLAS, not Python, to dominate the fast paths.

Ratios (> 1: ours is faster; `_cpu` twins use process CPU time, steadier than wall time on
shared cores at one thread): `ours_vs_naive_e64` = naive / ours at E = 64 (goal >= 3),
`ours_vs_naive_e8`, and `ours_vs_dense_e8` = dense / ours at E = 8 (goal >= 0.8: routing,
sort and combine cost little next to the expert matmuls). `ours_vs_hf_e64` / `_e8` =
hf / ours: informational, not a goal (the goal's baseline is the textbook loop above). Quick mode (CI) shrinks d_model,
ffn_dim, tokens and rounds; its ratios are not the goals.

What to expect on CPU: a profile of ours at E = 64 puts 92% of the step in `aten::mm`
(`_grouped_mm` on CPU runs one mm per group), and the naive loop does the same FLOPs, its
2 * E masks, gathers and index_adds adding only ~15-50%. So naive / ours is bounded by about
naive / dense here (~1.5), whatever the dispatch; the 3x goal is a GPU figure, where the
loop's ~20 small kernels per expert and choice are launch-bound and one grouped GEMM is not.
The naive loop takes per-expert views once (`unbind`), like per-expert nn.Linear modules;
indexing the stacked weight inside the loop, as HF's fused-experts loop does, costs autograd
a full-stack gradient per expert and was ~8x slower still at E = 64.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralExperts

from rayrag.bench import alternate, median
from rayrag.generator.moe import MoELayer, SwiGLU, naive_moe_forward

TOP_K = 2
EXPERTS = (8, 64)
FULL = {"d_model": 512, "ffn_dim": 1024, "tokens": 4096, "rounds": 5}
QUICK = {"d_model": 128, "ffn_dim": 256, "tokens": 512, "rounds": 2}


def _log(message: str) -> None:
    print(f"[bench moe] {message}", file=sys.stderr, flush=True)


def _step(forward: Callable[[torch.Tensor], torch.Tensor], module: torch.nn.Module, x: torch.Tensor,
          grad: torch.Tensor, outputs: dict[str, torch.Tensor], name: str,
          cpu: dict[str, list[float]]) -> Callable[[], None]:
    """One competitor's timed call: forward, backward, gradients cleared first."""

    def call() -> None:
        start = time.process_time()
        module.zero_grad(set_to_none=True)
        x.grad = None
        y = forward(x)
        y.backward(grad)
        outputs[name] = y.detach()
        cpu.setdefault(name, []).append(time.process_time() - start)

    return call


def bench_threads() -> int:
    """Torch threads for the bench: $RAYRAG_BENCH_THREADS, else the cores other jobs leave idle.

    OpenMP threads spin-wait for each other; on cores other processes already keep busy, two
    threads ran the small per-expert matmuls 10-20x slower than one (measured here at load 7
    on 2 cores), which would measure the scheduler, not the dispatch."""
    if os.environ.get("RAYRAG_BENCH_THREADS"):
        return max(1, int(os.environ["RAYRAG_BENCH_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores, cores - busy))


def bench_config(n_experts: int, d_model: int, ffn_dim: int, tokens: int, rounds: int,
                 top_k: int = TOP_K, seed: int = 0) -> dict[str, Any]:
    """Tokens/s of ours, naive and dense for one expert count; outputs of ours and naive compared."""
    torch.manual_seed(seed)
    layer = MoELayer(d_model, ffn_dim, n_experts, top_k).eval()  # eval = dropless
    dense = SwiGLU(d_model, top_k * ffn_dim)
    x = torch.randn(1, tokens, d_model, requires_grad=True)  # (B=1, S=T, d)
    grad = torch.randn(1, tokens, d_model)
    hf = hf_experts(layer)

    def hf_forward(v: torch.Tensor) -> torch.Tensor:
        flat = v.reshape(-1, d_model)  # (T, d)
        weights, indices, _ = layer.gate(flat)  # the same router, so the same choices
        return hf(flat, indices, weights).view(v.shape)  # (B, S, d)

    outputs: dict[str, torch.Tensor] = {}
    cpu: dict[str, list[float]] = {}
    competitors = {
        "ours": _step(lambda v: layer(v)[0], layer, x, grad, outputs, "ours", cpu),
        "naive": _step(lambda v: naive_moe_forward(layer, v), layer, x, grad, outputs, "naive", cpu),
        "dense": _step(dense, dense, x, grad, outputs, "dense", cpu),
        "hf": _step(hf_forward, hf, x, grad, outputs, "hf", cpu),
    }
    alternate(competitors, 1)  # warm-up: allocator, the grouped_mm probe, BLAS threads
    cpu.clear()
    seconds = alternate(competitors, rounds)
    tokens_per_s = {name: round(tokens / median(s), 1) for name, s in seconds.items()}
    result = {
        "experts": n_experts,
        "dispatch": layer.experts.last_dispatch,
        "tokens_per_s": tokens_per_s,
        "median_s": {name: round(median(s), 4) for name, s in seconds.items()},
        # Process CPU time: with one thread it swings less than wall time on shared cores.
        "cpu_tokens_per_s": {name: round(tokens / median(s), 1) for name, s in cpu.items()},
        "max_abs_diff_ours_naive": float((outputs["ours"] - outputs["naive"]).abs().max()),
        "max_abs_diff_ours_hf": float((outputs["ours"] - outputs["hf"]).abs().max()),
    }
    _log(f"E={n_experts}: {tokens_per_s} ({result['dispatch']})")
    return result


def hf_experts(layer: MoELayer) -> MixtralExperts:
    """HF transformers' `MixtralExperts` holding `layer`'s expert weights (gate half first)."""
    experts = layer.experts
    n_experts, ffn_dim, d_model = experts.w1.shape
    hf = MixtralExperts(MixtralConfig(hidden_size=d_model, intermediate_size=ffn_dim,
                                      num_local_experts=n_experts, hidden_act="silu"))
    with torch.no_grad():
        hf.gate_up_proj.copy_(torch.cat([experts.w1, experts.w3], dim=1))  # (E, 2F, d)
        hf.down_proj.copy_(experts.w2)  # (E, d, F)
    return hf


def run(quick: bool = False) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    threads_before = torch.get_num_threads()
    threads = bench_threads()
    torch.set_num_threads(threads)
    _log(f"{threads} torch thread(s); {plan}")
    started = time.perf_counter()
    try:
        configs = {f"e{e}": bench_config(e, plan["d_model"], plan["ffn_dim"], plan["tokens"], plan["rounds"])
                   for e in EXPERTS}
    finally:
        torch.set_num_threads(threads_before)
    speed = {name: c["tokens_per_s"] for name, c in configs.items()}
    return {
        "bench": "moe",
        "quick": quick,
        "top_k": TOP_K,
        **{key: plan[key] for key in ("d_model", "ffn_dim", "tokens", "rounds")},
        "torch_threads": threads,
        "dispatch": configs["e8"]["dispatch"],
        "configs": configs,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "ratios": {
            "ours_vs_naive_e64": round(speed["e64"]["ours"] / speed["e64"]["naive"], 2),
            "ours_vs_naive_e8": round(speed["e8"]["ours"] / speed["e8"]["naive"], 2),
            "ours_vs_dense_e8": round(speed["e8"]["ours"] / speed["e8"]["dense"], 2),
            "ours_vs_dense_e64": round(speed["e64"]["ours"] / speed["e64"]["dense"], 2),
            "ours_vs_hf_e64": round(speed["e64"]["ours"] / speed["e64"]["hf"], 2),
            "ours_vs_hf_e8": round(speed["e8"]["ours"] / speed["e8"]["hf"], 2),
            **{f"{ratio}_cpu": round(configs[e]["cpu_tokens_per_s"]["ours"] / configs[e]["cpu_tokens_per_s"][other], 2)
               for ratio, e, other in (("ours_vs_naive_e64", "e64", "naive"), ("ours_vs_naive_e8", "e8", "naive"),
                                       ("ours_vs_dense_e8", "e8", "dense"))},
        },
    }
