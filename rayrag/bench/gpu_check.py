"""GPU check: prove rayrag's GPU paths on an NVIDIA machine and measure them against the CPU.

`python -m rayrag.bench.gpu_check [--quick] [--write docs/PERFORMANCE.md] --json`, run by
`scripts/gpu_check.sh`. Not a `rayrag bench` entry: it needs a GPU, and without one it
prints one line and exits 0 (the CPU paths are what `make test` covers).

With a GPU, in one process, each pair alternating over rounds (`rayrag.bench.alternate`),
medians:

    faiss search  `VectorIndex` on GPU vs its own CPU copy (`cpu_view`): Flat at 100k and
                  IVF-Flat (the large-index choice on GPU) at 1M vectors of dim 384; batch-1
                  p50 latency, batch-256 throughput, and top-10 overlap of GPU vs CPU results
    faiss build   IVF train + add: `VectorIndex.build` with the GPU (k-means on the GPU, then
                  the clone) vs all on CPU
    moe           one `MoELayer` forward + backward at `rayrag bench moe`'s full size (d 512,
                  ffn 1024, 4096 tokens, top-2), E = 8 and 64: CUDA bf16 `torch._grouped_mm` vs
                  CPU fp32, and CUDA grouped_mm vs CUDA loop dispatch; plus what bf16 autocast
                  (the trainer's mode) does to the router and the dispatch
    sharded       `ShardedGenerator` forward with expert shards on GPUs (2 if there are 2,
                  else 1) vs CPU shards

The last stdout line is JSON with `ratios` (`gpu_vs_cpu_*`: speedups, > 1 = GPU faster).
`--write` replaces the block between `<!-- gpu_check:begin -->` and `<!-- gpu_check:end -->`
in the given Markdown file atomically with a table of the figures, the GPU and the versions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from rayrag.atomic import atomic_text
from rayrag.bench import alternate, median
from rayrag.config import GeneratorConfig, IndexConfig
from rayrag.errors import ConfigError, RayRagError
from rayrag.generator.moe import MoELayer
from rayrag.index.vector import VectorIndex, choose_factory

BEGIN, END = "<!-- gpu_check:begin -->", "<!-- gpu_check:end -->"
DIM, K = 384, 10
FULL = {
    "flat_n": 100_000,
    "ivf_n": 1_000_000,
    "build_n": 200_000,
    "queries": 256,
    "single": 100,
    "rounds": 3,
    "tokens": 4096,
    "d_model": 512,
    "ffn_dim": 1024,
}
QUICK = {
    "flat_n": 20_000,
    "ivf_n": 100_000,
    "build_n": 50_000,
    "queries": 256,
    "single": 20,
    "rounds": 2,
    "tokens": 1024,
    "d_model": 256,
    "ffn_dim": 512,
}


def _log(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


def visible_gpus() -> tuple[bool, int]:
    """(torch sees CUDA, faiss's GPU count)."""
    return torch.cuda.is_available(), faiss.get_num_gpus()


def no_gpu_line(torch_cuda: bool, faiss_gpus: int) -> str:
    return (
        f"gpu_check: no NVIDIA GPU visible (torch.cuda={torch_cuda}, faiss GPUs={faiss_gpus}): "
        "nothing to measure; the CPU paths are covered by make test"
    )


# ----------------------------------------------------------------------------- faiss
def _clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 1024 topics, as sentence embeddings cluster (uniform random
    vectors have no neighbourhoods for IVF to exploit)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1024, DIM), dtype=np.float32)
    x = centres[rng.integers(0, 1024, n)]
    x += 0.5 * rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(
        np.mean([len(set(x) & set(y)) / max(len(y), 1) for x, y in zip(a, b, strict=True)])
    )


