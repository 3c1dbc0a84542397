"""The generator: a decoder-only transformer whose feed-forward layers are mixtures of experts.

Follows Mixtral (Jiang et al. 2024; HF `MixtralForCausalLM`): pre-norm RMSNorm, rotary
position embeddings in the rotate-half convention, grouped-query attention with a KV cache,
and a top-k routed SwiGLU MoE in every block. Submodule names mirror HF Mixtral so a
Mixtral state dict maps 1:1 (see `checkpoint.py`). The output layer is an adaptive softmax
over the frequency-sorted vocabulary (Grave et al. 2017) or a full softmax tied to the input
embedding.

    >>> model = MoETransformer(GeneratorConfig(vocab_size=128, d_model=64, n_heads=4,
    ...     n_kv_heads=2, n_layers=2, ffn_dim=96, n_experts=4, adaptive_softmax_cutoffs=()))
    >>> out = model(input_ids, attention_mask=mask, labels=input_ids)
    >>> loss = model.total_loss(out); [s.entropy for s in out.routing]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from rayrag.config import GeneratorConfig
from rayrag.generator.adaptive import AdaptiveSoftmaxHead, FullSoftmaxHead
from rayrag.generator.moe import MoELayer, RoutingStats

IGNORE_INDEX = -100


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), computed in float32 as HF Mixtral does."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (B, 1, S, head_dim) for integer positions (B, S).

    The frequencies are rebuilt per call in float32 (head_dim / 2 numbers) rather than kept
    as a buffer, so `model.to(torch.bfloat16)` cannot round them.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device,
                                             dtype=torch.float32) / head_dim))  # (hd/2,)
    freqs = positions.float()[..., None] * inv_freq  # (B, S, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, S, hd): rotate-half layout, as HF
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


class KVCache:
    """Keys and values of every layer for incremental decoding.

    Per layer k, v are (B, n_kv_heads, S_past, head_dim), stored after RoPE. The caller keeps
    the attention mask for past + new tokens (B, S_past + S_new), as with HF.
    """

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    @property
    def seq_len(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def __len__(self) -> int:
        return len(self.keys)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


class Attention(nn.Module):
    """Grouped-query self-attention (Ainslie et al. 2023) with RoPE, via SDPA."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, rope_theta: float) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.rope_theta = rope_theta
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, cache: KVCache | None, layer: int) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, S, hd)
        k = self.k_proj(x).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, S, hd)
        v = self.v_proj(x).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, S, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, Hkv, S_total, hd)
        groups = self.n_heads // self.n_kv_heads
        if groups > 1:  # each KV head serves `groups` query heads (HF repeat_kv order)
            k = k.repeat_interleave(groups, dim=1)  # (B, H, S_total, hd)
            v = v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        out = out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim)  # (B, S, H*hd)
        return self.o_proj(out)


