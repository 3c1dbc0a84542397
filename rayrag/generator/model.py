"""The generator: a decoder-only transformer whose feed-forward layers are mixtures of experts.

Follows Mixtral (Jiang et al. 2024; HF `MixtralForCausalLM`): pre-norm RMSNorm, rotary
position embeddings in the rotate-half convention, grouped-query attention with a KV cache,
and a top-k routed SwiGLU MoE in every block. Submodule names mirror HF Mixtral so a
Mixtral state dict maps 1:1 (see `checkpoint.py`). The output layer is an adaptive softmax
over the frequency-sorted vocabulary (Grave et al. 2017) or a full softmax tied to the input
embedding. The other HF MoE families it loads (Qwen2-MoE, Qwen3-MoE, OLMoE; see
`hf_families.py`) differ in a few options (routing weights, attention biases, QK-norm, clip,
head width, a gated shared expert), each a `GeneratorConfig` field whose default is Mixtral's.

A one-token decode step at small widths is bound by per-op overhead, not FLOPs, so the
forward does no work nobody asked for: RoPE cos/sin come from a float32 table built once per
(device, dtype) and rotate-half is one roll; a single query without padding attends to all
cached keys with no mask built; grouped-query attention hands the KV heads to SDPA
(`enable_gqa`) instead of repeating them; float32 RMSNorm is one fused kernel; the aux
losses and routing statistics are computed only when read. Each gives the numbers of what it
replaces, bit for bit where the tests check (tests/generator/test_model.py).

    >>> model = MoETransformer(GeneratorConfig(vocab_size=128, d_model=64, n_heads=4,
    ...     n_kv_heads=2, n_layers=2, ffn_dim=96, n_experts=4, adaptive_softmax_cutoffs=()))
    >>> out = model(input_ids, attention_mask=mask, labels=input_ids)
    >>> loss = model.total_loss(out); [s.entropy for s in out.routing]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from rayrag.config import GeneratorConfig
from rayrag.generator.adaptive import AdaptiveSoftmaxHead, FullSoftmaxHead
from rayrag.generator.copy import CopyContext, CopyHead, CopyMixture, copy_dense, mix_log_prob
from rayrag.generator.moe import MoELayer, MoEOutput, RoutingStats

IGNORE_INDEX = -100


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), computed in float32 as HF Mixtral does."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:
            # One fused kernel instead of eight ops; the same float32 numbers, bit for bit
            # (checked in tests/generator/test_model.py). Other dtypes keep HF's cast order.
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (B, 1, S, head_dim) for integer positions (B, S).

    The frequencies are rebuilt per call in float32 (head_dim / 2 numbers) rather than kept
    as a buffer, so `model.to(torch.bfloat16)` cannot round them.
    """
    # (hd/2,)
    inv_freq = 1.0 / (
        theta
        ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    )
    freqs = positions.float()[..., None] * inv_freq  # (B, S, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, S, hd): rotate-half layout, as HF
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def rope_table(
    max_len: int, head_dim: int, theta: float, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin_folded (max_len, head_dim) for positions 0..max_len-1, for `apply_rope_folded`.

    cos is `rope_cos_sin`'s (the same float32 products and cos, elementwise, then cast to
    `dtype`); sin_folded is its sin with rotate-half's sign folded in: (-sin, sin) halves."""
    cos, sin = rope_cos_sin(torch.arange(max_len, device=device)[None], head_dim, theta, dtype)
    cos, sin = cos[0, 0], sin[0, 0]  # (max_len, hd) each
    half = head_dim // 2
    return cos, torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


