"""The HF MoE families a generator checkpoint can be: Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE.

One `Family` per HF `model_type`, read from transformers 5.x's modeling and configuration
files (`MixtralForCausalLM`, `Qwen2MoeForCausalLM`, `Qwen3MoeForCausalLM`,
`OlmoeForCausalLM`): the config keys that give our `GeneratorConfig`, the defaults the
config class fills in when a key is absent, and the tensor names `save_pretrained` writes.
All four are the same decoder (pre-norm RMSNorm, rotate-half RoPE, grouped-query attention,
a top-k routed SwiGLU MoE in every block); what differs, and the `GeneratorConfig` field
that carries it:

    family     routing weights (router_renormalize)   attention                  extra
    mixtral    top-k renormalised                     plain                      -
    qwen2_moe  top-k of the softmax, norm_topk_prob   q/k/v bias (qkv_bias)      gated shared expert
    qwen3_moe  top-k of the softmax, norm_topk_prob   per-head QK-norm, head_dim -
    olmoe      top-k of the softmax, norm_topk_prob   QK-norm over all heads     clip_qkv

On disk the MoE block is `block_sparse_moe` with experts `w1/w3/w2` (Mixtral) or `mlp` with
`gate_proj/up_proj/down_proj` (the others), one tensor per expert. What a family cannot
express is refused with a one-line `ModelError` naming the key and its value, rather than
loaded into a model that would compute something else: dense MLP layers between the MoE
ones (Qwen `decoder_sparse_step` / `mlp_only_layers`), rope scaling, activations other
than SiLU.

    >>> fields = generator_fields(json.load(open("ckpt/config.json")), "ckpt/config.json")
    >>> config = GeneratorConfig(**fields)       # hf_family = the file's model_type
    >>> raw = hf_config_dict(config, tied=True)  # that family's config.json keys
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayrag.config import GeneratorConfig
from rayrag.errors import ModelError

# Our stacked expert / shared-expert SwiGLU weights, in the order (gate, up, down).
OUR_PROJ = ("w1", "w3", "w2")
# Every on-disk projection name -> ours (the names never collide across families).
PROJ_TO_OURS = {
    "w1": "w1",
    "w3": "w3",
    "w2": "w2",
    "gate_proj": "w1",
    "up_proj": "w3",
    "down_proj": "w2",
}


@dataclass(frozen=True)
class Family:
    """One HF MoE architecture: its config.json keys and defaults, and its tensor names."""

    model_type: str
    architecture: str
    moe_prefix: str  # the MoE block's module on disk: model.layers.{i}.<moe_prefix>.
    proj_names: tuple[str, str, str]  # on-disk names of our w1 (gate), w3 (up), w2 (down)
    experts_key: str  # config key written for the number of routed experts
    ffn_key: str  # config key of a routed expert's hidden width
    rope_theta: float  # the config class's defaults, used when config.json omits the key
    rms_norm_eps: float
    max_positions: int
    kv_heads: int | None  # num_key_value_heads default; None = num_attention_heads
    topk_key: bool  # has norm_topk_prob (default False); without it, always renormalised
    bias_key: str | None  # "qkv_bias" (q/k/v), "attention_bias" (q/k/v/o) or None (no bias)
    bias_default: bool
    qk_norm: str  # "none", "head" or "full": fixed by the family
    shared_expert: bool  # a sigmoid-gated shared expert in every MoE block
    sparse_layers: bool  # has decoder_sparse_step / mlp_only_layers (only all-MoE is built)
    clip_qkv: bool  # has clip_qkv
    free_head_dim: bool  # head_dim may differ from hidden_size / num_attention_heads
    window_switch: bool = False  # sliding_window applies only with use_sliding_window (Qwen)

    @property
    def bias_value(self) -> str:
        """Our `attention_bias` value when the family's bias key is true."""
        return {"qkv_bias": "qkv", "attention_bias": "all"}.get(self.bias_key or "", "none")


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family(
            model_type="mixtral",
            architecture="MixtralForCausalLM",
            moe_prefix="block_sparse_moe",
            proj_names=("w1", "w3", "w2"),
            experts_key="num_local_experts",
            ffn_key="intermediate_size",
            rope_theta=1e6,  # MixtralConfig.default_theta
            rms_norm_eps=1e-5,
            max_positions=4096 * 32,
            kv_heads=None,  # what this loader always did (MixtralConfig's own default is 8)
            topk_key=False,
            bias_key=None,
            bias_default=False,
            qk_norm="none",
            shared_expert=False,
            sparse_layers=False,
            clip_qkv=False,
            free_head_dim=True,
        ),
        Family(
            model_type="qwen2_moe",
            architecture="Qwen2MoeForCausalLM",
            moe_prefix="mlp",
            proj_names=("gate_proj", "up_proj", "down_proj"),
            experts_key="num_experts",
            ffn_key="moe_intermediate_size",
            rope_theta=1e4,
            rms_norm_eps=1e-6,
            max_positions=32768,
            kv_heads=16,
            topk_key=True,
            bias_key="qkv_bias",  # q, k, v only; o_proj never has one
            bias_default=True,
            qk_norm="none",
            shared_expert=True,
            sparse_layers=True,
            clip_qkv=False,
            free_head_dim=True,
            window_switch=True,
        ),
        Family(
            model_type="qwen3_moe",
            architecture="Qwen3MoeForCausalLM",
            moe_prefix="mlp",
            proj_names=("gate_proj", "up_proj", "down_proj"),
            experts_key="num_experts",
            ffn_key="moe_intermediate_size",
            rope_theta=1e4,
            rms_norm_eps=1e-6,
            max_positions=32768,
            kv_heads=4,
            topk_key=True,
            bias_key="attention_bias",
            bias_default=False,
            qk_norm="head",
            shared_expert=False,
            sparse_layers=True,
            clip_qkv=False,
            free_head_dim=True,
            window_switch=True,
        ),
        Family(
            model_type="olmoe",
            architecture="OlmoeForCausalLM",
            moe_prefix="mlp",
            proj_names=("gate_proj", "up_proj", "down_proj"),
            experts_key="num_experts",
            ffn_key="intermediate_size",
            rope_theta=1e4,
            rms_norm_eps=1e-5,
            max_positions=4096,
            kv_heads=None,
            topk_key=True,
            bias_key="attention_bias",
            bias_default=False,
            qk_norm="full",  # q_norm is hidden_size wide: head_dim must be hidden / heads
            shared_expert=False,
            sparse_layers=False,
            clip_qkv=True,
            free_head_dim=False,
        ),
    )
}


