"""Expert parallelism: the MoE generator's experts on Ray actors (GShard/Switch-style EP).

`ShardedGenerator` keeps what every token needs on the caller (embeddings, attention, the
routers, norms, a shared expert and the output head) and spreads the routed experts over N
`ExpertShard` actors, each holding a contiguous slice of experts for every layer, read from
the same checkpoint (Lepikhin et al. 2020, GShard; Fedus et al. 2021, Switch: experts are
the part that grows with E, the rest is replicated). A shard reads only its own experts'
tensors from the files, so its memory is its share of the experts. At each MoE layer the
layer's own dispatch sorts the token-slots by expert (`MoELayer.expert_fn`, the hook EP
plugs into); the rows of each shard's experts are one contiguous block of that order, so
each shard gets one message per layer with its block and its experts' counts (prefill and
batched decode alike), runs the same `SwiGLUExperts.forward_sorted`, and the blocks are put
back in order; the layer then weights and sums them with the router weights as it always
does. The numbers are the local model's up to float reassociation in the matmuls (checked <=
1e-4 in tests).

Transport (`generator.ep_transport`): a Ray Compiled Graph (`ray.dag`, `experimental_compile`:
pre-allocated shared-memory channels between this process and the shards, no per-call task
submission) with one input per shard, or plain actor calls (one `forward.remote` per shard
and layer). Either way a shard's message is one `pack`ed bytes payload (the layer, its rows,
its experts' counts, the rows as float32): Ray serialises flat bytes far faster than a
tuple of tensors. A graph that
fails to compile falls back to actor calls, and says so in `transport` and `compile_error`;
calls are serialised by a lock (a compiled graph's channels take one execution at a time).

Placement: shards ask for `num_gpus=1` each when the cluster has a GPU per shard, else
`generator.shard_num_cpus` of a CPU, so a laptop runs the same code. The caller's own copy of the
experts is freed: a model too large for one device still serves.

Faults: a shard that dies (node loss, OOM, `ray.kill`) is noticed on the next call
(`RayActorError`), recreated from the checkpoint, and the call is retried once; a second
failure raises `ShardFailure`, which the serve graph turns into a 503. With the compiled
transport the graph is torn down, dead shards recreated, and the graph compiled again.

Statistics: token-slots sent to each shard, summed since construction (`shard_load`), their
imbalance ((max - mean) / mean), restarts, and the seconds of expert arithmetic each shard
reports with its reply (`compute_s`: what is not transport). The Generator deployment turns
them into Serve metrics; each answer carries its own per-shard share (`shard_share`).

    >>> generator = ShardedGenerator("ckpt/", num_shards=2)
    >>> out = generator.model(input_ids)          # the same MoETransformer API, experts remote
    >>> generate(generator.model, prompts, max_new_tokens=32, eos_id=tok.eos_id, pad_id=0)
"""

from __future__ import annotations

import functools
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from torch import nn

from rayrag.errors import RayRagError, ShardFailure
from rayrag.generator.checkpoint import load_checkpoint, load_experts, serving_dtype
from rayrag.generator.model import MoETransformer
from rayrag.generator.moe import SwiGLUExperts

CPU_PER_SHARD = 0.5  # generator.shard_num_cpus's default: two shards and the caller fit 2 cores
TRANSPORTS = ("compiled", "actor")
__all__ = ["ExpertShard", "ShardFailure", "ShardedGenerator", "expert_ranges"]


def expert_ranges(n_experts: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) expert slices, as even as possible: 8 over 3 -> (0,3) (3,6) (6,8)."""
    if not 1 <= num_shards <= n_experts:
        raise RayRagError(
            f"num_shards must be between 1 and n_experts={n_experts}, got {num_shards} "
            "(generator.num_shards)"
        )
    base, extra = divmod(n_experts, num_shards)
    ranges, lo = [], 0
    for s in range(num_shards):
        hi = lo + base + (1 if s < extra else 0)
        ranges.append((lo, hi))
        lo = hi
    return ranges


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0


def slice_experts(experts: SwiGLUExperts, lo: int, hi: int) -> SwiGLUExperts:
    """Experts lo..hi-1 as their own module (copies: the full tensors can then be freed)."""
    part = SwiGLUExperts(hi - lo, experts.d_model, experts.ffn_dim, experts.dispatch)
    with torch.no_grad():
        for name in ("w1", "w3", "w2"):
            getattr(part, name).copy_(getattr(experts, name)[lo:hi])
    return part.to(experts.w1.device, experts.w1.dtype)


REQUEST = struct.Struct("<iii")  # layer, rows, experts; then counts (int64), then rows (float32)
REPLY = struct.Struct("<iid")  # rows, width, seconds of arithmetic; then rows (float32)


def pack(layer: int, rows: torch.Tensor, counts: torch.Tensor) -> bytes:
    """One shard's message for one layer: a header, its experts' counts, its rows as float32.

    One flat bytes payload per shard is the cheapest thing to put through a channel: Ray's
    serialiser spends far longer on a tuple of tensors, and pickle on a tuple of arrays (both
    measured); both transports carry the same payload, so `rayrag bench ep` compares the
    transports alone. float32 is exact for every dtype the model runs in (fp32, bf16, fp16)."""
    r = rows.detach().to("cpu", torch.float32).contiguous().numpy()
    c = counts.to("cpu", torch.int64).contiguous().numpy()
    return b"".join((REQUEST.pack(layer, r.shape[0], c.shape[0]), c.tobytes(), r.tobytes()))


def unpack_request(payload: bytes, width: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    layer, n, experts = REQUEST.unpack_from(payload)
    counts = np.frombuffer(payload, dtype=np.int64, count=experts, offset=REQUEST.size)
    rows = np.frombuffer(
        payload, dtype=np.float32, count=n * width, offset=REQUEST.size + 8 * experts
    )
    return layer, torch.from_numpy(rows.reshape(n, width).copy()), torch.from_numpy(counts.copy())


def pack_reply(rows: torch.Tensor, seconds: float) -> bytes:
    r = rows.detach().to("cpu", torch.float32).contiguous().numpy()
    return REPLY.pack(r.shape[0], r.shape[1], seconds) + r.tobytes()


def unpack(payload: bytes) -> tuple[torch.Tensor, float]:
    """A shard's reply -> (its output rows, the seconds its expert arithmetic took)."""
    n, width, seconds = REPLY.unpack_from(payload)
    rows = np.frombuffer(payload, dtype=np.float32, count=n * width, offset=REPLY.size)
    return torch.from_numpy(rows.reshape(n, width).copy()), seconds