class DecoderLayer(nn.Module):
    """Pre-norm attention then pre-norm MoE, each with a residual (Mixtral's block)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config.d_model, config.n_heads, config.n_kv_heads, config.rope_theta)
        self.block_sparse_moe = MoELayer(
            config.d_model, config.ffn_dim, config.n_experts, config.experts_per_token,
            capacity_factor=config.capacity_factor, jitter=config.router_jitter,
            shared_expert_dim=config.shared_expert_dim, dispatch=config.dispatch,
        )
        self.input_layernorm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None, layer: int, real_tokens: torch.Tensor | None):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        normed = self.post_attention_layernorm(h)
        if real_tokens is None:
            y, moe = self.block_sparse_moe(normed)
        else:
            # Route only real tokens: padding must not take expert capacity or skew the
            # load-balancing loss and routing statistics. Pad positions get no MoE update.
            d = normed.shape[-1]
            flat = normed.reshape(-1, d)  # (B*S, d)
            y_real, moe = self.block_sparse_moe(flat.index_select(0, real_tokens)[None])  # (1, T_real, d)
            y = torch.zeros_like(flat).index_copy(0, real_tokens, y_real[0]).view_as(normed)
        return h + y, moe


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
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj,
                         layer.self_attn.v_proj, layer.self_attn.o_proj):
                nn.init.normal_(proj.weight, std=0.02)


@dataclass
class ModelOutput:
    logits: torch.Tensor | None  # (B, S, V): raw logits (full head) or log-probs (adaptive head)
    loss: torch.Tensor | None  # mean next-token NLL over labels != -100
    aux_loss: torch.Tensor  # sum over layers of the load-balancing loss
    z_loss: torch.Tensor  # sum over layers of the router z-loss
    routing: list[RoutingStats] = field(default_factory=list)  # one per layer
    past_key_values: KVCache | None = None
    hidden_states: torch.Tensor | None = None  # (B, S, d) after the final norm


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
                config.d_model, config.vocab_size, tuple(config.adaptive_softmax_cutoffs),
                div_value=config.adaptive_div_value, token_order=token_order,
            )
        else:
            tied = self.model.embed_tokens.weight if config.tie_embeddings else None
            self.lm_head = FullSoftmaxHead(config.d_model, config.vocab_size, tied_weight=tied)

    @property
    def head(self) -> nn.Module:
        return self.lm_head

    @property
    def is_adaptive(self) -> bool:
        return isinstance(self.lm_head, AdaptiveSoftmaxHead)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, use_cache: bool = False,
                labels: torch.Tensor | None = None, compute_logits: bool = True) -> ModelOutput:
        """input_ids (B, S); attention_mask (B, S_past + S), 1 = real, 0 = left padding.

        labels (B, S) are aligned with input_ids and shifted here; -100 and padded positions
        are ignored. A `past_key_values` passed in is extended in place; it is returned only
        with use_cache=True (a fresh one is made if none is passed). compute_logits=False
        skips the (B, S, V) output (training with the adaptive head then touches only the
        clusters its targets live in).
        """
        b, s = input_ids.shape
        past = past_key_values.seq_len if past_key_values is not None else 0
        if past + s > self.config.max_seq_len:
            raise ValueError(f"sequence length {past + s} exceeds max_seq_len "
                             f"{self.config.max_seq_len} (generator.max_seq_len)")
        if attention_mask is not None and attention_mask.shape != (b, past + s):
            raise ValueError(f"attention_mask must be (batch, past + new) = {(b, past + s)}, "
                             f"got {tuple(attention_mask.shape)}")
        cache = (past_key_values if past_key_values is not None else KVCache()) if use_cache else past_key_values
        device = input_ids.device

        x = self.model.embed_tokens(input_ids)  # (B, S, d)
        mask, positions, real_tokens = self._mask_and_positions(attention_mask, b, s, past, device)
        head_dim = self.config.d_model // self.config.n_heads
        cos, sin = rope_cos_sin(positions, head_dim, self.config.rope_theta, x.dtype)

        routing: list[RoutingStats] = []
        aux = x.new_zeros((), dtype=torch.float32)
        z = x.new_zeros((), dtype=torch.float32)
        for i, layer in enumerate(self.model.layers):
            x, moe = layer(x, cos, sin, mask, cache, i, real_tokens)
            routing.append(moe.stats)
            aux = aux + moe.aux_loss.float()
            z = z + moe.z_loss.float()
        hidden = self.model.norm(x)  # (B, S, d)

        logits = self._logits(hidden) if compute_logits else None
        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask[:, past:] == 0, IGNORE_INDEX)
            loss = self._next_token_loss(hidden, labels, logits)
        return ModelOutput(logits=logits, loss=loss, aux_loss=aux, z_loss=z, routing=routing,
                           past_key_values=cache if use_cache else None, hidden_states=hidden)

    def total_loss(self, out: ModelOutput) -> torch.Tensor:
        """loss + aux_loss_coef * load balancing + z_loss_coef * router z-loss."""
        if out.loss is None:
            raise ValueError("total_loss needs an output computed with labels=")
        return (out.loss + self.config.aux_loss_coef * out.aux_loss
                + self.config.z_loss_coef * out.z_loss)

    def _mask_and_positions(self, attention_mask, b, s, past, device):
        """SDPA mask (B, 1, S, S_total) bool, RoPE positions (B, S), real-token flat indices."""
        if attention_mask is None:
            positions = torch.arange(past, past + s, device=device).expand(b, s)  # (B, S)
            if past == 0:
                return None, positions, None  # plain causal: SDPA's is_causal fast path
            keep = torch.ones(b, past + s, dtype=torch.bool, device=device)  # (B, S_total)
        else:
            keep = attention_mask.to(device=device, dtype=torch.bool)  # (B, S_total)
            # Left padding: count real tokens so a padded row gets its unpadded positions.
            positions = (keep.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, S)
        q_pos = torch.arange(past, past + s, device=device)  # (S,) absolute query index
        k_pos = torch.arange(past + s, device=device)  # (S_total,)
        causal = k_pos[None, :] <= q_pos[:, None]  # (S, S_total)
        mask = causal[None] & keep[:, None, :]  # (B, S, S_total)
        # A pad query would see no key at all and SDPA would return NaN; let it see itself.
        # Its output is never read by a real token (pad keys are hidden from them).
        mask = mask | (k_pos[None, :] == q_pos[:, None])[None]
        real_tokens = None
        if attention_mask is not None:
            real_tokens = keep[:, past:].reshape(-1).nonzero().squeeze(1)  # (T_real,)
            if real_tokens.numel() in (0, b * s):
                real_tokens = None
        return mask[:, None], positions, real_tokens

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        b, s, d = hidden.shape
        flat = hidden.reshape(b * s, d)  # (B*S, d)
        out = self.lm_head.log_prob(flat) if self.is_adaptive else self.lm_head.logits(flat)
        return out.view(b, s, -1)  # (B, S, V)

    def _next_token_loss(self, hidden, labels, logits) -> torch.Tensor:
        targets = labels[:, 1:].reshape(-1)  # (B*(S-1),)
        valid = (targets != IGNORE_INDEX).nonzero().squeeze(1)  # (N,)
        if logits is not None and not self.is_adaptive:
            rows = logits[:, :-1].reshape(-1, logits.shape[-1]).index_select(0, valid)  # (N, V)
            nll = F.cross_entropy(rows.float(), targets.index_select(0, valid), reduction="none")
        else:
            d = hidden.shape[-1]
            rows = hidden[:, :-1].reshape(-1, d).index_select(0, valid)  # (N, d)
            nll = self.lm_head(rows, targets.index_select(0, valid))  # (N,)
        # No valid target gives 0 (not NaN) so a fully masked batch cannot poison training.
        return nll.float().sum() / max(valid.numel(), 1)