def family_of(model_type: Any, source: Path | str) -> Family:
    """The Family of a config.json's model_type; anything else is a one-line ModelError."""
    if model_type not in FAMILIES:
        *most, last = (repr(name) for name in FAMILIES)
        raise ModelError(
            f"{source}: model_type must be {', '.join(most)} or {last}, got {model_type!r}"
        )
    return FAMILIES[model_type]


def _refuse(source: Path | str, key: str, value: Any, why: str) -> ModelError:
    return ModelError(f"{source}: {key}={value!r} is not supported ({why})")


def generator_fields(raw: dict[str, Any], source: Path | str) -> dict[str, Any]:
    """GeneratorConfig fields from an HF config.json of any family in FAMILIES.

    Absent keys take the family's config-class default, as `from_pretrained` would."""
    fam = family_of(raw.get("model_type"), source)
    experts_keys = ("num_experts", "num_local_experts")  # every family maps one to the other
    n_experts = next((raw[k] for k in experts_keys if raw.get(k) is not None), None)
    required = (
        "vocab_size",
        "hidden_size",
        fam.ffn_key,
        "num_hidden_layers",
        "num_attention_heads",
        "num_experts_per_tok",
    )
    missing = [key for key in required if raw.get(key) is None]
    if n_experts is None:
        missing.insert(-1, fam.experts_key)
    if missing:
        raise ModelError(f"{source}: missing {fam.model_type} config keys {missing}")
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise _refuse(source, "hidden_act", act, "the experts are SwiGLU: only 'silu'")
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    if any(isinstance(v, dict) for v in rope.values()):
        raise _refuse(source, "rope_parameters", rope, "one RoPE for every layer only")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise _refuse(source, "rope_type", rope_type, "rope scaling: only 'default'")
    partial = rope.get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise _refuse(source, "partial_rotary_factor", partial, "RoPE on the whole head only")
    if n_experts <= 0:
        raise _refuse(source, fam.experts_key, n_experts, "a dense model, not a mixture")
    if fam.sparse_layers:
        # HF builds a dense MLP (intermediate_size wide) in layer i when i is in
        # mlp_only_layers or (i + 1) % decoder_sparse_step != 0; we build MoE layers only.
        step = raw.get("decoder_sparse_step", 1)
        if step != 1:
            raise _refuse(source, "decoder_sparse_step", step, "dense MLP layers: only 1")
        dense = raw.get("mlp_only_layers") or []
        if dense:
            raise _refuse(source, "mlp_only_layers", dense, "dense MLP layers: only []")
    hidden, heads = raw["hidden_size"], raw["num_attention_heads"]
    # Absent or null: hidden / heads (GeneratorConfig then checks that it divides).
    head_dim = raw.get("head_dim")
    if head_dim is not None and head_dim * heads == hidden:
        head_dim = None
    if head_dim is not None and not fam.free_head_dim:
        raise _refuse(
            source,
            "head_dim",
            head_dim,
            f"{fam.model_type} needs hidden_size / num_attention_heads",
        )
    fields: dict[str, Any] = {
        "hf_family": fam.model_type,
        "vocab_size": raw["vocab_size"],
        "d_model": hidden,
        "n_layers": raw["num_hidden_layers"],
        "n_heads": heads,
        "n_kv_heads": raw.get("num_key_value_heads") or fam.kv_heads or heads,
        "head_dim": head_dim,
        "ffn_dim": raw[fam.ffn_key],
        "n_experts": n_experts,
        "experts_per_token": raw["num_experts_per_tok"],
        # dropless, as these families are trained and served: a capacity of E/k * T*k/E = T
        # slots per expert is more than any expert can be sent (each token picks it once)
        "capacity_factor": n_experts / raw["num_experts_per_tok"],
        "max_seq_len": _max_len(raw, fam),
        "rope_theta": rope.get("rope_theta", raw.get("rope_theta", fam.rope_theta)),
        "rms_norm_eps": raw.get("rms_norm_eps", fam.rms_norm_eps),
        "tie_embeddings": bool(raw.get("tie_word_embeddings", False)),
        "adaptive_softmax_cutoffs": (),
        "router_jitter": raw.get("router_jitter_noise", 0.0),
        "router_renormalize": bool(raw.get("norm_topk_prob", False)) if fam.topk_key else True,
        "qk_norm": fam.qk_norm,
    }
    if fam.bias_key is not None and raw.get(fam.bias_key, fam.bias_default):
        fields["attention_bias"] = fam.bias_value
    if fam.clip_qkv and raw.get("clip_qkv") is not None:
        fields["clip_qkv"] = raw["clip_qkv"]
    if fam.shared_expert:
        width = raw.get("shared_expert_intermediate_size")
        if not width or width <= 0:
            raise _refuse(
                source, "shared_expert_intermediate_size", width, "the shared expert needs a width"
            )
        fields["shared_expert_dim"] = width
        fields["shared_expert_gate"] = True
    if raw.get("router_aux_loss_coef") is not None:
        fields["aux_loss_coef"] = raw["router_aux_loss_coef"]
    return fields


