"""Top-k routed mixture of SwiGLU experts: router, sorted dispatch, aux losses, routing stats.

Follows Mixtral (Jiang et al. 2024, "Mixtral of Experts") and mistral-inference's `moe.py`
for the block: a linear router, float32 softmax, top-k, renormalise the k weights, cast
back, SwiGLU experts. From Switch Transformer (Fedus et al. 2021) come the load-balancing
loss `E * sum_e f_e * P_e`, multiplicative router jitter, the capacity factor and
float32 ("selective precision") routing; from ST-MoE (Zoph et al. 2022) the router z-loss
`mean(logsumexp(logits)^2)`. The dispatch follows megablocks (Gale et al. 2023) and
torchtitan: sort the token-slots by expert so each expert's rows are one contiguous slice,
then run every expert at once with one grouped matmul (`torch._grouped_mm`) per projection,
or a loop over the slices where that kernel does not run (checked once per device, dtype and
width, at run time).

Capacity (training only): expert e keeps at most `ceil(capacity_factor * T * k / E)`
token-slots. Slots are prioritised GShard-style: every token's first choice before any
token's second choice, then by token order, so overflow drops second choices first. A
dropped slot contributes nothing (the block's residual carries the token). In eval the
layer is dropless.

A decode step at batch 1 sends one token per forward, where the sort, bincount and scatter
of the dispatch cost more than the experts' matmuls. In eval on CPU (reading the k choices
to the host is then free), `MoELayer` sends a lone token straight through its k experts with
plain `F.linear`, as mistral-inference does: each expert sees one row either way, and the
choices are weighted and summed by the same expression, so the result is bit for bit the
sorted dispatch's. (From two tokens on, an expert chosen twice gets a two-row matmul in the
sorted dispatch, which may round differently from two one-row ones: those keep the sort.)
The aux losses and `RoutingStats` are computed from the router's output only when read
(`MoEOutput`), so a forward that never reads them (decoding) pays neither the ops nor the
copy to the host.

    >>> layer = MoELayer(d_model=64, ffn_dim=128, n_experts=8, top_k=2)
    >>> y, out = layer(torch.randn(2, 5, 64))          # y (2, 5, 64)
    >>> loss = task_loss + 0.01 * out.aux_loss + 0.001 * out.z_loss
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from rayrag.errors import ConfigError

DISPATCHES = ("auto", "grouped_mm", "loop")

# (device type, device index, dtype, in width, out width) -> does torch._grouped_mm run here,
# forward and backward, and agree with the loop? Probed once per key, per process.
_GROUPED_MM_VERDICT: dict[tuple, bool] = {}


@dataclass
class RoutingStats:
    """What one MoE layer's router did in one forward. Numbers only, never token content."""

    # (E,) float32: share of token-slots routed to each expert (sums to 1)
    token_share: torch.Tensor
    entropy: float  # entropy of token_share / log(E), in [0, 1]; 1 = perfectly even
    drop_rate: float  # dropped token-slots / all token-slots (0 in eval: dropless)
    max_violation: float  # (max load - mean load) / mean load
    dropped: int
    tokens: int

    def to_dict(self) -> dict:
        return {
            "token_share": [round(float(s), 6) for s in self.token_share.tolist()],
            "entropy": self.entropy,
            "drop_rate": self.drop_rate,
            "max_violation": self.max_violation,
            "dropped": self.dropped,
            "tokens": self.tokens,
        }


@dataclass(eq=False)
class MoEOutput:
    """What one MoE layer's router did in one forward.

    `aux_loss`, `z_loss` and `stats` are pure functions of these fields, computed on first
    read and cached (with autograd, when the forward ran with it): a caller that never reads
    them, such as the decode loop, pays nothing for them.
    """

    router_logits: torch.Tensor  # (T, E) float32
    indices: torch.Tensor  # (T, k) int64
    weights: torch.Tensor  # (T, k) in the input dtype
    tokens: int
    dropped_slots: torch.Tensor | int = 0  # token-slots dropped by capacity (training only)
    routed_counts: torch.Tensor | None = None  # (E,) int64, when the dispatch already counted

    @property
    def expert_counts(self) -> torch.Tensor:
        """(E,) int64 token-slots routed to each expert, before capacity drops, on device."""
        if self.routed_counts is None:
            self.routed_counts = torch.bincount(
                self.indices.reshape(-1), minlength=self.router_logits.shape[-1]
            )
        return self.routed_counts

    @cached_property
    def stats(self) -> RoutingStats:
        return routing_stats(self.expert_counts, self.dropped_slots, self.tokens)

    @cached_property
    def aux_loss(self) -> torch.Tensor:
        """Scalar, load_balancing_loss (uncoefficiented)."""
        return load_balancing_loss(self.router_logits, self.indices, self.router_logits.shape[-1])

    @cached_property
    def z_loss(self) -> torch.Tensor:
        """Scalar, router_z_loss (uncoefficiented)."""
        return router_z_loss(self.router_logits)


