"""Generator checkpoints in HF's format: `config.json` + `model.safetensors`.

A checkpoint is one of the HF MoE families in `hf_families.py` (Mixtral, Qwen2-MoE,
Qwen3-MoE, OLMoE), with that family's config keys and tensor names: a checkpoint written
here loads into the family's HF class (`MixtralForCausalLM`, ...; full-softmax head), and
one written by HF's `save_pretrained` loads here (`config_from_json` dispatches on
`model_type`). A model is written as its `generator.hf_family`: Mixtral for a model built
here, the file's family for a loaded one; a family that cannot express one of the model's
options is refused (`hf_families.writable_family`) rather than written as a file HF would
load as another model. Our experts are stacked (E, out, in) parameters; on disk they are
split per expert (`block_sparse_moe.experts.{j}.w1.weight`, `mlp.experts.{j}.gate_proj.weight`,
the layouts HF's own `save_pretrained` writes). Loading also accepts HF transformers 5.x's
in-memory fused layout (`mlp.experts.gate_up_proj` (E, 2F, d) = [w1; w3],
`mlp.experts.down_proj` (E, d, F)) and `mlp.` in place of `block_sparse_moe.`. An
adaptive-softmax head has no HF equivalent: its tensors are stored under
`rayrag.adaptive_head.*`, and `config.json` carries the rest of `GeneratorConfig` and the
frequency order in a "rayrag" object.

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
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from rayrag.atomic import fsync_dir, swap_dir_into_place
from rayrag.config import GeneratorConfig
from rayrag.errors import ConfigError, ModelError
from rayrag.generator.hf_families import (
    FAMILIES,
    OUR_PROJ,
    PROJ_TO_OURS,
    generator_fields,
    hf_config_dict,
    writable_family,
)
from rayrag.generator.model import MoETransformer
from rayrag.generator.moe import SwiGLUExperts

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
# A pretrained checkpoint's tokenizer and chat format: what `save_checkpoint` carries over from
# such a base (`generator.pretrained` reads them), so a merged LoRA model keeps its chat format.
PRETRAINED_TOKENIZER_FILES = (
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
)
FORMAT_VERSION = 1
ADAPTIVE_PREFIX = "rayrag.adaptive_head."
COPY_PREFIX = "rayrag.copy_head."  # the pointer (copy.py): ours only, HF ignores it
MATCH_PREFIX = "rayrag.question_match."  # the exact-match feature (model.QuestionMatch): ours only

_LAYER_MLP = re.compile(r"^(model\.layers\.\d+)\.mlp\.")
_ROUTER = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe)\.gate\.weight$")
_PROJ = r"(w[123]|gate_proj|up_proj|down_proj)"  # on-disk SwiGLU names, any family
_EXPERT = re.compile(rf"^(model\.layers\.\d+\.block_sparse_moe\.experts)\.(\d+)\.{_PROJ}\.weight$")
_SHARED = re.compile(rf"^(model\.layers\.\d+\.block_sparse_moe\.shared_expert)\.{_PROJ}\.weight$")
_FUSED = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe\.experts)\.(gate_up_proj|down_proj)$")
_OUR_ROUTER = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe)\.gate\.gate\.weight$")
_OUR_EXPERTS = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe\.experts)\.(w[123])$")
_OUR_SHARED = re.compile(
    r"^(model\.layers\.\d+\.block_sparse_moe\.shared_expert)\.(w[123])\.weight$"
)
_OUR_MOE = re.compile(r"^(model\.layers\.\d+)\.block_sparse_moe\.")


# -- save ------------------------------------------------------------------------------------


def save_checkpoint(
    model: MoETransformer, path: str | Path, tokenizer_path: str | Path | None = None
) -> Path:
    """Write `path/` = config.json + model.safetensors (+ tokenizer.json), atomically: the
    files go to a temp dir beside `path`, which then replaces it in two renames. The format is
    the model's `generator.hf_family`; ModelError when that family cannot express the model."""
    path = Path(path)
    writable_family(model.config)  # before anything touches the disk
    adapters = [k for k in model.state_dict() if ".lora_" in k or k.startswith("lora_")]
    if adapters:
        # A base checkpoint with adapter tensors would not load anywhere (unexpected keys).
        raise ModelError(
            f"the model carries {len(adapters)} LoRA adapter tensors (e.g. {adapters[0]}): "
            "save them with lora.save_adapters, and the base before apply_lora"
        )
    tokenizer_file = _tokenizer_file(tokenizer_path) if tokenizer_path is not None else None
    # a pretrained base's tokenizer (tokenizer_config.json beside it) brings its chat format
    pretrained = (
        tokenizer_file is not None
        and (tokenizer_file.parent / PRETRAINED_TOKENIZER_FILES[1]).is_file()
    )
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
        save_file(to_hf_state_dict(model), tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        config = hf_config(model, tokenizer="pretrained" if pretrained else "rayrag-bpe")
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if pretrained:
            for name in PRETRAINED_TOKENIZER_FILES:
                if (tokenizer_file.parent / name).is_file():
                    shutil.copyfile(tokenizer_file.parent / name, tmp / name)
        elif tokenizer_file is not None:
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


def hf_config(model: MoETransformer, tokenizer: str = "rayrag-bpe") -> dict[str, Any]:
    """The family's HF config keys, plus a "rayrag" object with what HF cannot express and
    whose `tokenizer` the checkpoint holds: "rayrag-bpe" (ours, trained from scratch) or
    "pretrained" (a pretrained base's, with its chat format)."""
    cfg = model.config
    token_order = model.head.token_of_rank.tolist() if model.is_adaptive else None
    dtype = next(model.parameters()).dtype
    return {
        **hf_config_dict(cfg, tied=bool(cfg.tie_embeddings and not model.is_adaptive)),
        "dtype": str(dtype).removeprefix("torch."),
        "rayrag": {
            "format_version": FORMAT_VERSION,
            # the model's shape only: which backend serves answers is not the checkpoint's
            "generator": cfg.model_dump(mode="json", exclude={"backend", "openai"}),
            "token_order": token_order,
            "tokenizer": tokenizer,
        },
    }


def to_hf_state_dict(model: MoETransformer) -> dict[str, torch.Tensor]:
    """Our state dict under the family's HF names, experts split per expert (each its own
    storage, as safetensors requires)."""
    out: dict[str, torch.Tensor] = {}
    tied = not model.is_adaptive and model.config.tie_embeddings
    fam = FAMILIES[model.config.hf_family]
    disk = dict(zip(OUR_PROJ, fam.proj_names, strict=True))  # w1 -> gate_proj, ...
    moe = rf"\1.{fam.moe_prefix}."
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
            out[_OUR_MOE.sub(moe, f"{m[1]}.gate.weight")] = tensor.contiguous()
        elif m := _OUR_EXPERTS.match(key):
            for j in range(tensor.shape[0]):
                name = _OUR_MOE.sub(moe, f"{m[1]}.{j}.{disk[m[2]]}.weight")
                out[name] = tensor[j].clone()  # (out, in)
        elif m := _OUR_SHARED.match(key):
            out[_OUR_MOE.sub(moe, f"{m[1]}.{disk[m[2]]}.weight")] = tensor.contiguous()
        else:
            out[_OUR_MOE.sub(moe, key)] = tensor.contiguous()
    return out


# The names these had when every checkpoint was Mixtral's.
mixtral_config_dict, to_mixtral_state_dict = hf_config, to_hf_state_dict


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
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    experts: bool = True,
) -> MoETransformer:
    """A checkpoint directory written here or by HF `save_pretrained` of a family in
    `hf_families.FAMILIES` -> MoETransformer in eval mode on `device`, in `dtype` (default:
    the checkpoint's).

    `experts=False` is for a caller whose routed experts live elsewhere (the expert-parallel
    driver): their tensors are not read, the model is built on the meta device and takes the
    file's tensors as its parameters (no random init, no second copy), and each layer's
    `experts` is left with empty weights, to be given an `expert_fn`."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"generator checkpoint directory not found: {path}")
    config, token_order = config_from_json(_read_config(path), source=path / CONFIG_FILE)
    tensors = _read_tensors(path, routed_experts=experts)
    state = from_hf_state_dict(tensors, config)
    if dtype is None:
        dtype = _checkpoint_dtype(tensors)
    if experts:
        model = MoETransformer(config, token_order=token_order)
        _load_strict(model, state, path)
        return model.to(device=device, dtype=dtype).eval()
    with torch.device("meta"):  # an adaptive head's token order comes with the state
        model = MoETransformer(config)
    routed = {key for key in model.state_dict() if _OUR_EXPERTS.match(key)}
    _load_strict(model, state, path, skip=routed)
    if not model.is_adaptive and config.tie_embeddings:  # one Parameter again, not two
        model.lm_head.weight = model.model.embed_tokens.weight
    for layer in model.model.layers:
        for name in OUR_PROJ:
            setattr(layer.block_sparse_moe.experts, name, torch.nn.Parameter(torch.empty(0)))
    return model.to(device=device, dtype=dtype).eval()


def load_experts(
    path: str | Path,
    lo: int,
    hi: int,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[GeneratorConfig, list[SwiGLUExperts]]:
    """Routed experts lo..hi-1 of every MoE layer of a checkpoint, one SwiGLUExperts (hi - lo
    experts) per layer, in eval mode, reading only their tensors from the safetensors files.

    An expert-parallel shard needs 1/N of the experts and nothing else; reading the whole
    file (`load_checkpoint`) would make every shard's peak memory the whole checkpoint. Split
    experts (what `save_pretrained` writes) are read key by key, fused ones (HF 5.x's
    `experts.gate_up_proj` (E, 2F, d), `experts.down_proj` (E, d, F)) as a slice of their
    first dimension; `safe_open` maps the file and copies out only what is asked for.
    `dtype` None keeps the experts' own dtype."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"generator checkpoint directory not found: {path}")
    config, _ = config_from_json(_read_config(path), source=path / CONFIG_FILE)
    if not 0 <= lo < hi <= config.n_experts:
        raise ModelError(f"experts [{lo}, {hi}) are not within the {config.n_experts} experts")
    files = _weight_files(path)
    layers = []
    for i in range(config.n_layers):
        # Fresh handles per layer: a handle maps its file, and the pages a read touches stay
        # resident in this process until the handle goes, so at most one layer's are.
        where = _open_by_key(files)
        parts = _read_layer_experts(where, i, lo, hi, config)  # w1, w3 (n, F, d); w2 (n, d, F)
        del where
        with torch.device("meta"):  # no memory for a random init that is replaced at once
            experts = SwiGLUExperts(hi - lo, config.d_model, config.ffn_dim, config.dispatch)
        for name, tensor in parts.items():
            tensor = tensor.to(device=device, dtype=dtype or tensor.dtype)
            setattr(experts, name, torch.nn.Parameter(tensor, requires_grad=False))
        layers.append(experts.eval())
    return config, layers