def _max_len(raw: dict[str, Any], fam: Family) -> int:
    """max_position_embeddings, capped at the sliding window when one is on: we attend to the
    whole context, which is the windowed attention exactly as long as the context fits."""
    max_len = raw.get("max_position_embeddings") or fam.max_positions
    window = raw.get("sliding_window")
    if fam.window_switch and not raw.get("use_sliding_window"):
        window = None  # Qwen writes a window size that is off unless switched on
    return min(max_len, window) if window else max_len


def writable_family(config: GeneratorConfig) -> Family:
    """config.hf_family's Family, if that family can express every option of `config`; else a
    one-line ModelError naming the field and its value (the file would load as another model)."""
    fam = FAMILIES[config.hf_family]

    def refuse(field: str, value: Any, why: str) -> ModelError:
        return ModelError(
            f"generator.{field}={value!r} cannot be written as a {fam.model_type} checkpoint "
            f"(generator.hf_family): {why}"
        )

    if not fam.topk_key and not config.router_renormalize:
        raise refuse("router_renormalize", False, "it always renormalises the top-k weights")
    if config.attention_bias not in ("none", fam.bias_value):
        raise refuse("attention_bias", config.attention_bias, f"it has {fam.bias_value!r} only")
    if config.qk_norm != fam.qk_norm:
        raise refuse("qk_norm", config.qk_norm, f"its qk_norm is {fam.qk_norm!r}")
    if config.clip_qkv is not None and not fam.clip_qkv:
        raise refuse("clip_qkv", config.clip_qkv, "it has no clip_qkv")
    if config.head_dim is not None and not fam.free_head_dim:
        raise refuse("head_dim", config.head_dim, "its head width is d_model / n_heads")
    if fam.shared_expert and not (config.shared_expert_dim and config.shared_expert_gate):
        raise refuse(
            "shared_expert_gate", config.shared_expert_gate, "every block has a gated shared expert"
        )
    if config.shared_expert_gate and not fam.shared_expert:
        raise refuse("shared_expert_gate", True, "it has no gated shared expert")
    if config.shared_expert_dim and fam.model_type != "mixtral" and not fam.shared_expert:
        # Mixtral files carry an ungated shared expert as a rayrag extra (what they always did).
        raise refuse("shared_expert_dim", config.shared_expert_dim, "it has no shared expert")
    return fam


