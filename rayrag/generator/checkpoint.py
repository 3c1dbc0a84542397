"""Generator checkpoints in Mixtral's format: `config.json` + `model.safetensors`.

The files use HF Mixtral's key names, so a checkpoint written here loads into
`MixtralForCausalLM` (full-softmax head) and a Mixtral checkpoint written by HF loads here.
Our experts are stacked (E, out, in) parameters; on disk they are split per expert
(`block_sparse_moe.experts.{j}.w1.weight`, the layout HF's own `save_pretrained` writes).
Loading also accepts HF transformers 5.x's in-memory fused layout
(`mlp.experts.gate_up_proj` (E, 2F, d) = [w1; w3], `mlp.experts.down_proj` (E, d, F)) and
`mlp.` in place of `block_sparse_moe.`. An adaptive-softmax head has no Mixtral equivalent:
its tensors are stored under `rayrag.adaptive_head.*`, and `config.json` carries the rest of
`GeneratorConfig` and the frequency order in a "rayrag" object.

    >>> save_checkpoint(model, "runs/gen", tokenizer_path="runs/tokenizer.json")
    >>> model = load_checkpoint("runs/gen", device="cuda")
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rayrag.atomic import fsync_dir, swap_dir_into_place
from rayrag.config import GeneratorConfig
from rayrag.errors import ConfigError, ModelError
from rayrag.generator.model import MoETransformer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1
ADAPTIVE_PREFIX = "rayrag.adaptive_head."
COPY_PREFIX = "rayrag.copy_head."  # the pointer (copy.py): ours only, HF ignores it
MATCH_PREFIX = "rayrag.question_match."  # the exact-match feature (model.QuestionMatch): ours only

_LAYER_MLP = re.compile(r"^(model\.layers\.\d+)\.mlp\.")
_ROUTER = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe)\.gate\.weight$")
_EXPERT = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe\.experts)\.(\d+)\.(w[123])\.weight$")
_FUSED = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe\.experts)\.(gate_up_proj|down_proj)$")
_OUR_ROUTER = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe)\.gate\.gate\.weight$")
_OUR_EXPERTS = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe\.experts)\.(w[123])$")


# -- save ------------------------------------------------------------------------------------


def save_checkpoint(
    model: MoETransformer, path: str | Path, tokenizer_path: str | Path | None = None
) -> Path:
    """Write `path/` = config.json + model.safetensors (+ tokenizer.json), atomically: the
    files go to a temp dir beside `path`, which then replaces it in two renames."""
    path = Path(path)
    adapters = [k for k in model.state_dict() if ".lora_" in k or k.startswith("lora_")]
    if adapters:
        # A base checkpoint with adapter tensors would not load anywhere (unexpected keys).
        raise ModelError(
            f"the model carries {len(adapters)} LoRA adapter tensors (e.g. {adapters[0]}): "
            "save them with lora.save_adapters, and the base before apply_lora"
        )
    tokenizer_file = _tokenizer_file(tokenizer_path) if tokenizer_path is not None else None
    if (
        path.exists()
        and not (path / CONFIG_FILE).is_file()
        and (not path.is_dir() or any(path.iterdir()))
    ):
        raise ConfigError(
            f"refusing to replace {path}: it exists and is not a generator checkpoint"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file(to_mixtral_state_dict(model), tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(
            json.dumps(mixtral_config_dict(model), indent=2) + "\n", encoding="utf-8"
        )
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
        for file in tmp.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        swap_dir_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)
    return path


def mixtral_config_dict(model: MoETransformer) -> dict[str, Any]:
    """HF Mixtral's config keys, plus a "rayrag" object with what Mixtral cannot express."""
    cfg = model.config
    token_order = model.head.token_of_rank.tolist() if model.is_adaptive else None
    dtype = next(model.parameters()).dtype
    return {
        "model_type": "mixtral",
        "architectures": ["MixtralForCausalLM"],
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.d_model // cfg.n_heads,
        "num_local_experts": cfg.n_experts,
        "num_experts_per_tok": cfg.experts_per_token,
        "rope_theta": cfg.rope_theta,
        # transformers 5.x reads the base from here; 4.x from the top-level key.
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rms_norm_eps": cfg.rms_norm_eps,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_seq_len,
        "tie_word_embeddings": bool(cfg.tie_embeddings and not model.is_adaptive),
        "hidden_act": "silu",
        "sliding_window": None,
        "attention_dropout": 0.0,
        "router_jitter_noise": cfg.router_jitter,
        "router_aux_loss_coef": cfg.aux_loss_coef,
        "dtype": str(dtype).removeprefix("torch."),
        "rayrag": {
            "format_version": FORMAT_VERSION,
            # the model's shape only: which backend serves answers is not the checkpoint's
            "generator": cfg.model_dump(mode="json", exclude={"backend", "openai"}),
            "token_order": token_order,
        },
    }