def _open_by_key(files: list[Path]) -> dict[str, Any]:
    """Tensor name -> the `safe_open` handle of the file that holds it (headers only read)."""
    where: dict[str, Any] = {}
    for file in files:
        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{file}: cannot read safetensors: {exc}") from exc
        where.update(dict.fromkeys(handle.keys(), handle))
    return where


def _read_layer_experts(
    where: dict[str, Any], layer: int, lo: int, hi: int, config: GeneratorConfig
) -> dict[str, torch.Tensor]:
    """Layer `layer`'s experts lo..hi-1 -> {w1, w3: (n, F, d), w2: (n, d, F)}, n = hi - lo,
    from whichever of the layouts `from_hf_state_dict` accepts the file holds."""
    n, f, d = hi - lo, config.ffn_dim, config.d_model
    shapes = {"w1": (n, f, d), "w3": (n, f, d), "w2": (n, d, f)}
    for block in ("block_sparse_moe", "mlp"):
        prefix = f"model.layers.{layer}.{block}.experts"
        fused = {
            name: where[key].get_slice(key)[lo:hi]  # (n, ., .): only these experts' bytes
            for name in ("gate_up_proj", "down_proj")
            if (key := f"{prefix}.{name}") in where
        }
        if fused:
            out = {
                key.removeprefix(f"{prefix}."): tensor
                for key, tensor in _unfuse(prefix, fused, n, f, d).items()
            }
        else:
            out = {}
            for disk, ours in PROJ_TO_OURS.items():
                keys = [f"{prefix}.{j}.{disk}.weight" for j in range(lo, hi)]
                if keys[0] in where:
                    missing = [key for key in keys if key not in where]
                    if missing:
                        raise ModelError(f"expert tensor {missing[0]} not found in the checkpoint")
                    first = where[keys[0]].get_tensor(keys[0])  # (out, in)
                    stacked = first.new_empty((len(keys), *first.shape))  # (n, out, in)
                    stacked[0] = first
                    for k, key in enumerate(keys[1:], start=1):  # one expert's copy at a time
                        stacked[k] = where[key].get_tensor(key)
                    out[ours] = stacked
        if out:
            if sorted(out) != sorted(shapes):
                lost = sorted(set(shapes) - set(out))
                raise ModelError(f"{prefix}: no expert tensors for {lost} in the checkpoint")
            for name, tensor in out.items():
                if tuple(tensor.shape) != shapes[name]:
                    raise ModelError(
                        f"{prefix} {name}: shape {tuple(tensor.shape)}, expected {shapes[name]}"
                    )
            return out
    raise ModelError(f"model.layers.{layer}: no expert tensors in the checkpoint")