def apply_rope_folded(x: torch.Tensor, cos: torch.Tensor, sin_folded: torch.Tensor) -> torch.Tensor:
    """`apply_rope` in two fewer ops: rotate_half(x) * sin = roll(x) * sin_folded, bit for bit
    (negation is exact), with roll = one copy instead of chunk, neg and cat."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin_folded


class KVCache:
    """Keys and values of every layer for incremental decoding.

    Per layer k, v are (B, n_kv_heads, S_past, head_dim), stored after RoPE. The caller keeps
    the attention mask for past + new tokens (B, S_past + S_new), as with HF.
    """

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.copy: CopyContext | None = None  # the pointer's keys and proposals, with a copy head

    @property
    def seq_len(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def __len__(self) -> int:
        return len(self.keys)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's k, v (B, Hkv, S_new, hd) to `layer`; return the full k, v."""
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        elif layer < len(self.keys):
            self.keys[layer] = torch.cat((self.keys[layer], k), dim=2)  # (B, Hkv, S_past+S_new, hd)
            self.values[layer] = torch.cat((self.values[layer], v), dim=2)
        else:
            raise AssertionError(f"KVCache.update: layer {layer} before layer {len(self.keys)}")
        return self.keys[layer], self.values[layer]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only batch rows `rows` (e.g. drop finished sequences, reorder beams)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        if self.copy is not None:
            self.copy = self.copy.select(rows)

    def drop_leading(self, n: int) -> None:
        """Forget the first n positions of every row (columns that are padding in all rows)."""
        self.keys = [k[:, :, n:] for k in self.keys]  # (B, Hkv, S_past - n, hd)
        self.values = [v[:, :, n:] for v in self.values]
        if self.copy is not None:
            self.copy = self.copy.drop_leading(n)


def head_dim_of(config: GeneratorConfig) -> int:
    """The attention head width: `generator.head_dim`, else d_model / n_heads."""
    return config.head_dim or config.d_model // config.n_heads


class Attention(nn.Module):
    """Grouped-query self-attention (Ainslie et al. 2023) with RoPE, via SDPA.

    The defaults are Mixtral's. The options other HF MoE families need (hf_families.py):
    `bias` on q/k/v ("qkv", Qwen2-MoE) or on all four projections ("all"); `qk_norm`, an
    RMSNorm of queries and keys before RoPE, per head over head_dim ("head", Qwen3-MoE) or
    over the whole projection ("full", OLMoE: all heads share one scale vector and one mean
    square); `clip_qkv`, a clamp of q, k and v after the norm (OLMoE). `head_dim` may differ
    from d_model / n_heads (Qwen3-MoE). The KV cache holds keys after norm and RoPE.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int,
        rope_theta: float,
        head_dim: int | None = None,
        bias: str = "none",
        qk_norm: str = "none",
        clip_qkv: float | None = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if bias not in ("none", "qkv", "all") or qk_norm not in ("none", "head", "full"):
            raise ValueError(f"attention bias {bias!r} / qk_norm {qk_norm!r} not known")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = head_dim or d_model // n_heads
        self.rope_theta = rope_theta
        self.qk_norm, self.clip_qkv = qk_norm, clip_qkv
        qkv_bias = bias != "none"
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias == "all")
        if qk_norm != "none":  # HF keys: self_attn.q_norm.weight, self_attn.k_norm.weight
            per_head = qk_norm == "head"
            self.q_norm = RMSNorm(self.head_dim if per_head else n_heads * self.head_dim, eps)
            self.k_norm = RMSNorm(self.head_dim if per_head else n_kv_heads * self.head_dim, eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin_folded: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        """x (B, S, d); cos, sin_folded (B or 1, 1, S, hd) from `rope_table` -> (B, S, d)."""
        b, s, _ = x.shape
        if self.qk_norm == "none" and self.clip_qkv is None:  # Mixtral: the fewest ops
            q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
            k = self.k_proj(x).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
            v = self.v_proj(x).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        else:
            q, k, v = self._normed_qkv(x)
        # q (B, H, S, hd); k, v (B, Hkv, S, hd)
        q, k = apply_rope_folded(q, cos, sin_folded), apply_rope_folded(k, cos, sin_folded)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, Hkv, S_total, hd)
        # Each KV head serves n_heads / n_kv_heads query heads in HF's repeat_kv order; SDPA
        # does that grouping itself instead of materialising repeated k, v. No mask means
        # plain causal, or one query that sees every key (a decode step without padding).
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None and s > 1,
            enable_gqa=self.n_heads != self.n_kv_heads,
        )
        out = out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim)  # (B, S, H*hd)
        return self.o_proj(out)

    def _normed_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v with qk_norm and clip_qkv applied, in HF's order (norm, clamp, split heads):
        x (B, S, d) -> q (B, H, S, hd), k, v (B, Hkv, S, hd)."""
        b, s, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # (B, S, H*hd), (B, S, Hkv*hd) x2
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        if self.clip_qkv is not None:
            c = self.clip_qkv
            q, k, v = q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c)
        q = q.view(b, s, self.n_heads, self.head_dim)  # (B, S, H, hd)
        k = k.view(b, s, self.n_kv_heads, self.head_dim)  # (B, S, Hkv, hd)
        v = v.view(b, s, self.n_kv_heads, self.head_dim)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)  # over hd, each head apart
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