@ray.remote
class ExpertShard:
    """Experts [lo, hi) of every MoE layer, from a checkpoint: only their tensors are read
    (`load_experts`), so a shard's memory is its share of the experts, not the checkpoint."""

    def __init__(
        self,
        checkpoint: str,
        lo: int,
        hi: int,
        device: str | None = None,
        threads: int = 1,
        dtype: str | None = None,
    ) -> None:
        torch.set_num_threads(threads)
        config, self.experts = load_experts(
            checkpoint, lo, hi, device=device, dtype=getattr(torch, dtype) if dtype else None
        )
        self.lo, self.hi = lo, hi
        self.width = config.d_model

    def forward(self, payload: bytes) -> bytes:
        """A `pack`ed block of one layer's sorted rows (N_s, d) -> (outputs (N_s, d), seconds the
        expert arithmetic took), as `pack_reply` writes it."""
        layer, rows, counts = unpack_request(payload, self.width)
        experts = self.experts[layer]
        device, dtype = experts.w1.device, experts.w1.dtype
        started = time.perf_counter()
        with torch.inference_mode():
            out = experts.forward_sorted(rows.to(device, dtype), counts.to(device)).to(
                "cpu", torch.float32
            )
        return pack_reply(out, time.perf_counter() - started)

    def info(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "layers": len(self.experts)}

    def peak_rss_bytes(self) -> int:
        """This shard process's peak resident memory so far (`peak_rss_bytes`)."""
        return peak_rss_bytes()