def config_from_json(
    raw: dict[str, Any], source: Path | str = CONFIG_FILE
) -> tuple[GeneratorConfig, torch.Tensor | None]:
    """GeneratorConfig (+ token order) from a config.json, ours or HF's, of any family in
    `hf_families.FAMILIES` (dispatched on model_type)."""
    fields = generator_fields(raw, source)  # refuses unknown families and features
    ours = raw.get("rayrag")
    try:
        if isinstance(ours, dict) and "generator" in ours:
            config = GeneratorConfig(**ours["generator"])
            if config.hf_family != raw["model_type"]:
                raise ModelError(
                    f"{source}: model_type {raw['model_type']!r} but the rayrag object's "
                    f"generator.hf_family is {config.hf_family!r}"
                )
            order = ours.get("token_order")
            return config, (
                torch.as_tensor(order, dtype=torch.int64) if order is not None else None
            )
        return GeneratorConfig(**fields), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(
            f"{source}: invalid generator config{f' at {where}' if where else ''}: {first['msg']}"
        ) from exc
    except TypeError as exc:
        raise ConfigError(f"{source}: invalid generator config: {exc}") from exc


def from_hf_state_dict(
    tensors: dict[str, torch.Tensor], config: GeneratorConfig
) -> dict[str, torch.Tensor]:
    """HF-named tensors of any family (split or fused experts) -> our state-dict names."""
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
            experts = split.setdefault((m[1], PROJ_TO_OURS[m[3]]), {})
            if int(m[2]) in experts:
                raise ModelError(f"{key}: expert {m[2]} is in the file twice, under two names")
            experts[int(m[2])] = tensor
        elif m := _SHARED.match(key):
            state[f"{m[1]}.{PROJ_TO_OURS[m[2]]}.weight"] = tensor
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
        state.update(_unfuse(prefix, parts, config.n_experts, config.ffn_dim, config.d_model))
    return state