def _search_pair(
    name: str, key: str, gpu: VectorIndex, queries: np.ndarray, plan: dict
) -> list[dict]:
    cpu = gpu.cpu_view()
    assert gpu.on_gpu, f"{name}: index did not go to GPU"
    single = queries[: plan["single"]]

    def one_by_one(index: VectorIndex) -> Callable[[], None]:
        return lambda: [index.search(q, K) for q in single]

    ones = alternate({"gpu": one_by_one(gpu), "cpu": one_by_one(cpu)}, plan["rounds"])
    batch = alternate(
        {"gpu": lambda: gpu.search(queries, K), "cpu": lambda: cpu.search(queries, K)},
        plan["rounds"],
    )
    p50 = {side: 1000 * median(s) / len(single) for side, s in ones.items()}  # ms per query
    qps = {side: len(queries) / median(s) for side, s in batch.items()}
    overlap = _overlap(gpu.search(queries, K)[1], cpu.search(queries, K)[1])
    _log(f"{name}: batch-1 {p50}, batch-{len(queries)} {qps} q/s, top-{K} overlap {overlap:.3f}")
    return [
        row(
            f"gpu_vs_cpu_{key}_search_b1",
            f"{name} search, batch 1",
            "ms/query (median)",
            p50["gpu"],
            p50["cpu"],
            lower_is_better=True,
        ),
        row(
            f"gpu_vs_cpu_{key}_search_b{len(queries)}",
            f"{name} search, batch {len(queries)}",
            "queries/s",
            qps["gpu"],
            qps["cpu"],
        ),
        row(
            f"recall_gpu_vs_cpu_{key}",
            f"{name} top-{K} overlap, GPU vs CPU",
            "fraction",
            overlap,
            1.0,
            speedup=False,
        ),
    ]


def bench_faiss(plan: dict) -> list[dict]:
    queries = _clustered(plan["queries"], seed=1)
    flat = VectorIndex(IndexConfig(factory="Flat", use_gpu="always"), DIM).build(
        _clustered(plan["flat_n"], 0)
    )
    rows = _search_pair(f"Flat {plan['flat_n']:,}", "flat", flat, queries, plan)
    del flat
    started = time.perf_counter()
    ivf = VectorIndex(IndexConfig(use_gpu="always"), DIM).build(_clustered(plan["ivf_n"], 2))
    _log(f"built {ivf.factory_string} over {ivf.ntotal:,} in {time.perf_counter() - started:.1f} s")
    rows += _search_pair(f"{ivf.factory_string} {plan['ivf_n']:,}", "ivf", ivf, queries, plan)
    del ivf
    vectors = _clustered(plan["build_n"], 3)
    factory = choose_factory(plan["build_n"], IndexConfig(), gpus=1)  # what a GPU build picks
    builds = alternate(
        {
            "gpu": lambda: VectorIndex(IndexConfig(factory=factory, use_gpu="always"), DIM).build(
                vectors
            ),
            "cpu": lambda: VectorIndex(IndexConfig(factory=factory, use_gpu="never"), DIM).build(
                vectors
            ),
        },
        rounds=2,
    )
    rows.append(
        row(
            "gpu_vs_cpu_ivf_build",
            f"{factory} build (train + add) {plan['build_n']:,}",
            "s (median)",
            median(builds["gpu"]),
            median(builds["cpu"]),
            lower_is_better=True,
        )
    )
    return rows