class DecoderLayer(nn.Module):
    """Pre-norm attention then pre-norm MoE, each with a residual (Mixtral's block)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.self_attn = Attention(
            config.d_model,
            config.n_heads,
            config.n_kv_heads,
            config.rope_theta,
            head_dim=config.head_dim,
            bias=config.attention_bias,
            qk_norm=config.qk_norm,
            clip_qkv=config.clip_qkv,
            eps=config.rms_norm_eps,
        )
        self.block_sparse_moe = MoELayer(
            config.d_model,
            config.ffn_dim,
            config.n_experts,
            config.experts_per_token,
            capacity_factor=config.capacity_factor,
            jitter=config.router_jitter,
            shared_expert_dim=config.shared_expert_dim,
            dispatch=config.dispatch,
            renormalize=config.router_renormalize,
            shared_expert_gate=config.shared_expert_gate,
        )
        self.input_layernorm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin_folded: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        real_tokens: torch.Tensor | None,
    ):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin_folded, mask, cache, layer)
        normed = self.post_attention_layernorm(h)
        if real_tokens is None:
            y, moe = self.block_sparse_moe(normed)
        else:
            # Route only real tokens: padding must not take expert capacity or skew the
            # load-balancing loss and routing statistics. Pad positions get no MoE update.
            d = normed.shape[-1]
            flat = normed.reshape(-1, d)  # (B*S, d)
            # (1, T_real, d)
            y_real, moe = self.block_sparse_moe(flat.index_select(0, real_tokens)[None])
            y = torch.zeros_like(flat).index_copy(0, real_tokens, y_real[0]).view_as(normed)
        return h + y, moe


class QuestionMatch(nn.Module):
    """DrQA's exact-match feature (Chen et al. 2017, "Reading Wikipedia to Answer Open-Domain
    Questions"): a learned vector added to each context token whose id the question also has.

    The reader's layout is context <sep> question <sep> answer cue; a context token that
    repeats a question token is where the answer is likely near, and a small model trained
    for minutes finds that far sooner from one flag than by learning to compare tokens in
    attention. Only a prompt's first forward carries it: answer tokens (after the second
    <sep>) never get it, in training or decoding, so a KV cache stays exact."""

    def __init__(self, d_model: int, sep_token: int) -> None:
        super().__init__()
        self.sep_token = sep_token
        self.weight = nn.Parameter(torch.zeros(d_model))  # starts as a no-op
        # A second flag for a token that continues a question bigram ("Harbor Security" in
        # "Harbor Security Hub"): a name matched as a whole outweighs a shared word.
        self.bigram = nn.Parameter(torch.zeros(d_model))

    def flags(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) bool each: context positions (before the first <sep>) whose token is in the
        question, and those whose token and its predecessor are a bigram of the question."""
        seps = (input_ids == self.sep_token).long().cumsum(dim=1)  # (B, S) seps at or before j
        context = seps == 0
        question = (seps == 1) & (input_ids != self.sep_token)  # (B, S)
        same = (input_ids[:, :, None] == input_ids[:, None, :]) & question[
            :, None, :
        ]  # (B, S_ctx, S_q)
        unigram = context & same.any(dim=-1)
        pair = torch.zeros_like(same)
        # x[j-1:j+1] == x[q-1:q+1], q-1 in question too
        pair[:, 1:, 1:] = same[:, 1:, 1:] & same[:, :-1, :-1]
        bigram = context & pair.any(dim=-1)
        return unigram, bigram

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        unigram, bigram = self.flags(input_ids)
        # (B, S, d)
        return (
            x
            + unigram[..., None].to(x.dtype) * self.weight.to(x.dtype)
            + bigram[..., None].to(x.dtype) * self.bigram.to(x.dtype)
        )