class Router(nn.Module):
    """Linear gate; float32 softmax over experts, top-k, renormalised, cast back (Mixtral).

    `renormalize=False` keeps the k full-softmax probabilities as they are (Qwen2-MoE and
    OLMoE, HF `norm_topk_prob=False`): their weights then sum to less than 1. Renormalising
    the top k of a softmax is the softmax over the top-k logits, so Mixtral is the default.

    >>> weights, indices, logits = Router(64, 8, 2)(
    ...     torch.randn(10, 64)
    ... )  # (10, 2), (10, 2), (10, 8)
    """

    def __init__(
        self,
        d_model: int,
        n_experts: int,
        top_k: int,
        jitter: float = 0.0,
        renormalize: bool = True,
    ):
        super().__init__()
        if not 0 < top_k <= n_experts:
            raise ConfigError(
                f"experts_per_token must be in 1..n_experts={n_experts}, got {top_k} "
                "(--generator.experts-per-token)"
            )
        if not 0.0 <= jitter < 1.0:
            raise ConfigError(
                f"router_jitter must be in [0, 1), got {jitter} (--generator.router-jitter)"
            )
        self.n_experts, self.top_k, self.jitter = n_experts, top_k, jitter
        self.renormalize = renormalize
        # Mixtral key: block_sparse_moe.gate.weight
        self.gate = nn.Linear(d_model, n_experts, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (T, d) -> weights (T, k) in x.dtype, indices (T, k) int64, logits (T, E) float32."""
        if self.training and self.jitter > 0:
            # Switch: multiplicative uniform noise on the router input explores other experts.
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        # The whole router runs in float32: bf16 logits flip near-tied top-k choices (Switch).
        # Autocast would cast the linear back to bf16 whatever its inputs are, so it is off here.
        with torch.autocast(x.device.type, enabled=False):
            logits = F.linear(x.float(), self.gate.weight.float())  # (T, E)
            probs = logits.softmax(dim=-1)  # (T, E)
        weights, indices = probs.topk(self.top_k, dim=-1)  # (T, k), (T, k)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights.to(x.dtype), indices, logits


class SwiGLU(nn.Module):
    """A dense SwiGLU FFN, `w2(silu(w1 x) * w3 x)`: the shared expert and the bench's baseline."""

    def __init__(self, d_model: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden_dim, bias=False)  # gate proj
        self.w3 = nn.Linear(d_model, hidden_dim, bias=False)  # up proj
        self.w2 = nn.Linear(hidden_dim, d_model, bias=False)  # down proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient dense: `_grouped_mm`'s backward
    rejects the stride-0 gradients that `y.sum().backward()` produces."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def _grouped_linear(x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """x (N, in) grouped by expert, weight (E, out, in) nn.Linear layout -> (N, out)."""
    return torch._grouped_mm(x, weight.transpose(-2, -1), offs=offsets)  # (E, in, out) view


def _loop_linear(x: torch.Tensor, weight: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """The same as `_grouped_linear`, one matmul per expert's contiguous slice."""
    # unbind once: indexing weight[e] per expert would make autograd allocate and add a
    # full (E, out, in) gradient for every expert (measured: docs/DECISIONS.md).
    experts = weight.unbind(0)
    pieces = [F.linear(rows, experts[e]) for e, rows in enumerate(x.split(counts)) if rows.shape[0]]
    return torch.cat(pieces) if pieces else x.new_zeros((0, weight.shape[1]))


def grouped_mm_runs(device: torch.device, dtype: torch.dtype, d_model: int, ffn_dim: int) -> bool:
    """Whether `torch._grouped_mm` runs forward and backward here and matches the loop.

    Probed once per (device, dtype, widths) on a tiny problem with an empty and an odd-sized
    group; any exception (missing op, unsupported dtype or arch, misaligned width) = False."""
    key = (device.type, device.index, dtype, d_model, ffn_dim)
    if key not in _GROUPED_MM_VERDICT:
        _GROUPED_MM_VERDICT[key] = _probe_grouped_mm(device, dtype, d_model, ffn_dim)
    return _GROUPED_MM_VERDICT[key]


def _probe_grouped_mm(device: torch.device, dtype: torch.dtype, d_model: int, ffn_dim: int) -> bool:
    if not hasattr(torch, "_grouped_mm"):
        return False
    counts = [3, 0, 5]
    gen = torch.Generator().manual_seed(0)
    try:
        # The first forward may come under inference_mode or no_grad (serving); the probe
        # still needs autograd to check the backward.
        with torch.inference_mode(False), torch.enable_grad():
            x = torch.randn(sum(counts), d_model, generator=gen).to(device, dtype).requires_grad_()
            w_up = torch.randn(len(counts), ffn_dim, d_model, generator=gen).div(d_model**0.5)
            w_down = torch.randn(len(counts), d_model, ffn_dim, generator=gen).div(ffn_dim**0.5)
            w_up, w_down = (w.to(device, dtype).requires_grad_() for w in (w_up, w_down))
            # (E,) group ends
            offsets = torch.tensor(counts, device=device).cumsum(0).to(torch.int32)
            # Both projections' layouts: (N, d) -> (N, ffn) -> (N, d).
            y = _ContiguousGrad.apply(
                _grouped_linear(_grouped_linear(x, w_up, offsets), w_down, offsets)
            )
            y.float().sum().backward()
            x_ref, up_ref, down_ref = (t.detach().float() for t in (x, w_up, w_down))
            y_ref = _loop_linear(_loop_linear(x_ref, up_ref, counts), down_ref, counts)  # (N, d)
            error = (y.detach().float() - y_ref).abs().max().item()
            return bool(
                all(t.grad is not None for t in (x, w_up, w_down))
                and error < 0.05 * (y_ref.abs().max().item() + 1.0)
            )
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return False


class SwiGLUExperts(nn.Module):
    """E SwiGLU experts as stacked weights in nn.Linear (out, in) layout.

    Expert j is `w2[j] @ (silu(w1[j] @ x) * (w3[j] @ x))`.

    >>> experts = SwiGLUExperts(n_experts=4, d_model=64, ffn_dim=128)
    >>> y = experts.forward_sorted(x_sorted, counts)   # rows grouped by expert, counts (4,)
    """

    def __init__(self, n_experts: int, d_model: int, ffn_dim: int, dispatch: str = "auto"):
        super().__init__()
        if dispatch not in DISPATCHES:
            raise ConfigError(
                f"dispatch must be one of {DISPATCHES}, got {dispatch!r} (--generator.dispatch)"
            )
        self.n_experts, self.d_model, self.ffn_dim, self.dispatch = (
            n_experts,
            d_model,
            ffn_dim,
            dispatch,
        )
        self.w1 = nn.Parameter(torch.empty(n_experts, ffn_dim, d_model))  # (E, ffn, d) gate proj
        self.w3 = nn.Parameter(torch.empty(n_experts, ffn_dim, d_model))  # (E, ffn, d) up proj
        self.w2 = nn.Parameter(torch.empty(n_experts, d_model, ffn_dim))  # (E, d, ffn) down proj
        self.last_dispatch: str | None = None  # "grouped_mm" or "loop": what the last call ran
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Each expert initialised as an nn.Linear of its shape: U(-1/sqrt(in), 1/sqrt(in)).
        for w in (self.w1, self.w3, self.w2):
            bound = 1.0 / math.sqrt(w.shape[-1])
            nn.init.uniform_(w, -bound, bound)

    def use_grouped_mm(self, x: torch.Tensor) -> bool:
        if self.dispatch == "loop":
            return False
        runs = grouped_mm_runs(x.device, x.dtype, self.d_model, self.ffn_dim)
        if self.dispatch == "grouped_mm" and not runs:
            raise ConfigError(
                f"dispatch='grouped_mm' but torch._grouped_mm does not run for {x.dtype} "
                f"on {x.device}; use 'auto' or 'loop' (--generator.dispatch)"
            )
        return runs

    def forward_sorted(self, x_sorted: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x_sorted (N, d), rows grouped by expert id ascending; counts (E,) int64 -> (N, d)."""
        assert x_sorted.shape[-1] == self.d_model and counts.shape == (self.n_experts,)
        w1, w3, w2 = (w.to(x_sorted.dtype) for w in (self.w1, self.w3, self.w2))
        if x_sorted.shape[0] and self.use_grouped_mm(x_sorted):
            offsets = counts.cumsum(0).to(torch.int32)  # (E,) end row of each expert's group
            try:
                h = F.silu(_grouped_linear(x_sorted, w1, offsets)) * _grouped_linear(
                    x_sorted, w3, offsets
                )
                y = _ContiguousGrad.apply(_grouped_linear(h, w2, offsets))  # (N, d)
                self.last_dispatch = "grouped_mm"
                return y
            except RuntimeError:
                # A shape the probe did not cover; remember, and take the loop from now on.
                _GROUPED_MM_VERDICT[
                    (
                        x_sorted.device.type,
                        x_sorted.device.index,
                        x_sorted.dtype,
                        self.d_model,
                        self.ffn_dim,
                    )
                ] = False
        sizes = counts.tolist()
        # (N, ffn)
        h = F.silu(_loop_linear(x_sorted, w1, sizes)) * _loop_linear(x_sorted, w3, sizes)
        self.last_dispatch = "loop"
        return _loop_linear(h, w2, sizes)  # (N, d)


def load_balancing_loss(
    router_logits: torch.Tensor, indices: torch.Tensor, n_experts: int
) -> torch.Tensor:
    """Switch Transformer's auxiliary loss, `E * sum_e f_e * P_e` (1.0 when perfectly balanced).

    f_e: share of the T*k token-slots the router sent to e (before capacity drops; not
    differentiable), P_e: mean router probability of e over tokens (carries the gradient).
    router_logits (T, E), indices (T, k) -> scalar float32."""
    probs = router_logits.float().softmax(dim=-1)  # (T, E)
    slots = indices.reshape(-1)  # (T*k,)
    f = torch.bincount(slots, minlength=n_experts).float() / max(slots.numel(), 1)  # (E,)
    p = probs.mean(dim=0)  # (E,)
    return n_experts * (f * p).sum()


def router_z_loss(router_logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's router z-loss, `mean_t logsumexp(logits_t)^2`: keeps router logits small."""
    return torch.logsumexp(router_logits.float(), dim=-1).square().mean()


def routing_stats(counts: torch.Tensor, dropped: int | torch.Tensor, tokens: int) -> RoutingStats:
    """Stats from per-expert routed slot counts (E,) (before drops) and the dropped slot count."""
    # One small device-to-host copy instead of a sync per number.
    host = torch.cat(
        [
            counts.detach().reshape(-1),
            torch.as_tensor(dropped, device=counts.device).reshape(1).to(counts.dtype),
        ]
    ).cpu()  # (E + 1,)
    counts_cpu, dropped_n = host[:-1].double(), int(host[-1])
    n_experts, slots = counts_cpu.numel(), max(int(counts_cpu.sum()), 1)
    share = counts_cpu / slots  # (E,)
    entropy = 1.0
    if n_experts > 1:  # one expert cannot be imbalanced
        entropy = float(-(share * share.clamp_min(1e-300).log()).sum() / math.log(n_experts))
    mean_load = 1.0 / n_experts
    violation = float((share.max() - mean_load) / mean_load) if int(counts_cpu.sum()) else 0.0
    return RoutingStats(
        token_share=share.float(),
        entropy=min(max(entropy, 0.0), 1.0),
        drop_rate=dropped_n / slots,
        max_violation=violation,
        dropped=dropped_n,
        tokens=tokens,
    )


class MoELayer(nn.Module):
    """Router + SwiGLU experts (+ optional always-on shared expert), sorted dispatch (a lone
    token in eval on CPU goes straight through its k experts; the same numbers).

    `shared_expert_gate=True` scales the shared expert per token by sigmoid(w . x), a
    one-output linear of the layer's input (Qwen2-MoE's `shared_expert_gate`). The shared
    expert and its gate run where the layer runs, also when `expert_fn` sends the routed
    experts elsewhere (expert parallelism).

    >>> layer = MoELayer(d_model=64, ffn_dim=128, n_experts=8, top_k=2, capacity_factor=1.25)
    >>> y, out = layer(x)        # x (B, S, 64) -> y (B, S, 64); out.stats, out.aux_loss, out.z_loss
    """

    def __init__(
        self,
        d_model: int,
        ffn_dim: int,
        n_experts: int,
        top_k: int,
        capacity_factor: float = 1.25,
        jitter: float = 0.0,
        shared_expert_dim: int = 0,
        dispatch: str = "auto",
        renormalize: bool = True,
        shared_expert_gate: bool = False,
    ):
        super().__init__()
        if capacity_factor <= 0:
            raise ConfigError(
                f"capacity_factor must be > 0, got {capacity_factor} (--generator.capacity-factor)"
            )
        if shared_expert_dim < 0:
            raise ConfigError(
                f"shared_expert_dim must be >= 0, got {shared_expert_dim} "
                "(--generator.shared-expert-dim)"
            )
        self.d_model, self.n_experts, self.top_k = d_model, n_experts, top_k
        self.capacity_factor = capacity_factor
        if shared_expert_gate and not shared_expert_dim:
            raise ConfigError(
                "shared_expert_gate needs a shared expert (--generator.shared-expert-dim > 0)"
            )
        self.gate = Router(d_model, n_experts, top_k, jitter, renormalize)
        self.experts = SwiGLUExperts(n_experts, d_model, ffn_dim, dispatch)
        self.shared_expert = SwiGLU(d_model, shared_expert_dim) if shared_expert_dim else None
        # HF key: mlp.shared_expert_gate.weight (1, d)
        self.shared_expert_gate = nn.Linear(d_model, 1, bias=False) if shared_expert_gate else None
        # Optional replacement for experts.forward_sorted with the same signature
        # (x_sorted, counts) -> y_sorted: expert parallelism plugs in here.
        self.expert_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def capacity(self, tokens: int) -> int:
        """Token-slots each expert keeps in training: ceil(capacity_factor * T * k / E)."""
        return math.ceil(self.capacity_factor * tokens * self.top_k / self.n_experts)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, MoEOutput]:
        """x (B, S, d) -> (y (B, S, d), MoEOutput)."""
        shape = x.shape
        x_flat = x.reshape(-1, self.d_model)  # (T, d)
        tokens = x_flat.shape[0]
        weights, indices, logits = self.gate(x_flat)  # (T, k), (T, k), (T, E)
        if self._direct(x_flat):
            y = self._forward_direct(x_flat, weights, indices)  # (T, d)
            out = MoEOutput(router_logits=logits, indices=indices, weights=weights, tokens=tokens)
        else:
            y, counts, dropped = self._forward_sorted(x_flat, weights, indices)  # (T, d)
            out = MoEOutput(
                router_logits=logits,
                indices=indices,
                weights=weights,
                tokens=tokens,
                dropped_slots=dropped,
                routed_counts=counts,
            )
        if self.shared_expert is not None:
            y = y + self.shared(x_flat)
        return y.view(shape), out  # (B, S, d)

    def shared(self, x_flat: torch.Tensor) -> torch.Tensor:
        """The shared expert's output for x (T, d) -> (T, d), gated when the layer has a gate."""
        y = self.shared_expert(x_flat)
        if self.shared_expert_gate is not None:
            y = torch.sigmoid(self.shared_expert_gate(x_flat)) * y  # (T, 1) * (T, d)
        return y

    def _direct(self, x_flat: torch.Tensor) -> bool:
        """Whether this forward takes the one-token path: one token, eval (dropless), CPU, the
        stock experts (not a hook, not a subclass such as LoRA's with its own forward_sorted),
        and no `dispatch='grouped_mm'` demanded."""
        return (
            x_flat.shape[0] == 1
            and not self.training
            and x_flat.device.type == "cpu"
            and self.expert_fn is None
            and self.experts.dispatch != "grouped_mm"
            and type(self.experts).forward_sorted is SwiGLUExperts.forward_sorted
        )

    def _forward_direct(
        self, x_flat: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor
    ) -> torch.Tensor:
        """One token through its k experts, no sort: x (1, d), weights, indices (1, k) -> (1, d).

        The k outputs are weighted and summed by the sorted dispatch's own expression (a
        low-precision sum rounds once, not per add)."""
        experts = self.experts
        w1, w3, w2 = (w.to(x_flat.dtype) for w in (experts.w1, experts.w3, experts.w2))  # (E, ., .)
        outs = [
            F.linear(F.silu(F.linear(x_flat, w1[e])) * F.linear(x_flat, w3[e]), w2[e])
            for e in indices[0].tolist()
        ]  # k of (1, d)
        y_slots = torch.cat(outs).view(self.top_k, 1, self.d_model)  # (k, T=1, d)
        return (y_slots * weights.t().unsqueeze(-1)).sum(dim=0)  # (1, d)

    def _forward_sorted(
        self, x_flat: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The sorted dispatch: x (T, d) -> y (T, d), routed counts (E,), dropped slots ()."""
        tokens, k, n_experts = x_flat.shape[0], self.top_k, self.n_experts
        # Slot s = j*T + t is token t's j-th choice: all first choices precede all second
        # choices, so a stable sort by expert gives GShard's drop priority for free.
        slot_expert = indices.t().reshape(-1)  # (k*T,)
        slot_token = torch.arange(tokens, device=x_flat.device).repeat(k)  # (k*T,)
        order = torch.argsort(slot_expert, stable=True)  # (k*T,) slots grouped by expert
        counts = torch.bincount(slot_expert, minlength=n_experts)  # (E,) routed, before drops
        kept_counts, dropped = counts, counts.new_zeros(())
        if self.training:
            capacity = self.capacity(tokens)
            starts = counts.cumsum(0) - counts  # (E,) first sorted position of each expert
            # (k*T,)
            rank = torch.arange(order.numel(), device=x_flat.device) - starts[slot_expert[order]]
            order = order[rank < capacity]  # (N,) kept slots, still grouped by expert
            kept_counts = counts.clamp(max=capacity)  # (E,)
            dropped = (counts - kept_counts).sum()

        x_sorted = x_flat.index_select(0, slot_token[order])  # (N, d)
        expert_fn = self.expert_fn or self.experts.forward_sorted
        y_sorted = expert_fn(x_sorted, kept_counts)  # (N, d)
        # Unsort into slot order (dropped slots stay 0), then weight and sum the k choices:
        # no scatter-add, so no atomics: deterministic on GPU too.
        # (k*T, d)
        y_slots = y_sorted.new_zeros((k * tokens, self.d_model)).index_copy(0, order, y_sorted)
        y_slots = y_slots.view(k, tokens, self.d_model)  # (k, T, d)
        y = (y_slots * weights.t().unsqueeze(-1)).sum(dim=0)  # (T, d)
        return y, counts, dropped


def naive_moe_forward(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """The textbook MoE (HF Mixtral's loop): for each choice j, for each expert, a boolean mask.

    Dropless, so it equals `layer(x)[0]` in eval mode, or in training when nothing overflows.
    x (B, S, d) -> (B, S, d). The reference the fast dispatch is tested and benched against."""
    x_flat = x.reshape(-1, layer.d_model)  # (T, d)
    weights, indices, _ = layer.gate(x_flat)  # (T, k), (T, k)
    y = torch.zeros_like(x_flat)  # (T, d)
    # Per-expert views taken once, as per-expert nn.Linear modules would hold them (indexing
    # the stack inside the loop would also allocate a full-stack gradient per use).
    experts = list(
        zip(
            *(
                w.to(x.dtype).unbind(0)
                for w in (layer.experts.w1, layer.experts.w3, layer.experts.w2)
            ),
            strict=True,
        )
    )
    for j in range(layer.top_k):
        for e in range(layer.n_experts):
            mask = indices[:, j] == e  # (T,)
            if not mask.any():
                continue
            token_ids = mask.nonzero().squeeze(1)  # (n,)
            w1, w3, w2 = experts[e]
            rows = x_flat[token_ids]  # (n, d)
            expert_out = F.linear(F.silu(F.linear(rows, w1)) * F.linear(rows, w3), w2)  # (n, d)
            y = y.index_add(0, token_ids, expert_out * weights[token_ids, j, None])
    if layer.shared_expert is not None:
        y = y + layer.shared(x_flat)
    return y.view(x.shape)  # (B, S, d)