def to_mixtral_state_dict(model: MoETransformer) -> dict[str, torch.Tensor]:
    """Our state dict under Mixtral's names, experts split per expert (each its own storage,
    as safetensors requires)."""
    out: dict[str, torch.Tensor] = {}
    tied = not model.is_adaptive and model.config.tie_embeddings
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if key.startswith("lm_head."):
            if tied:
                continue  # HF convention: a tied head is not stored
            if model.is_adaptive:
                out[ADAPTIVE_PREFIX + key.removeprefix("lm_head.")] = tensor.contiguous()
                continue
        if key.startswith("copy_head."):
            out[COPY_PREFIX + key.removeprefix("copy_head.")] = tensor.contiguous()
        elif key.startswith("question_match."):
            out[MATCH_PREFIX + key.removeprefix("question_match.")] = tensor.contiguous()
        elif m := _OUR_ROUTER.match(key):
            out[f"{m[1]}.gate.weight"] = tensor.contiguous()
        elif m := _OUR_EXPERTS.match(key):
            for j in range(tensor.shape[0]):
                out[f"{m[1]}.{j}.{m[2]}.weight"] = tensor[j].clone()  # (out, in)
        else:
            out[key] = tensor.contiguous()
    return out


def _tokenizer_file(tokenizer_path: str | Path) -> Path:
    file = Path(tokenizer_path)
    if file.is_dir():
        file = file / TOKENIZER_FILE
    if not file.is_file():
        raise ConfigError(f"tokenizer file not found: {file} (save_checkpoint tokenizer_path)")
    return file


# -- load ------------------------------------------------------------------------------------


