"""Expert parallelism: the MoE generator's experts on Ray actors (GShard/Switch-style EP).

`ShardedGenerator` keeps what every token needs on the caller (embeddings, attention, the
routers, norms and the output head) and spreads the experts over N `ExpertShard` actors,
each holding a contiguous slice of experts for every layer, loaded from the same checkpoint
(Lepikhin et al. 2020, GShard; Fedus et al. 2021, Switch: experts are the part that grows
with E, the rest is replicated). At each MoE layer the layer's own dispatch sorts the
token-slots by expert (`MoELayer.expert_fn`, the hook EP plugs into); the rows of each
shard's experts are one contiguous block of that order, so each shard gets one message per
layer with its block and its experts' counts (prefill and batched decode alike), runs the
same `SwiGLUExperts.forward_sorted`, and the blocks are put back in order; the layer then
weights and sums them with the router weights as it always does. The numbers are the local
model's up to float reassociation in the matmuls (checked <= 1e-4 in tests).

Transport (`generator.ep_transport`): a Ray Compiled Graph (`ray.dag`, `experimental_compile`:
pre-allocated shared-memory channels between this process and the shards, no per-call task
submission) with the layer index and every shard's block as its inputs, or plain actor
calls (one `forward.remote` per shard and layer). A graph that fails to compile falls back
to actor calls, and says so in `transport`.

Placement: shards ask for `num_gpus=1` each when there are GPUs (one shard per device), else
a fraction of a CPU, so a laptop runs the same code. The caller's own copy of the experts is
freed: a model too large for one device still serves.

Faults: a shard that dies (node loss, OOM, `ray.kill`) is noticed on the next call
(`RayActorError`), recreated from the checkpoint, and the call is retried once; a second
failure raises `ShardFailure`, which the serve graph turns into a 503.

Statistics: token-slots sent to each shard, summed since construction (`shard_load`), and
their imbalance ((max - mean) / mean), for the routing statistics and metrics.

    >>> generator = ShardedGenerator("ckpt/", num_shards=2)
    >>> out = generator.model(input_ids)          # the same MoETransformer API, experts remote
    >>> generate(generator.model, prompts, max_new_tokens=32, eos_id=tok.eos_id, pad_id=0)
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import ray
import torch
from torch import nn

from rayrag.errors import RayRagError
from rayrag.generator.checkpoint import load_checkpoint
from rayrag.generator.model import MoETransformer
from rayrag.generator.moe import SwiGLUExperts

CPU_PER_SHARD = 0.5  # fractional: two shards and the caller fit a 2-core machine
TRANSPORTS = ("compiled", "actor")


class ShardFailure(RayRagError):
    """An expert shard died and could not be brought back within one retry."""


def expert_ranges(n_experts: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) expert slices, as even as possible: 8 over 3 -> (0,3) (3,6) (6,8)."""
    if not 1 <= num_shards <= n_experts:
        raise RayRagError(f"num_shards must be between 1 and n_experts={n_experts}, got {num_shards} "
                          "(generator.num_shards)")
    base, extra = divmod(n_experts, num_shards)
    ranges, lo = [], 0
    for s in range(num_shards):
        hi = lo + base + (1 if s < extra else 0)
        ranges.append((lo, hi))
        lo = hi
    return ranges


def slice_experts(experts: SwiGLUExperts, lo: int, hi: int) -> SwiGLUExperts:
    """Experts lo..hi-1 as their own module (copies: the full tensors can then be freed)."""
    part = SwiGLUExperts(hi - lo, experts.d_model, experts.ffn_dim, experts.dispatch)
    with torch.no_grad():
        for name in ("w1", "w3", "w2"):
            getattr(part, name).copy_(getattr(experts, name)[lo:hi])
    return part.to(experts.w1.device, experts.w1.dtype)