def hf_config_dict(config: GeneratorConfig, tied: bool) -> dict[str, Any]:
    """config.hf_family's config.json keys for `config` (checked by `writable_family`)."""
    fam = writable_family(config)
    out: dict[str, Any] = {
        "model_type": fam.model_type,
        "architectures": [fam.architecture],
        "hidden_size": config.d_model,
        "intermediate_size": config.ffn_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim or config.d_model // config.n_heads,
        fam.experts_key: config.n_experts,
        "num_experts_per_tok": config.experts_per_token,
        "rope_theta": config.rope_theta,
        # transformers 5.x reads the base from here; 4.x from the top-level key.
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "rms_norm_eps": config.rms_norm_eps,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_seq_len,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "router_aux_loss_coef": config.aux_loss_coef,
    }
    if fam.model_type == "mixtral":
        out["sliding_window"] = None
        out["router_jitter_noise"] = config.router_jitter
    if fam.ffn_key != "intermediate_size":
        out[fam.ffn_key] = config.ffn_dim  # intermediate_size is then the (unused) dense width
    if fam.topk_key:
        out["norm_topk_prob"] = config.router_renormalize
    if fam.bias_key is not None:
        out[fam.bias_key] = config.attention_bias != "none"
    if fam.clip_qkv:
        out["clip_qkv"] = config.clip_qkv
    if fam.shared_expert:
        out["shared_expert_intermediate_size"] = config.shared_expert_dim
    if fam.sparse_layers:
        out.update(decoder_sparse_step=1, mlp_only_layers=[], use_sliding_window=False)
    return out