def serving_dtype(name: str, device: str | torch.device) -> torch.dtype:
    """`decoding.dtype` -> a torch dtype on `device`: auto = bfloat16 on CUDA, float32 elsewhere
    (CPUs without AMX run bf16 matmuls slower than fp32)."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if name not in ("float32", "bfloat16"):
        raise ModelError(
            f"decoding.dtype must be auto, float32 or bfloat16, got {name!r} (decoding.dtype)"
        )
    return getattr(torch, name)


def load_checkpoint(
    path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> MoETransformer:
    """A checkpoint directory written here or by HF `MixtralForCausalLM.save_pretrained`
    -> MoETransformer in eval mode on `device`, in `dtype` (default: the checkpoint's)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"generator checkpoint directory not found: {path}")
    config, token_order = config_from_json(_read_config(path), source=path / CONFIG_FILE)
    tensors = _read_tensors(path)
    state = from_mixtral_state_dict(tensors, config)
    model = MoETransformer(config, token_order=token_order)
    _load_strict(model, state, path)
    if dtype is None:
        dtype = _checkpoint_dtype(tensors)
    return model.to(device=device, dtype=dtype).eval()


def config_from_json(
    raw: dict[str, Any], source: Path | str = CONFIG_FILE
) -> tuple[GeneratorConfig, torch.Tensor | None]:
    """GeneratorConfig (+ token order) from a Mixtral config.json, ours or HF's."""
    if raw.get("model_type") != "mixtral":
        raise ModelError(
            f"{source}: model_type must be 'mixtral' (a MixtralForCausalLM checkpoint), "
            f"got {raw.get('model_type')!r}"
        )
    ours = raw.get("rayrag")
    try:
        if isinstance(ours, dict) and "generator" in ours:
            config = GeneratorConfig(**ours["generator"])
            order = ours.get("token_order")
            return config, (
                torch.as_tensor(order, dtype=torch.int64) if order is not None else None
            )
        return GeneratorConfig(**_generator_fields_from_hf(raw, source)), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(
            f"{source}: invalid generator config{f' at {where}' if where else ''}: {first['msg']}"
        ) from exc
    except TypeError as exc:
        raise ConfigError(f"{source}: invalid generator config: {exc}") from exc


def _generator_fields_from_hf(raw: dict[str, Any], source: Path | str) -> dict[str, Any]:
    required = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_local_experts",
        "num_experts_per_tok",
    )
    missing = [key for key in required if raw.get(key) is None]
    if missing:
        raise ModelError(f"{source}: missing Mixtral config keys {missing}")
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise ModelError(f"{source}: hidden_act must be 'silu' (SwiGLU experts), got {act!r}")
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ModelError(f"{source}: rope scaling {rope_type!r} is not supported (only 'default')")
    head_dim = raw.get("head_dim")
    if head_dim is not None and head_dim * raw["num_attention_heads"] != raw["hidden_size"]:
        raise ModelError(
            f"{source}: head_dim {head_dim} != hidden_size / num_attention_heads "
            f"= {raw['hidden_size']} / {raw['num_attention_heads']} (not supported)"
        )
    max_len = raw.get("max_position_embeddings", 4096 * 32)
    window = raw.get("sliding_window")
    if window:  # we attend to the whole context: exact only up to the window
        max_len = min(max_len, window)
    fields = {
        "vocab_size": raw["vocab_size"],
        "d_model": raw["hidden_size"],
        "n_layers": raw["num_hidden_layers"],
        "n_heads": raw["num_attention_heads"],
        "n_kv_heads": raw.get("num_key_value_heads") or raw["num_attention_heads"],
        "ffn_dim": raw["intermediate_size"],
        "n_experts": raw["num_local_experts"],
        "experts_per_token": raw["num_experts_per_tok"],
        "max_seq_len": max_len,
        "rope_theta": rope.get("rope_theta", raw.get("rope_theta", 1e6)),  # HF Mixtral default 1e6
        "rms_norm_eps": raw.get("rms_norm_eps", 1e-5),
        "tie_embeddings": bool(raw.get("tie_word_embeddings", False)),
        "adaptive_softmax_cutoffs": (),
        "router_jitter": raw.get("router_jitter_noise", 0.0),
    }
    if raw.get("router_aux_loss_coef") is not None:
        fields["aux_loss_coef"] = raw["router_aux_loss_coef"]
    return fields


def from_mixtral_state_dict(
    tensors: dict[str, torch.Tensor], config: GeneratorConfig
) -> dict[str, torch.Tensor]:
    """Mixtral-named tensors (split or fused experts) -> our state-dict names."""
    state: dict[str, torch.Tensor] = {}
    split: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        key = _LAYER_MLP.sub(r"\1.block_sparse_moe.", key)
        if key.startswith(ADAPTIVE_PREFIX):
            state["lm_head." + key.removeprefix(ADAPTIVE_PREFIX)] = tensor
        elif key.startswith(COPY_PREFIX):
            state["copy_head." + key.removeprefix(COPY_PREFIX)] = tensor
        elif key.startswith(MATCH_PREFIX):
            state["question_match." + key.removeprefix(MATCH_PREFIX)] = tensor
        elif m := _ROUTER.match(key):
            state[f"{m[1]}.gate.gate.weight"] = tensor
        elif m := _EXPERT.match(key):
            split.setdefault((m[1], m[3]), {})[int(m[2])] = tensor
        elif m := _FUSED.match(key):
            fused.setdefault(m[1], {})[m[2]] = tensor
        else:
            state[key] = tensor
    for (prefix, name), experts in split.items():
        ids = sorted(experts)
        if ids != list(range(config.n_experts)):
            lost = sorted(set(range(config.n_experts)) - set(ids))[:5]
            raise ModelError(
                f"{prefix}.*.{name}.weight: expected experts 0..{config.n_experts - 1}, "
                f"missing {lost}, extra {[i for i in ids if i >= config.n_experts][:5]}"
            )
        shapes = {tuple(t.shape) for t in experts.values()}
        if len(shapes) != 1:
            raise ModelError(
                f"{prefix}.*.{name}.weight: experts disagree on shape {sorted(shapes)}"
            )
        state[f"{prefix}.{name}"] = torch.stack([experts[j] for j in ids])  # (E, out, in)
    for prefix, parts in fused.items():
        state.update(_unfuse(prefix, parts, config))
    return state