# ------------------------------------------------------------------------------- moe
def _moe_step(layer: MoELayer, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def call() -> None:
        x.grad = None
        layer.zero_grad(set_to_none=True)
        y, _ = layer(x)
        y.backward(grad)
        if x.is_cuda:
            torch.cuda.synchronize()  # time the kernels, not their launch

    return call


def bench_moe(plan: dict) -> tuple[list[dict], dict]:
    d, ffn, tokens = plan["d_model"], plan["ffn_dim"], plan["tokens"]
    rows, info = [], {}
    for experts in (8, 64):
        torch.manual_seed(0)
        cpu = MoELayer(d, ffn, experts, top_k=2).eval()  # eval = dropless: same work everywhere
        cuda = {
            dispatch: MoELayer(d, ffn, experts, top_k=2, dispatch=dispatch)
            .to("cuda", torch.bfloat16)
            .eval()
            for dispatch in ("grouped_mm", "loop")
        }
        for layer in cuda.values():
            layer.load_state_dict(cpu.state_dict())
        x = torch.randn(1, tokens, d)
        grad = torch.randn(1, tokens, d)
        x_cuda = x.to("cuda", torch.bfloat16).requires_grad_()
        grad_cuda = grad.to("cuda", torch.bfloat16)
        steps = {
            "cuda_grouped_mm": _moe_step(cuda["grouped_mm"], x_cuda, grad_cuda),
            "cuda_loop": _moe_step(cuda["loop"], x_cuda, grad_cuda),
            "cpu": _moe_step(cpu, x.requires_grad_(), grad),
        }
        for step in steps.values():
            step()  # warm-up: probes, cuBLAS handles, allocator
        seconds = {name: median(s) for name, s in alternate(steps, plan["rounds"]).items()}
        info[f"e{experts}"] = {
            "seconds": seconds,
            "cpu_dispatch": cpu.experts.last_dispatch,
            "cuda_dispatch": cuda["grouped_mm"].experts.last_dispatch,
        }
        _log(f"MoE E={experts}: {seconds}")
        what = f"MoE layer fwd+bwd, E={experts}, {tokens} tokens"
        rows.append(
            row(
                f"gpu_vs_cpu_moe_e{experts}",
                f"{what}: CUDA bf16 grouped_mm vs CPU fp32",
                "s (median)",
                seconds["cuda_grouped_mm"],
                seconds["cpu"],
                lower_is_better=True,
            )
        )
        rows.append(
            row(
                f"cuda_grouped_mm_vs_loop_e{experts}",
                f"{what}: CUDA grouped_mm vs CUDA loop",
                "s (median)",
                seconds["cuda_grouped_mm"],
                seconds["cuda_loop"],
                lower_is_better=True,
            )
        )
    # The trainer's mode (TrainConfig.bf16): float32 weights under bf16 autocast. Recorded, not
    # timed: which dtype the router's logits come back in and which dispatch the experts took.
    layer = MoELayer(d, ffn, 8, top_k=2).cuda().train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y, out = layer(torch.randn(1, 256, d, device="cuda"))
    info["autocast_bf16"] = {
        "router_logits_dtype": str(out.router_logits.dtype).removeprefix("torch."),
        "output_dtype": str(y.dtype).removeprefix("torch."),
        "dispatch": layer.experts.last_dispatch,
    }
    return rows, info


# --------------------------------------------------------------------------- sharded
def bench_sharded(plan: dict) -> list[dict]:
    import ray

    from rayrag.generator.checkpoint import save_checkpoint
    from rayrag.generator.model import MoETransformer
    from rayrag.generator.sharded import ShardedGenerator

    shards = 2 if torch.cuda.device_count() >= 2 else 1
    cfg = GeneratorConfig(
        vocab_size=2000,
        d_model=plan["d_model"],
        n_layers=2,
        n_heads=8,
        n_kv_heads=4,
        ffn_dim=plan["ffn_dim"],
        n_experts=8,
        experts_per_token=2,
        max_seq_len=512,
        adaptive_softmax_cutoffs=(),
    )
    ids = torch.randint(0, cfg.vocab_size, (8, 256))
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = save_checkpoint(MoETransformer(cfg), Path(tmp) / "ckpt")
            generators = {
                "gpu": ShardedGenerator(ckpt, shards, use_gpu=True, num_cpus=1, transport="actor"),
                "cpu": ShardedGenerator(ckpt, shards, use_gpu=False, num_cpus=1, transport="actor"),
            }
            try:

                def forward(generator: ShardedGenerator) -> Callable[[], None]:
                    def call() -> None:
                        with torch.inference_mode():
                            generator.model(ids)

                    return call

                steps = {side: forward(g) for side, g in generators.items()}
                for step in steps.values():
                    step()
                seconds = {side: median(s) for side, s in alternate(steps, plan["rounds"]).items()}
            finally:
                for generator in generators.values():
                    generator.shutdown()
    finally:
        if started_ray:
            ray.shutdown()
    _log(f"sharded ({shards} shards): {seconds}")
    return [
        row(
            "gpu_vs_cpu_sharded_forward",
            f"ShardedGenerator forward, {shards} shard(s), 8x256 tokens",
            "s (median)",
            seconds["gpu"],
            seconds["cpu"],
            lower_is_better=True,
        )
    ]


# ------------------------------------------------------------------------ reporting
def row(
    key: str,
    what: str,
    unit: str,
    gpu: float,
    cpu: float,
    lower_is_better: bool = False,
    speedup: bool = True,
) -> dict:
    """One line of the table; `speedup` = how many times faster the GPU side is (None: not a
    time or a rate; then `gpu` is the figure itself, under `key` in the result's `recall`)."""
    ratio = None
    if speedup and gpu > 0 and cpu > 0:
        ratio = round(cpu / gpu if lower_is_better else gpu / cpu, 2)
    return {
        "key": key,
        "what": what,
        "unit": unit,
        "gpu": round(gpu, 4),
        "cpu": round(cpu, 4),
        "speedup": ratio,
    }


def format_block(result: dict) -> str:
    """The Markdown that goes between the markers: environment, then one table row per figure."""
    env = result["environment"]
    lines = [
        f"Measured {env['date']} on {env['gpu']} (driver {env['driver']}, CUDA {env['cuda']}, "
        f"torch {env['torch']}, faiss {env['faiss']})"
        f"{' — quick mode' if result.get('quick') else ''}.",
        "",
        "| what | unit | GPU | baseline (CPU, or CUDA loop) | speedup |",
        "|---|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        speedup = "—" if r["speedup"] is None else f"{r['speedup']:g}x"
        lines.append(f"| {r['what']} | {r['unit']} | {r['gpu']:g} | {r['cpu']:g} | {speedup} |")
    autocast = result.get("moe", {}).get("autocast_bf16")
    if autocast:
        lines += [
            "",
            f"Under bf16 autocast (training) the router's logits came back "
            f"{autocast['router_logits_dtype']}, the experts ran `{autocast['dispatch']}`.",
        ]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """`text` with everything between the markers replaced by `block`; the rest unchanged."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ConfigError(f"expected one {BEGIN} ... {END} block in the document (--write)")
    return text[: start + len(BEGIN)] + "\n" + block.strip("\n") + "\n" + text[end:]


def write_doc(path: str | Path, result: dict) -> None:
    path = Path(path)
    new = replace_block(path.read_text(encoding="utf-8"), format_block(result))
    with atomic_text(path) as handle:
        handle.write(new)


def environment() -> dict[str, str]:
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split("\n")[0]
    except (OSError, subprocess.SubprocessError):
        driver = "unknown"
    return {
        "gpu": torch.cuda.get_device_name(0),
        "gpus": str(torch.cuda.device_count()),
        "driver": driver.strip() or "unknown",
        "cuda": str(torch.version.cuda),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
    }


def run(quick: bool = False) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    result: dict[str, Any] = {
        "bench": "gpu_check",
        "quick": quick,
        "environment": environment(),
        "plan": plan,
    }
    rows = bench_faiss(plan)
    moe_rows, result["moe"] = bench_moe(plan)
    rows += moe_rows + bench_sharded(plan)
    result["rows"] = rows
    result["ratios"] = {r["key"]: r["speedup"] for r in rows if r["speedup"] is not None}
    result["recall"] = {r["key"]: r["gpu"] for r in rows if r["speedup"] is None}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rayrag.bench.gpu_check", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes (CI smoke); not the figures"
    )
    parser.add_argument(
        "--write", metavar="MARKDOWN", help="replace the gpu_check block in this file"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON on the last line"
    )
    args = parser.parse_args(argv)
    torch_cuda, faiss_gpus = visible_gpus()
    if not torch_cuda and not faiss_gpus:
        print(no_gpu_line(torch_cuda, faiss_gpus))
        return 0
    if not (torch_cuda and faiss_gpus):
        print(
            f"gpu_check: half a GPU setup (torch.cuda={torch_cuda}, faiss GPUs={faiss_gpus}): "
            "install a CUDA torch and faiss-gpu",
            file=sys.stderr,
        )
        return 1
    try:
        if args.write:  # a missing file or marker fails now, not after minutes of measuring
            if not Path(args.write).is_file():
                raise ConfigError(f"no such document: {args.write} (--write)")
            replace_block(Path(args.write).read_text(encoding="utf-8"), "")
        result = run(quick=args.quick)
        if args.write:
            write_doc(args.write, result)
            _log(f"wrote the figures into {args.write}")
    except RayRagError as exc:  # a user's mistake: one line, as the rayrag CLI does
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else format_block(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