@ray.remote
class ExpertShard:
    """Experts [lo, hi) of every MoE layer, from a checkpoint."""

    def __init__(self, checkpoint: str, lo: int, hi: int, device: str | None = None, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        model = load_checkpoint(checkpoint, device=device)
        self.lo, self.hi = lo, hi
        self.experts = [slice_experts(layer.block_sparse_moe.experts, lo, hi).eval() for layer in model.model.layers]
        del model

    def forward(self, layer: int, x_sorted: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """This shard's block of one layer's sorted rows (N_s, d), counts (hi - lo,) -> (N_s, d)."""
        experts = self.experts[layer]
        with torch.inference_mode():
            return experts.forward_sorted(x_sorted.to(experts.w1.device), counts.to(experts.w1.device)).cpu()

    def info(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "layers": len(self.experts)}


class ShardedGenerator:
    """A `MoETransformer` (as `.model`) whose expert FFNs run on `ExpertShard` actors."""

    def __init__(self, checkpoint: str | Path, num_shards: int, *, use_gpu: bool | None = None,
                 num_cpus: float = CPU_PER_SHARD, transport: str = "compiled") -> None:
        if transport not in TRANSPORTS:
            raise RayRagError(f"ep_transport must be one of {', '.join(TRANSPORTS)}, got {transport!r} "
                              "(generator.ep_transport)")
        self.checkpoint = str(Path(checkpoint).resolve())
        self.model: MoETransformer = load_checkpoint(self.checkpoint).eval()
        config = self.model.config
        self.ranges = expert_ranges(config.n_experts, num_shards)
        gpus = torch.cuda.device_count() if use_gpu is None else int(use_gpu)
        self.use_gpu = gpus > 0
        self.actor_options: dict[str, Any] = ({"num_gpus": 1, "num_cpus": num_cpus} if self.use_gpu
                                              else {"num_cpus": num_cpus})
        self.shards = [self._start(lo, hi) for lo, hi in self.ranges]
        ray.get([shard.info.remote() for shard in self.shards])  # loaded before the first request
        self.shard_load = [0] * num_shards  # token-slots sent to each shard
        self.restarts = 0
        self.transport, self._compiled = "actor", None
        if transport == "compiled":
            self._compile()
        for i, layer in enumerate(self.model.model.layers):
            moe = layer.block_sparse_moe
            moe.expert_fn = functools.partial(self._dispatch, i)
            _free(moe.experts)  # the shards hold them now

    def _start(self, lo: int, hi: int) -> Any:
        device = "cuda" if self.use_gpu else "cpu"
        return ExpertShard.options(**self.actor_options).remote(self.checkpoint, lo, hi, device)

    def _dispatch(self, layer: int, x_sorted: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """`MoELayer.expert_fn`: each shard's contiguous block of the sorted rows, one call each."""
        ends = counts.cumsum(0).tolist()  # end row of each expert's group
        device = x_sorted.device
        y = x_sorted.new_empty(x_sorted.shape)
        calls = []  # (shard index, start row, end row)
        for s, (lo, hi) in enumerate(self.ranges):
            start, end = (ends[lo - 1] if lo else 0), ends[hi - 1]
            if end > start:
                calls.append((s, start, end))
                self.shard_load[s] += end - start
        blocks = {s: (x_sorted[start:end].cpu(), counts[self.ranges[s][0]:self.ranges[s][1]].cpu())
                  for s, start, end in calls}
        results = self._call(layer, blocks)
        for s, start, end in calls:
            y[start:end] = results[s].to(device, y.dtype)
        return y

    def _compile(self) -> None:
        from ray.dag import InputNode, MultiOutputNode

        try:
            with InputNode() as inp:  # inputs: layer, then (rows, counts) per shard
                dag = MultiOutputNode([shard.forward.bind(inp[0], inp[1 + 2 * s], inp[2 + 2 * s])
                                       for s, shard in enumerate(self.shards)])
            self._compiled, self.transport = dag.experimental_compile(), "compiled"
        except Exception as exc:  # noqa: BLE001 - an unsupported setup: actor calls still work
            self._compiled, self.transport = None, "actor"
            self.compile_error = type(exc).__name__

    def _call(self, layer: int, blocks: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> dict[int, torch.Tensor]:
        if self._compiled is not None:
            return self._call_compiled(layer, blocks)
        refs = {s: self.shards[s].forward.remote(layer, x, c) for s, (x, c) in blocks.items()}
        results: dict[int, torch.Tensor] = {}
        for s, ref in refs.items():
            try:
                results[s] = ray.get(ref)
            except ray.exceptions.RayActorError:
                results[s] = self._recover(s, layer, *blocks[s])
        return results

    def _call_compiled(self, layer: int, blocks: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> dict[int, torch.Tensor]:
        """One execution of the compiled graph; every shard runs, idle ones on empty blocks."""
        args: list[Any] = [layer]
        for s, (lo, hi) in enumerate(self.ranges):
            x, c = blocks.get(s, (torch.empty(0, self.model.config.d_model), torch.zeros(hi - lo, dtype=torch.long)))
            args += [x, c]
        for attempt in (0, 1):
            try:
                outputs = ray.get(self._compiled.execute(*args))
                return {s: outputs[s] for s in blocks}
            except Exception as exc:  # noqa: BLE001 - a dead shard surfaces as several error types
                if attempt:
                    raise ShardFailure("an expert shard failed again after the compiled graph was rebuilt") from exc
                self._rebuild()
        raise AssertionError("unreachable")

    def _rebuild(self) -> None:
        """Tear the compiled graph down, recreate dead shards from the checkpoint, recompile."""
        self._compiled.teardown()
        for s, (lo, hi) in enumerate(self.ranges):
            try:
                ray.get(self.shards[s].info.remote(), timeout=30)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                self.shards[s] = self._start(lo, hi)
                self.restarts += 1
        ray.get([shard.info.remote() for shard in self.shards])
        self._compile()

    def _recover(self, s: int, layer: int, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Recreate shard s from the checkpoint and retry its call once."""
        lo, hi = self.ranges[s]
        self.shards[s] = self._start(lo, hi)
        self.restarts += 1
        try:
            return ray.get(self.shards[s].forward.remote(layer, x, counts))
        except ray.exceptions.RayActorError as exc:
            raise ShardFailure(f"expert shard {s} (experts {lo}-{hi - 1}) failed again after a restart") from exc

    def load_imbalance(self) -> float:
        """(max - mean) / mean of the token-slots each shard has received; 0 when balanced."""
        total = sum(self.shard_load)
        if not total:
            return 0.0
        mean = total / len(self.shard_load)
        return (max(self.shard_load) - mean) / mean

    def shutdown(self) -> None:
        if self._compiled is not None:
            self._compiled.teardown()
            self._compiled = None
        for shard in self.shards:
            ray.kill(shard)
        self.shards = []


def _free(experts: nn.Module) -> None:
    """Drop the local expert tensors (keep the module and its shapes for the layer's bookkeeping)."""
    for name in ("w1", "w3", "w2"):
        setattr(experts, name, nn.Parameter(torch.empty(0), requires_grad=False))
