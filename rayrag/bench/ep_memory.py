"""Bench `ep-memory`: peak resident memory of each expert-parallel process vs the checkpoint.

`rayrag bench ep-memory [--quick] --json`. Writes one random bfloat16 MoE checkpoint to a
temp dir (full size: about 1 B parameters, most of them in the routed experts), then
measures, each in a fresh process so no peak leaks from one into the next:

    bare            python + torch + rayrag imported, nothing loaded: every process's floor
    load_checkpoint the whole model read (what the driver does, and what each shard did
                    before it read only its own experts)
    load_experts    one shard's share of the experts read on its own (`load_experts`)
    sharded         a real `ShardedGenerator` over SHARDS actors (Ray local, actor
                    transport, bfloat16 shards) after one forward: the driver's peak and
                    each shard's, as each process reports it (`peak_rss_bytes`: VmHWM),
                    and the floor of a Ray actor that imports the same and loads nothing

Figures are bytes; `over_checkpoint` divides a peak minus its process's floor (`bare`; for
the shards, the actor floor) by the checkpoint's size on disk: 1.0 = one copy of the
checkpoint, 1 / SHARDS = a shard's share of it (a little less: the experts are not all of it).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHARDS = 2
FULL = {
    "vocab_size": 32000,
    "d_model": 1024,
    "n_layers": 12,
    "n_heads": 16,
    "n_kv_heads": 4,
    "ffn_dim": 1408,
    "n_experts": 16,
}
QUICK = {
    "vocab_size": 512,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "ffn_dim": 96,
    "n_experts": 4,
}


def write_checkpoint(path: Path, plan: dict[str, int]) -> int:
    """A random bfloat16 checkpoint at `path` in our (Mixtral) format; returns its parameters.

    The model is built on the meta device (no memory) only for its names and shapes; each
    tensor is drawn and written as bfloat16, so the writer never holds a float32 copy."""
    import torch
    from safetensors.torch import save_file

    from rayrag.config import GeneratorConfig
    from rayrag.generator.checkpoint import CONFIG_FILE, WEIGHTS_FILE, hf_config, to_hf_state_dict
    from rayrag.generator.model import MoETransformer

    config = GeneratorConfig(
        **plan, experts_per_token=2, max_seq_len=256, adaptive_softmax_cutoffs=()
    )
    with torch.device("meta"):
        model = MoETransformer(config).to(torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    tensors = {
        key: (
            torch.ones(t.shape)
            if t.dim() == 1
            else torch.randn(t.shape, generator=gen) / math.sqrt(t.shape[-1])
        ).to(torch.bfloat16)
        for key, t in to_hf_state_dict(model).items()
    }
    path.mkdir(parents=True)
    save_file(tensors, path / WEIGHTS_FILE, metadata={"format": "pt"})
    (path / CONFIG_FILE).write_text(json.dumps(hf_config(model), indent=2), encoding="utf-8")
    return sum(t.numel() for t in tensors.values())


def _child(mode: str, args: dict[str, Any]) -> dict[str, Any]:
    """What one fresh process measures (run through `python -m rayrag.bench.ep_memory`)."""
    import torch

    from rayrag.generator.checkpoint import load_checkpoint, load_experts
    from rayrag.generator.sharded import ShardedGenerator, peak_rss_bytes

    torch.set_num_threads(1)
    if mode == "write":
        return {"parameters": write_checkpoint(Path(args["path"]), args["plan"])}
    if mode == "load_checkpoint":
        load_checkpoint(args["path"])
    elif mode == "load_experts":
        load_experts(args["path"], args["lo"], args["hi"])
    elif mode == "sharded":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            generator = ShardedGenerator(
                args["path"], args["shards"], transport="actor", dtype="bfloat16"
            )
            ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                generator.model(ids)
            shards = ray.get([shard.peak_rss_bytes.remote() for shard in generator.shards])
            generator.shutdown()
            floor = _floor_actor().options(num_cpus=0.5).remote()
            actor_floor = ray.get(floor.peak.remote())
        finally:
            ray.shutdown()
        return {"driver": peak_rss_bytes(), "shards": shards, "actor_floor": actor_floor}
    return {"peak": peak_rss_bytes()}


def _floor_actor():
    import ray

    @ray.remote
    class Floor:
        """A Ray actor that imports what an ExpertShard imports and loads nothing."""

        def peak(self) -> int:
            from rayrag.generator.sharded import peak_rss_bytes

            return peak_rss_bytes()

    return Floor


def _in_fresh_process(mode: str, **args: Any) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "rayrag.bench.ep_memory", mode, json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if done.returncode:
        raise RuntimeError(f"ep-memory {mode} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rayrag-ep-memory-") as tmp:
        path = Path(tmp) / "ckpt"
        parameters = _in_fresh_process("write", path=str(path), plan=plan)["parameters"]
        size = sum(f.stat().st_size for f in path.iterdir())
        bare = _in_fresh_process("bare")["peak"]
        full = _in_fresh_process("load_checkpoint", path=str(path))["peak"]
        hi = math.ceil(plan["n_experts"] / SHARDS)
        part = _in_fresh_process("load_experts", path=str(path), lo=0, hi=hi)["peak"]
        sharded = _in_fresh_process("sharded", path=str(path), shards=SHARDS)

    def over(peak: int, floor: int = bare) -> float:
        return round((peak - floor) / size, 3)

    return {
        "bench": "ep-memory",
        "quick": quick,
        "plan": plan,
        "shards": SHARDS,
        "parameters": parameters,
        "checkpoint_bytes": size,
        "peak_rss_bytes": {
            "bare": bare,
            "load_checkpoint": full,
            "load_experts": part,
            "ep_driver": sharded["driver"],
            "ep_shards": sharded["shards"],
            "actor_floor": sharded["actor_floor"],
        },
        "over_checkpoint": {
            "load_checkpoint": over(full),
            "load_experts": over(part),
            "ep_driver": over(sharded["driver"]),
            "ep_shards": [over(peak, sharded["actor_floor"]) for peak in sharded["shards"]],
        },
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})))