from_mixtral_state_dict = from_hf_state_dict


def _unfuse(
    prefix: str, parts: dict[str, torch.Tensor], e: int, f: int, d: int
) -> dict[str, torch.Tensor]:
    """HF 5.x fused experts of E experts, width F, model width d -> w1, w3 (E, F, d) and
    w2 (E, d, F). HF stores them as nn.Linear (E, out, in); a transposed (E, in, out) copy is
    recognised by its shape."""
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


def _load_strict(
    model: MoETransformer,
    state: dict[str, torch.Tensor],
    path: Path,
    skip: set[str] | None = None,
) -> None:
    """Load `state` after naming every missing, unexpected or misshapen tensor. With `skip`
    (names the file is not asked for), the tensors become the parameters (`assign`): the
    model was built on the meta device."""
    expected = {k: v for k, v in model.state_dict().items() if k not in (skip or ())}
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
    model.load_state_dict(state, strict=not skip, assign=bool(skip))


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


def _weight_files(path: Path) -> list[Path]:
    """model.safetensors, or the shards named by model.safetensors.index.json."""
    single, index = path / WEIGHTS_FILE, path / WEIGHTS_INDEX_FILE
    if single.is_file():
        return [single]
    if not index.is_file():
        raise ModelError(f"{single} not found (only safetensors checkpoints are read)")
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{index}: not a safetensors index: {exc}") from exc
    files = [path / name for name in sorted(set(weight_map.values()))]
    for file in files:
        if not file.is_file():
            raise ModelError(f"{file} not found (named by {index.name})")
    return files


def _read_tensors(path: Path, routed_experts: bool = True) -> dict[str, torch.Tensor]:
    """Every tensor of model.safetensors, or of the shards its index names; without the
    routed experts' (never read from the file) when `routed_experts` is false."""
    tensors: dict[str, torch.Tensor] = {}
    for file in _weight_files(path):
        try:
            if routed_experts:
                tensors.update(load_file(file, device="cpu"))
                continue
            handle = safe_open(str(file), framework="pt", device="cpu")
            for key in handle.keys():  # noqa: SIM118 - a safe_open handle is not a dict
                normal = _LAYER_MLP.sub(r"\1.block_sparse_moe.", key)
                if not (_EXPERT.match(normal) or _FUSED.match(normal)):
                    tensors[key] = handle.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{file}: cannot read safetensors: {exc}") from exc
    return tensors


def _checkpoint_dtype(tensors: dict[str, torch.Tensor]) -> torch.dtype:
    counts: dict[torch.dtype, int] = {}
    for tensor in tensors.values():
        if tensor.is_floating_point():
            counts[tensor.dtype] = counts.get(tensor.dtype, 0) + tensor.numel()
    return max(counts, key=counts.__getitem__) if counts else torch.float32