class ShardedGenerator:
    """A `MoETransformer` (as `.model`) whose expert FFNs run on `ExpertShard` actors."""

    def __init__(
        self,
        checkpoint: str | Path,
        num_shards: int,
        *,
        use_gpu: bool | None = None,
        num_cpus: float = CPU_PER_SHARD,
        transport: str = "compiled",
        dtype: str = "auto",
    ) -> None:
        if transport not in TRANSPORTS:
            raise RayRagError(
                f"ep_transport must be one of {', '.join(TRANSPORTS)}, got {transport!r} "
                "(generator.ep_transport)"
            )
        self.checkpoint = str(Path(checkpoint).resolve())
        # The routed experts are the shards': neither read nor allocated here.
        self.model: MoETransformer = load_checkpoint(self.checkpoint, experts=False).eval()
        config = self.model.config
        self.ranges = expert_ranges(config.n_experts, num_shards)
        # The cluster's GPUs, not this process's: a Serve replica holds none itself, its shards do
        # (one each, as `shard_placement` reserves them).
        self.use_gpu = cluster_gpus() >= num_shards if use_gpu is None else use_gpu
        self.actor_options: dict[str, Any] = (
            {"num_gpus": 1, "num_cpus": num_cpus} if self.use_gpu else {"num_cpus": num_cpus}
        )
        # The experts' dtype on the shards (decoding.dtype; auto = bfloat16 on GPU shards). Rows
        # travel as float32 either way, and the combine runs in the caller's dtype.
        self.shard_dtype = serving_dtype(dtype, "cuda" if self.use_gpu else "cpu")
        self.shards = [self._start(lo, hi) for lo, hi in self.ranges]
        ray.get([shard.info.remote() for shard in self.shards])  # loaded before the first request
        self.shard_load = [0] * num_shards  # token-slots sent to each shard
        self.compute_s = [
            0.0
        ] * num_shards  # seconds of expert arithmetic on each shard (not transport)
        self.restarts = 0
        self._lock = threading.Lock()
        d_model = self.model.config.d_model
        self._empty = [
            pack(0, torch.empty(0, d_model), torch.zeros(hi - lo, dtype=torch.long))
            for lo, hi in self.ranges
        ]
        self.transport, self._compiled, self.compile_error = transport, None, ""
        if transport == "compiled":
            try:
                self._compile()
            except Exception as exc:  # noqa: BLE001 - an unsupported setup: actor calls still work
                self.transport, self.compile_error = "actor", type(exc).__name__
        for i, layer in enumerate(self.model.model.layers):
            moe = layer.block_sparse_moe
            moe.expert_fn = functools.partial(self._dispatch, i)
            _free(moe.experts)  # the shards hold them now

    def _start(self, lo: int, hi: int) -> Any:
        device = "cuda" if self.use_gpu else "cpu"
        return ExpertShard.options(**self.actor_options).remote(
            self.checkpoint, lo, hi, device, dtype=str(self.shard_dtype).removeprefix("torch.")
        )

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
        blocks = {
            s: pack(layer, x_sorted[start:end], counts[self.ranges[s][0] : self.ranges[s][1]])
            for s, start, end in calls
        }
        with self._lock:  # one dispatch at a time: a compiled graph's channels are not thread-safe
            results = self._call(blocks)
        for s, start, end in calls:
            rows, seconds = unpack(results[s])
            y[start:end] = rows.to(device, y.dtype)
            self.compute_s[s] += seconds
        return y

    def _compile(self) -> None:
        from ray.dag import InputNode, MultiOutputNode

        with InputNode() as inp:  # one input per shard: its packed block
            dag = MultiOutputNode(
                [shard.forward.bind(inp[s]) for s, shard in enumerate(self.shards)]
            )
        self._compiled = dag.experimental_compile()

    def _call(self, blocks: dict[int, bytes]) -> dict[int, bytes]:
        if self.transport == "compiled":
            return self._call_compiled(blocks)
        refs = {s: self.shards[s].forward.remote(payload) for s, payload in blocks.items()}
        results: dict[int, bytes] = {}
        for s, ref in refs.items():
            try:
                results[s] = ray.get(ref)
            except ray.exceptions.RayActorError:
                results[s] = self._recover(s, blocks[s])
        return results

    def _call_compiled(self, blocks: dict[int, bytes]) -> dict[int, bytes]:
        """One execution of the compiled graph; every shard runs, idle ones on an empty block.
        A failure tears the graph down, recreates dead shards, recompiles and retries once."""
        args = [blocks.get(s) or self._empty[s] for s in range(len(self.ranges))]
        for attempt in (0, 1):
            try:
                if self._compiled is None:
                    self._rebuild()
                outputs = ray.get(self._compiled.execute(*args))
                return {s: outputs[s] for s in blocks}
            except Exception as exc:  # noqa: BLE001 - a dead shard surfaces as several error types
                self._teardown()
                if attempt:
                    raise ShardFailure(
                        "an expert shard failed again after the compiled graph was rebuilt"
                    ) from exc
        raise AssertionError("unreachable")

    def _teardown(self) -> None:
        compiled, self._compiled = self._compiled, None
        if compiled is not None:
            try:
                compiled.teardown()
            except Exception:  # noqa: BLE001 - a graph with a dead actor may not tear down cleanly
                pass

    def _rebuild(self) -> None:
        """Recreate dead shards from the checkpoint, then compile the graph again."""
        for s, (lo, hi) in enumerate(self.ranges):
            try:
                ray.get(self.shards[s].info.remote(), timeout=30)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                ray.kill(self.shards[s])  # a hung shard must not hold its resources
                self.shards[s] = self._start(lo, hi)
                self.restarts += 1
        ray.get([shard.info.remote() for shard in self.shards])
        self._compile()

    def _recover(self, s: int, payload: bytes) -> bytes:
        """Recreate shard s from the checkpoint and retry its call once."""
        lo, hi = self.ranges[s]
        self.shards[s] = self._start(lo, hi)
        self.restarts += 1
        try:
            return ray.get(self.shards[s].forward.remote(payload))
        except ray.exceptions.RayActorError as exc:
            raise ShardFailure(
                f"expert shard {s} (experts {lo}-{hi - 1}) failed again after a restart"
            ) from exc

    def load_imbalance(self) -> float:
        """(max - mean) / mean of the token-slots each shard has received; 0 when balanced."""
        total = sum(self.shard_load)
        if not total:
            return 0.0
        mean = total / len(self.shard_load)
        return (max(self.shard_load) - mean) / mean

    def shutdown(self) -> None:
        self._teardown()
        for shard in self.shards:
            ray.kill(shard)
        self.shards = []


def peak_rss_bytes() -> int:
    """The calling process's peak resident set size in bytes (Linux: VmHWM; else getrusage)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS bytes, Linux kB


def _free(experts: nn.Module) -> None:
    """Drop the local expert tensors (keep the module
    and its shapes for the layer's bookkeeping)."""
    for name in ("w1", "w3", "w2"):
        setattr(experts, name, nn.Parameter(torch.empty(0), requires_grad=False))
