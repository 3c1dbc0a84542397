"""Bench `ep`: expert parallelism over Ray actors vs the same model in one process.

`rayrag bench ep [--quick] --json`. One random MoE checkpoint (d 256, 4 layers, 8 experts
top-2 in the full size), loaded three ways in one driver: `local` (one process), and
`ShardedGenerator` over 2 `ExpertShard` actors with each transport (`compiled`: a Ray
Compiled Graph over shared-memory channels; `actor`: one actor call per shard per layer).
Competitors alternate within each round.

    prefill tokens/s      batch x seq tokens through the whole model (the MoE layers ship
                          every token's hidden state to its shard and back)
    decode ms/token       greedy, batch 1, with the KV cache: per step, one tiny message per
                          shard per layer, so transport latency is all that shows
    dispatch us/layer     one layer's round trip with a few rows per shard, on experts so small
                          (d 16) that their arithmetic is negligible: the transport alone

`ratios.compiled_vs_actor_call` = actor-call dispatch overhead / compiled dispatch overhead, the
overhead being a layer's round trip minus the slower shard's own arithmetic (goal >= 3;
`compiled_vs_actor_round_trip` is the same without the subtraction);
`ratios.ep_vs_local_prefill` = sharded (compiled) prefill tokens/s / local (goal >= 0.5: on 2
CPU cores EP cannot win, the figure is what the transport costs). `max_abs_diff` is the
largest logit difference between sharded and local (<= 1e-4). On a machine with GPUs the
shards take one GPU each.

Threads: both sides get the same cores for their experts. Each shard runs its experts on its
own torch thread (`ExpertShard`'s default), SHARDS threads at once; the local model runs with
as many torch threads as the shards have together. While the driver runs a sharded model
(attention, routers, head, then waiting on the shards) it uses EP_DRIVER_THREADS. Each call
sets its side's count first. `torch_threads` reports the counts as read inside the timed calls
(`local`, `ep_driver`) and inside each shard process (`ep_shards`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from rayrag.bench import alternate
from rayrag.config import GeneratorConfig
from rayrag.generator.checkpoint import load_checkpoint, save_checkpoint
from rayrag.generator.generate import generate
from rayrag.generator.model import MoETransformer

FULL = {
    "d_model": 256,
    "n_layers": 4,
    "n_experts": 8,
    "ffn_dim": 512,
    "batch": 4,
    "seq": 256,
    "new_tokens": 32,
    "dispatch_calls": 200,
    "rounds": 3,
}
QUICK = {
    "d_model": 64,
    "n_layers": 2,
    "n_experts": 4,
    "ffn_dim": 128,
    "batch": 2,
    "seq": 64,
    "new_tokens": 8,
    "dispatch_calls": 30,
    "rounds": 1,
}
SHARDS = 2
# The driver's torch threads while it runs a sharded model (attention, routers, head; it waits
# while the shards compute). One: more spin-wait on the shards' cores (DECISIONS, issue 21).
EP_DRIVER_THREADS = 1


def _log(message: str) -> None:
    print(f"[bench ep] {message}", file=sys.stderr, flush=True)


def model_config(
    d_model: int, n_layers: int, n_experts: int, ffn_dim: int, max_seq_len: int
) -> GeneratorConfig:
    return GeneratorConfig(
        vocab_size=2048,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=ffn_dim,
        n_experts=n_experts,
        experts_per_token=2,
        max_seq_len=max_seq_len,
        adaptive_softmax_cutoffs=(),
    )


def dispatch_seconds(plan: dict[str, Any]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """One MoE layer's round trip over each transport, on experts so small (d 16, ffn 16) that
    the shards' arithmetic is small; both shards get rows on every call. Returns the seconds of
    each run and, for the same runs, the shards' own arithmetic seconds (the slower shard's,
    as they work in parallel): the difference is the transport (packing, channels or task
    submission, unpacking)."""
    from rayrag.generator.sharded import ShardedGenerator

    cfg = model_config(16, 1, plan["n_experts"], 16, 64)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(MoETransformer(cfg), Path(tmp) / "tiny")
        generators = {t: ShardedGenerator(path, SHARDS, transport=t) for t in ("compiled", "actor")}
    try:
        rows = torch.randn(8, cfg.d_model)
        counts = torch.zeros(cfg.n_experts, dtype=torch.long)
        counts[0], counts[-1] = 4, 4  # the first expert lives on shard 0, the last on shard 1
        compute: dict[str, list[float]] = {t: [] for t in generators}

        def dispatch(transport: str) -> None:
            generator = generators[transport]
            before = list(generator.compute_s)
            for _ in range(plan["dispatch_calls"]):
                generator._dispatch(0, rows, counts)
            compute[transport].append(
                max(a - b for a, b in zip(generator.compute_s, before, strict=True))
            )

        seconds = alternate({t: (lambda t=t: dispatch(t)) for t in generators}, plan["rounds"])
        return seconds, compute
    finally:
        for generator in generators.values():
            generator.shutdown()


def bench(plan: dict[str, Any]) -> dict[str, Any]:
    import ray

    from rayrag.generator.sharded import ShardedGenerator

    cfg = model_config(
        plan["d_model"],
        plan["n_layers"],
        plan["n_experts"],
        plan["ffn_dim"],
        plan["seq"] + plan["new_tokens"] + 8,
    )
    torch.manual_seed(0)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = save_checkpoint(MoETransformer(cfg), Path(tmp) / "ckpt")
            local = load_checkpoint(path).eval()
            generators = {
                t: ShardedGenerator(path, SHARDS, transport=t) for t in ("compiled", "actor")
            }
        try:
            shard_threads = shard_torch_threads(generators["actor"])
            # Each side's experts on the same number of threads: the local model gets as many
            # as the shards have between them; the sharded models' own part runs on
            # EP_DRIVER_THREADS.
            side_threads = {"local": sum(shard_threads), "ep": EP_DRIVER_THREADS}
            seen: dict[str, int] = {}  # torch threads inside each model's timed calls
            models = {"local": local, **{f"ep_{t}": g.model for t, g in generators.items()}}
            ids = torch.randint(0, cfg.vocab_size, (plan["batch"], plan["seq"]))
            with torch.inference_mode():
                reference = local(ids).logits
                diff = max(float((m(ids).logits - reference).abs().max()) for m in models.values())

            def prefill(name, model):
                torch.set_num_threads(side_threads["local" if name == "local" else "ep"])
                seen[name] = torch.get_num_threads()
                with torch.inference_mode():
                    model(ids, compute_logits=False)

            def decode(name, model):
                torch.set_num_threads(side_threads["local" if name == "local" else "ep"])
                generate(
                    model,
                    [ids[0, :16].tolist()],
                    max_new_tokens=plan["new_tokens"],
                    eos_id=None,
                    pad_id=0,
                )

            seconds = {
                phase: alternate(
                    {n: (lambda n=n, m=m, f=f: f(n, m)) for n, m in models.items()}, plan["rounds"]
                )
                for phase, f in (("prefill", prefill), ("decode", decode))
            }
            transports = {t: g.transport for t, g in generators.items()}
            threads = {
                "local": seen["local"],
                "ep_driver": seen["ep_compiled"],
                "ep_shards": shard_threads,
            }
            cores = {"machine": os.cpu_count(), "ray": ray.cluster_resources().get("CPU")}
        finally:
            for generator in generators.values():
                generator.shutdown()
        torch.set_num_threads(EP_DRIVER_THREADS)  # the transport alone: the sharded side's setting
        seconds["dispatch"], shard_compute = dispatch_seconds(plan)
    finally:
        if started_ray:
            ray.shutdown()
    best = {phase: {n: min(v) for n, v in runs.items()} for phase, runs in seconds.items()}
    tokens = plan["batch"] * plan["seq"]
    prefill_tps = {n: round(tokens / s, 1) for n, s in best["prefill"].items()}
    decode_ms = {n: round(s / plan["new_tokens"] * 1000, 3) for n, s in best["decode"].items()}
    calls = plan["dispatch_calls"]
    dispatch_us = {t: round(s / calls * 1e6, 1) for t, s in best["dispatch"].items()}
    overhead_us = {
        t: round(
            min(s - c for s, c in zip(seconds["dispatch"][t], shard_compute[t], strict=True))
            / calls
            * 1e6,
            1,
        )
        for t in dispatch_us
    }
    _log(
        f"prefill tok/s {prefill_tps}; decode ms/token {decode_ms}; dispatch us/layer "
        f"{dispatch_us}; of it transport (overhead) {overhead_us}"
    )
    return {
        "plan": plan,
        "shards": SHARDS,
        "transports": transports,
        "max_abs_diff": diff,
        "torch_threads": threads,
        "cores": cores,
        "prefill_tokens_per_s": prefill_tps,
        "decode_ms_per_token": decode_ms,
        "dispatch_us_per_layer": dispatch_us,
        "dispatch_overhead_us_per_layer": overhead_us,
        "ratios": {
            "compiled_vs_actor_call": round(overhead_us["actor"] / overhead_us["compiled"], 3),
            "compiled_vs_actor_round_trip": round(
                dispatch_us["actor"] / dispatch_us["compiled"], 3
            ),
            "ep_vs_local_prefill": round(prefill_tps["ep_compiled"] / prefill_tps["local"], 3),
            "ep_vs_local_prefill_actor": round(prefill_tps["ep_actor"] / prefill_tps["local"], 3),
            "ep_vs_local_decode": round(decode_ms["local"] / decode_ms["ep_compiled"], 3),
        },
    }


def shard_torch_threads(generator: Any) -> list[int]:
    """Torch intra-op threads inside each of `generator`'s shard processes, as they report it.

    Asked through Ray's `__ray_call__`, so only of a generator on plain actor calls: a shard
    in a compiled graph runs the graph's loop and takes no other call. Both transports start
    the same `ExpertShard`s."""
    import ray

    return ray.get(
        [
            shard.__ray_call__.remote(lambda _shard: torch.get_num_threads())
            for shard in generator.shards
        ]
    )


def run(quick: bool = False) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    threads_before = torch.get_num_threads()
    started = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        result = bench(plan)
    finally:
        torch.set_num_threads(threads_before)
    return {
        "bench": "ep",
        "quick": quick,
        **result,
        "load_average_1m_at_start": load,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
