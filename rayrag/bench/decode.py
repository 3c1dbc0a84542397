"""Bench `decode`: greedy decoding with the KV cache vs re-running the whole sequence each step.

`rayrag bench decode [--quick] --json`. The demo generator's shape (d_model 128, 2 layers,
4 heads, 2 KV heads, 4 experts top-2, ffn 256, vocab 4096, adaptive cutoffs (1000, 2500)),
random weights, random prompts, no eos, so every run makes exactly `new_tokens` tokens:

    kv_cache    `generate`: prefill once, then one token per forward against the cache
    recompute   `recompute_generate`: every step runs the prompt and all tokens so far

Both pick the next token with the head's lazy `greedy` on the last hidden state. Batch 1
(a 64-token prompt) and batch 4 (prompts of 64, 60, 56, 52 tokens: left padding and the
attention mask in play), alternating over rounds in one process, median times.
`ratios.kv_cache_vs_recompute` = recompute / kv_cache median seconds at batch 1 (goal >= 5),
`_b1` / `_b4` per batch, `_cpu_` the same from process CPU time (steadier on shared cores);
`identical` says both produced the same tokens for every prompt of every batch. The cache
turns each step's cost from O(S) tokens through every layer into one token plus attention
over S cached keys, so the ratio grows with `new_tokens`; quick mode (CI) makes 32 tokens
and its ratio is not the goal.

At this size a one-token step is bound by per-op overhead (mostly Python and dispatch, not
FLOPs), so re-running the whole sequence costs only a few steps' worth; larger models and
batches move the ratio up (see `_b4`). The forward does no work the decode loop never reads
(aux losses and routing stats are computed when read, see `MoEOutput`) and a lone token skips
the MoE sort. Measured step times: docs/DECISIONS.md.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from rayrag.bench import alternate, median
from rayrag.bench.moe import bench_threads
from rayrag.config import GeneratorConfig
from rayrag.generator.generate import Generation, generate, recompute_generate
from rayrag.generator.model import MoETransformer

DEMO_SHAPE = dict(
    vocab_size=4096,
    d_model=128,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    ffn_dim=256,
    n_experts=4,
    experts_per_token=2,
    adaptive_softmax_cutoffs=(1000, 2500),
)
PROMPT_LENGTHS = {"b1": (64,), "b4": (64, 60, 56, 52)}
FULL = {"new_tokens": 256, "rounds": 3}
QUICK = {"new_tokens": 32, "rounds": 2}


def _log(message: str) -> None:
    print(f"[bench decode] {message}", file=sys.stderr, flush=True)


def demo_model(seed: int = 0) -> MoETransformer:
    torch.manual_seed(seed)
    # a frequency order, as a trained tokenizer gives
    token_order = torch.randperm(DEMO_SHAPE["vocab_size"])
    return MoETransformer(GeneratorConfig(**DEMO_SHAPE), token_order=token_order).eval()


def _decoder(
    fn: Callable[..., list[Generation]],
    model: MoETransformer,
    prompts: list[list[int]],
    new_tokens: int,
    results: dict[str, list[list[int]]],
    cpu: dict[str, list[float]],
    name: str,
) -> Callable[[], None]:
    def call() -> None:
        start = time.process_time()
        generations = fn(model, prompts, max_new_tokens=new_tokens, eos_id=None, pad_id=0)
        cpu[name].append(time.process_time() - start)
        results[name] = [g.tokens for g in generations]

    return call


def bench_batch(
    model: MoETransformer, lengths: tuple[int, ...], new_tokens: int, rounds: int, seed: int = 1
) -> dict[str, Any]:
    rng = torch.Generator().manual_seed(seed)
    prompts = [
        torch.randint(5, model.config.vocab_size, (n,), generator=rng).tolist() for n in lengths
    ]
    results: dict[str, list[list[int]]] = {}
    cpu: dict[str, list[float]] = {"kv_cache": [], "recompute": []}
    fns = {"kv_cache": generate, "recompute": recompute_generate}
    # Warm-up (allocator, BLAS, first-call paths) on a few tokens; its times are not kept.
    alternate({n: _decoder(f, model, prompts, 8, results, cpu, n) for n, f in fns.items()}, 1)
    for values in cpu.values():
        values.clear()
    seconds = alternate(
        {n: _decoder(f, model, prompts, new_tokens, results, cpu, n) for n, f in fns.items()},
        rounds,
    )
    tokens = len(prompts) * new_tokens
    result = {
        "prompt_tokens": list(lengths),
        "tokens_per_s": {name: round(tokens / median(s), 1) for name, s in seconds.items()},
        "median_s": {name: round(median(s), 4) for name, s in seconds.items()},
        # Process CPU time swings less than wall time when other jobs share the cores.
        "cpu_median_s": {name: round(median(s), 4) for name, s in cpu.items()},
        "identical": results["kv_cache"] == results["recompute"],
    }
    _log(f"batch {len(prompts)}: {result['tokens_per_s']} identical={result['identical']}")
    return result


def run(quick: bool = False) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    threads_before = torch.get_num_threads()
    threads = bench_threads()
    torch.set_num_threads(threads)
    _log(f"{threads} torch thread(s); {plan}")
    started = time.perf_counter()
    try:
        model = demo_model()
        batches = {
            name: bench_batch(model, lengths, plan["new_tokens"], plan["rounds"])
            for name, lengths in PROMPT_LENGTHS.items()
        }
    finally:
        torch.set_num_threads(threads_before)

    def ratio(b: dict[str, Any], key: str = "median_s") -> float:
        return round(b[key]["recompute"] / b[key]["kv_cache"], 2)

    return {
        "bench": "decode",
        "quick": quick,
        "new_tokens": plan["new_tokens"],
        "rounds": plan["rounds"],
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in DEMO_SHAPE.items()},
        "torch_threads": threads,
        "batches": batches,
        "identical": all(b["identical"] for b in batches.values()),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "ratios": {
            "kv_cache_vs_recompute": ratio(batches["b1"]),
            **{f"kv_cache_vs_recompute_{name}": ratio(b) for name, b in batches.items()},
            **{
                f"kv_cache_vs_recompute_cpu_{name}": ratio(b, "cpu_median_s")
                for name, b in batches.items()
            },
        },
    }