def _unfuse(
    prefix: str, parts: dict[str, torch.Tensor], config: GeneratorConfig
) -> dict[str, torch.Tensor]:
    """HF 5.x fused experts -> w1, w3 (E, F, d) and w2 (E, d, F). HF Mixtral stores them as
    nn.Linear (E, out, in); a transposed (E, in, out) copy is recognised by its shape."""
    e, f, d = config.n_experts, config.ffn_dim, config.d_model
    out: dict[str, torch.Tensor] = {}
    if (gate_up := parts.get("gate_up_proj")) is not None:
        if tuple(gate_up.shape) != (e, 2 * f, d) and tuple(gate_up.shape) == (e, d, 2 * f):
            gate_up = gate_up.transpose(1, 2)  # (E, 2F, d)
        if tuple(gate_up.shape) != (e, 2 * f, d):
            raise ModelError(
                f"{prefix}.gate_up_proj: shape {tuple(gate_up.shape)}, expected {(e, 2 * f, d)}"
            )
        out[f"{prefix}.w1"] = gate_up[:, :f].contiguous()  # (E, F, d) gate half comes first
        out[f"{prefix}.w3"] = gate_up[:, f:].contiguous()  # (E, F, d) up
    if (down := parts.get("down_proj")) is not None:
        if tuple(down.shape) != (e, d, f) and tuple(down.shape) == (e, f, d):
            down = down.transpose(1, 2)  # (E, d, F)
        if tuple(down.shape) != (e, d, f):
            raise ModelError(f"{prefix}.down_proj: shape {tuple(down.shape)}, expected {(e, d, f)}")
        out[f"{prefix}.w2"] = down.contiguous()
    return out


def _load_strict(model: MoETransformer, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    tied_head = not model.is_adaptive and model.config.tie_embeddings
    if tied_head:  # one parameter under two names; the file holds (at most) the embedding's
        state.pop("lm_head.weight", None)
        if "model.embed_tokens.weight" in state:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:4]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:4]})")
        raise ModelError(f"{path}: checkpoint keys do not match the model: {'; '.join(parts)}")
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise ModelError(f"{path}: {len(wrong)} tensors have the wrong shape, e.g. {wrong[:3]}")
    model.load_state_dict(state, strict=True)


def _read_config(path: Path) -> dict[str, Any]:
    file = path / CONFIG_FILE
    if not file.is_file():
        raise ModelError(f"{file} not found: not a generator checkpoint")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{file}: cannot read config: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"{file}: expected a JSON object, got {type(raw).__name__}")
    return raw


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, or the shards named by model.safetensors.index.json."""
    single, index = path / WEIGHTS_FILE, path / WEIGHTS_INDEX_FILE
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{index}: not a safetensors index: {exc}") from exc
        files = [path / name for name in sorted(set(weight_map.values()))]
    else:
        raise ModelError(f"{single} not found (only safetensors checkpoints are read)")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise ModelError(f"{file} not found (named by {index.name})")
        try:
            tensors.update(load_file(file, device="cpu"))
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{file}: cannot read safetensors: {exc}") from exc
    return tensors


def _checkpoint_dtype(tensors: dict[str, torch.Tensor]) -> torch.dtype:
    counts: dict[torch.dtype, int] = {}
    for tensor in tensors.values():
        if tensor.is_floating_point():
            counts[tensor.dtype] = counts.get(tensor.dtype, 0) + tensor.numel()
    return max(counts, key=counts.__getitem__) if counts else torch.float32