class MixtralBody(nn.Module):
    """Embeddings, blocks and final norm: HF's `model.*` prefix."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.rms_norm_eps)
        # HF's initializer_range: N(1) embeddings would make a tied head's logits explode.
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        for layer in self.layers:
            for proj in (
                layer.self_attn.q_proj,
                layer.self_attn.k_proj,
                layer.self_attn.v_proj,
                layer.self_attn.o_proj,
            ):
                nn.init.normal_(proj.weight, std=0.02)
                if proj.bias is not None:
                    nn.init.zeros_(proj.bias)


@dataclass(eq=False)
class ModelOutput:
    """A forward's results. `aux_loss`, `z_loss` and `routing` are computed from `router` on
    first read (then cached), with autograd when the forward had it."""

    logits: torch.Tensor | None  # (B, S, V): raw logits (full head) or log-probs (adaptive head)
    loss: torch.Tensor | None  # mean next-token NLL over labels != -100
    router: list[MoEOutput] = field(default_factory=list)  # one per layer
    past_key_values: KVCache | None = None
    hidden_states: torch.Tensor | None = None  # (B, S, d) after the final norm
    copy: CopyContext | None = None  # what the pointer can point at, with a copy head

    @cached_property
    def aux_loss(self) -> torch.Tensor:
        """Scalar float32: sum over layers of the load-balancing loss."""
        return self._layer_sum("aux_loss")

    @cached_property
    def z_loss(self) -> torch.Tensor:
        """Scalar float32: sum over layers of the router z-loss."""
        return self._layer_sum("z_loss")

    @cached_property
    def routing(self) -> list[RoutingStats]:
        """One RoutingStats per layer (one small copy to the host per layer)."""
        return [moe.stats for moe in self.router]

    @property
    def expert_counts(self) -> list[torch.Tensor]:
        """Per layer, (E,) int64 token-slots routed to each expert, on device: no host copy."""
        return [moe.expert_counts for moe in self.router]

    def _layer_sum(self, name: str) -> torch.Tensor:
        device = self.router[0].router_logits.device if self.router else None
        total = torch.zeros((), dtype=torch.float32, device=device)
        for moe in self.router:
            total = total + getattr(moe, name).float()
        return total


class MoETransformer(nn.Module):
    """Mixtral-style MoE decoder with an adaptive or tied full softmax head.

    >>> model = MoETransformer(cfg, token_order=torch.as_tensor(tok.token_order(texts)))
    >>> out = model(ids, attention_mask=mask, use_cache=True)       # prefill
    >>> out = model(next_ids[:, None], attention_mask=torch.cat([mask, ones], 1),
    ...             past_key_values=out.past_key_values, use_cache=True)
    """

    def __init__(self, config: GeneratorConfig, token_order: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.model = MixtralBody(config)
        if config.adaptive_softmax_cutoffs:
            self.lm_head: nn.Module = AdaptiveSoftmaxHead(
                config.d_model,
                config.vocab_size,
                tuple(config.adaptive_softmax_cutoffs),
                div_value=config.adaptive_div_value,
                token_order=token_order,
            )
        else:
            tied = self.model.embed_tokens.weight if config.tie_embeddings else None
            self.lm_head = FullSoftmaxHead(config.d_model, config.vocab_size, tied_weight=tied)
        self.copy_head = (
            CopyHead(config.d_model, config.copy_dim, config.copy_until_token)
            if config.copy_head
            else None
        )
        self.question_match = (
            QuestionMatch(config.d_model, config.copy_until_token)
            if config.question_match
            else None
        )
        # (device, dtype) -> RoPE cos, sin tables (max_seq_len, head_dim), built on first use.
        self._rope_tables: dict[
            tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]
        ] = {}

    @property
    def head(self) -> nn.Module:
        return self.lm_head

    @property
    def is_adaptive(self) -> bool:
        return isinstance(self.lm_head, AdaptiveSoftmaxHead)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        labels: torch.Tensor | None = None,
        compute_logits: bool = True,
        prefix_lengths: torch.Tensor | None = None,
    ) -> ModelOutput:
        """input_ids (B, S); attention_mask (B, S_past + S), 1 = real, 0 = left padding.

        labels (B, S) are aligned with input_ids and shifted here; -100 and padded positions
        are ignored. A `past_key_values` passed in is extended in place; it is returned only
        with use_cache=True (a fresh one is made if none is passed). compute_logits=False
        skips the (B, S, V) output (training with the adaptive head then touches only the
        clusters its targets live in).

        With `generator.attention: prefix` the first `prefix_lengths[b]` positions of row b
        (counted from the row's first column, padding included) see each other both ways;
        everything after is causal. Unset, the prefix is what precedes the first label (the
        prompt of a reader example; 0 for language modelling) or, without labels, the whole
        input of a first forward (a prompt's prefill). Causal models ignore it.
        """
        b, s = input_ids.shape
        past = past_key_values.seq_len if past_key_values is not None else 0
        if past + s > self.config.max_seq_len:
            raise ValueError(
                f"sequence length {past + s} exceeds max_seq_len "
                f"{self.config.max_seq_len} (generator.max_seq_len)"
            )
        if attention_mask is not None and attention_mask.shape != (b, past + s):
            raise ValueError(
                f"attention_mask must be (batch, past + new) = {(b, past + s)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        cache = (
            (past_key_values if past_key_values is not None else KVCache())
            if use_cache
            else past_key_values
        )
        device = input_ids.device

        x = self.model.embed_tokens(input_ids)  # (B, S, d)
        if self.question_match is not None and past == 0:
            x = self.question_match(x, input_ids)
        prefix = self._prefix(prefix_lengths, labels, attention_mask, b, s, past, device)
        mask, positions, real_tokens = self._mask_and_positions(
            attention_mask, b, s, past, device, prefix
        )
        cos, sin_folded = self._rope(positions, past, s, x)

        router: list[MoEOutput] = []
        for i, layer in enumerate(self.model.layers):
            x, moe = layer(x, cos, sin_folded, mask, cache, i, real_tokens)
            router.append(moe)
        hidden = self.model.norm(x)  # (B, S, d)

        ctx = None
        if self.copy_head is not None:
            # (B, S_total)
            keep = (
                attention_mask.to(device=device, dtype=torch.bool)
                if attention_mask is not None
                else torch.ones(b, past + s, dtype=torch.bool, device=device)
            )
            ctx = self.copy_head.context(
                hidden, input_ids, keep, cache.copy if cache is not None else None
            )
            if cache is not None:
                cache.copy = ctx
        logits = self._logits(hidden, ctx, past) if compute_logits else None
        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask[:, past:] == 0, IGNORE_INDEX)
            loss = self._next_token_loss(hidden, labels, logits, ctx, past)
        return ModelOutput(
            logits=logits,
            loss=loss,
            router=router,
            past_key_values=cache if use_cache else None,
            hidden_states=hidden,
            copy=ctx,
        )

    def step_head(self, out: ModelOutput) -> nn.Module | CopyMixture:
        """What picks the token after `out`'s last position: the output head, or with a copy
        head the head + pointer mixture there (same greedy / topk / log_prob)."""
        if self.copy_head is None:
            return self.lm_head
        return CopyMixture(self.lm_head, self.copy_head, out.hidden_states[:, -1], out.copy)

    def total_loss(self, out: ModelOutput) -> torch.Tensor:
        """loss + aux_loss_coef * load balancing + z_loss_coef * router z-loss."""
        if out.loss is None:
            raise ValueError("total_loss needs an output computed with labels=")
        return (
            out.loss
            + self.config.aux_loss_coef * out.aux_loss
            + self.config.z_loss_coef * out.z_loss
        )

    def _rope(
        self, positions: torch.Tensor | None, past: int, s: int, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin_folded (B or 1, 1, S, head_dim) from the table;
        positions None = past..past+S-1."""
        key = (x.device, x.dtype)
        if key not in self._rope_tables:
            # Not a buffer: kept out of the state dict, and `.to(bfloat16)` cannot round it.
            with torch.inference_mode(False), torch.no_grad():  # usable by a later training forward
                self._rope_tables[key] = rope_table(
                    self.config.max_seq_len,
                    head_dim_of(self.config),
                    self.config.rope_theta,
                    x.device,
                    x.dtype,
                )
        cos, sin = self._rope_tables[key]  # (max_len, hd) each
        if positions is None:  # the same positions in every row: a view, no gather
            return cos[past : past + s][None, None], sin[past : past + s][
                None, None
            ]  # (1, 1, S, hd)
        return cos[positions][:, None], sin[positions][:, None]  # (B, 1, S, hd)

    def _prefix(
        self, prefix_lengths, labels, attention_mask, b, s, past, device
    ) -> torch.Tensor | None:
        """(B,) int64 bidirectional prefix per row,
        in columns from the row's start; None = causal."""
        if self.config.attention != "prefix":
            return None
        if prefix_lengths is not None:
            prefix = torch.as_tensor(prefix_lengths, device=device).long().reshape(-1)
            if prefix.numel() == 1 and b > 1:
                prefix = prefix.expand(b)
            if prefix.shape != (b,):
                raise ValueError(
                    f"prefix_lengths must hold one length per row ({b}), got {tuple(prefix.shape)}"
                )
            return prefix
        if labels is not None:
            labelled = labels != IGNORE_INDEX  # (B, S)
            if attention_mask is not None:
                labelled = labelled & (attention_mask[:, past:] != 0)
            first = labelled.long().argmax(dim=1)  # (B,) first labelled column, 0 when none
            return past + torch.where(labelled.any(dim=1), first, torch.full_like(first, s))
        if past == 0:
            return torch.full((b,), s, dtype=torch.long, device=device)
        return None  # later steps of a decode: the new tokens are the answer, causal

    def _mask_and_positions(self, attention_mask, b, s, past, device, prefix=None):
        """SDPA mask (B, 1, S, S_total) bool, RoPE positions (B, S), real-token flat indices.

        Without an attention mask the positions are past..past+S-1 in every row: returned as
        None (see `_rope`). The mask is None when SDPA needs none: no past and no prefix
        (plain causal, its is_causal fast path) or a single query, which sees every key.
        `prefix` (B,): columns before it see each other in both directions (prefix LM)."""
        bidirectional = prefix is not None and s > 1 and bool((prefix > past).any())
        if attention_mask is None:
            if (past == 0 or s == 1) and not bidirectional:
                return None, None, None
            positions = None
            keep = torch.ones(b, past + s, dtype=torch.bool, device=device)  # (B, S_total)
        else:
            keep = attention_mask.to(device=device, dtype=torch.bool)  # (B, S_total)
            # Left padding: count real tokens so a padded row gets its unpadded positions.
            positions = (keep.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, S)
        q_pos = torch.arange(past, past + s, device=device)  # (S,) absolute query index
        k_pos = torch.arange(past + s, device=device)  # (S_total,)
        causal = (k_pos[None, :] <= q_pos[:, None])[None]  # (1, S, S_total)
        if bidirectional:
            in_prefix_q = q_pos[None, :] < prefix[:, None]  # (B, S)
            in_prefix_k = k_pos[None, :] < prefix[:, None]  # (B, S_total)
            causal = causal | (in_prefix_q[:, :, None] & in_prefix_k[:, None, :])  # (B, S, S_total)
        mask = causal & keep[:, None, :]  # (B, S, S_total)
        # A pad query would see no key at all and SDPA would return NaN; let it see itself.
        # Its output is never read by a real token (pad keys are hidden from them).
        mask = mask | (k_pos[None, :] == q_pos[:, None])[None]
        real_tokens = None
        if attention_mask is not None:
            real_tokens = keep[:, past:].reshape(-1).nonzero().squeeze(1)  # (T_real,)
            if real_tokens.numel() in (0, b * s):
                real_tokens = None
        return mask[:, None], positions, real_tokens

    def _logits(self, hidden: torch.Tensor, ctx: CopyContext | None, past: int) -> torch.Tensor:
        b, s, d = hidden.shape
        flat = hidden.reshape(b * s, d)  # (B*S, d)
        if ctx is not None:  # the mixture's log-probs
            attn = self.copy_head.attention(hidden, ctx, first_query=past)  # (B, S, 2 * S_total)
            p_copy = copy_dense(attn, ctx.proposals, self.config.vocab_size)  # (B, S, V)
            vocab_logp = self.lm_head.log_prob(flat).view(b, s, -1)  # (B, S, V)
            return mix_log_prob(vocab_logp, self.copy_head.gate_logit(hidden, attn), p_copy)
        out = self.lm_head.log_prob(flat) if self.is_adaptive else self.lm_head.logits(flat)
        return out.view(b, s, -1)  # (B, S, V)

    def _next_token_loss(
        self, hidden, labels, logits, ctx: CopyContext | None, past: int
    ) -> torch.Tensor:
        targets = labels[:, 1:].reshape(-1)  # (B*(S-1),)
        valid = (targets != IGNORE_INDEX).nonzero().squeeze(1)  # (N,)
        if ctx is not None:
            return self._copy_loss(hidden, targets, valid, ctx, past)
        if logits is not None and not self.is_adaptive:
            rows = logits[:, :-1].reshape(-1, logits.shape[-1]).index_select(0, valid)  # (N, V)
            nll = F.cross_entropy(rows.float(), targets.index_select(0, valid), reduction="none")
        else:
            d = hidden.shape[-1]
            rows = hidden[:, :-1].reshape(-1, d).index_select(0, valid)  # (N, d)
            nll = self.lm_head(rows, targets.index_select(0, valid))  # (N,)
        # No valid target gives 0 (not NaN) so a fully masked batch cannot poison training.
        return nll.float().sum() / max(valid.numel(), 1)

    def _copy_loss(self, hidden, targets, valid, ctx: CopyContext, past: int) -> torch.Tensor:
        """Mean NLL of the head + pointer mixture at the target positions (see copy.py)."""
        b, s, d = hidden.shape
        target = targets.index_select(0, valid)  # (N,)
        rows = hidden[:, :-1].reshape(-1, d).index_select(0, valid)  # (N, d)
        vocab_logp = -self.lm_head(rows, target)  # (N,)
        # (B, S-1, 2 * S_total)
        attn = self.copy_head.attention(hidden[:, :-1], ctx, first_query=past)
        attn = attn.reshape(-1, attn.shape[-1]).index_select(0, valid)  # (N, 2 * S_total)
        # (N, 2 * S_total) each row's own
        proposals = ctx.proposals.index_select(0, valid // (s - 1))
        p_copy = (attn * (proposals == target[:, None])).sum(-1)  # (N,)
        nll = -mix_log_prob(vocab_logp, self.copy_head.gate_logit(rows, attn), p_copy)
        return nll.float().sum() / max(valid.numel(), 1)
