"""LoRA adapters for the generator: attention projections and, optionally, MoE experts.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models": a frozen weight W
gets a trainable low-rank update, y = W x + (alpha / r) B A dropout(x), with A
kaiming-uniform and B zero so the adapted model starts exactly equal to the base. PEFT's
conventions otherwise (names `lora_A` / `lora_B`, scaling alpha / r, merge = W += s B A).

Two choices keep adapters invisible to the rest of rayrag:
- an adapted module subclasses the one it replaces (`LoRALinear` is an `nn.Linear`,
  `LoRASwiGLUExperts` is a `SwiGLUExperts`) and adopts the base's Parameter objects, so the
  base weights keep their state-dict keys (`...q_proj.weight`, `...experts.w1`), the
  Mixtral names the checkpoint code maps; adapter tensors are the extra keys containing
  `lora_` (`lora_state_dict`), saved apart by `save_adapters`.
- expert adapters are per-expert stacks, A (E, r, in) and B (E, out, r), applied inside the
  SwiGLU (the nonlinearity sits between w1/w3 and w2, so the update cannot be added after).

On disk, adapters are in PEFT's format (`save_adapters`): `adapter_config.json` with PEFT's
LoRA schema and `adapter_model.safetensors` with PEFT's key names on HF module paths, so
`peft.PeftModel.from_pretrained` and vLLM (`--lora-modules`) load attention adapters
trained here, and `load_adapters` reads adapters PEFT trained. Expert adapters are written
in PEFT's per-expert layout with Mixtral's names (w1, w3, w2), which PEFT loads; vLLM
loads expert weights only in versions with FusedMoE LoRA (older ones refuse the directory),
so serve those merged (`export_merged`) where vLLM lacks it.

Serving merges (`merge_lora`): the base forward then runs unchanged at base speed, and
`unmerge_lora` restores the exact base weights (up to fp32 rounding) to keep training.
Merge before handing expert weights to anything that bypasses `forward_sorted` (a
`MoELayer.expert_fn`, e.g. expert parallelism, reads the stacked weights only).

    >>> names = apply_lora(model, LoraConfig(rank=8, alpha=16, targets=("q_proj", "v_proj")))
    >>> mark_only_lora_trainable(model)
    >>> ...train...
    >>> save_adapters(model, "runs/adapters", cfg.lora, base_model="mixtral-dir")
    >>> fresh = load_checkpoint("mixtral-dir"); load_adapters(fresh, "runs/adapters")
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from rayrag.atomic import fsync_dir, swap_dir_into_place
from rayrag.config import LoraConfig
from rayrag.errors import ConfigError, ModelError
from rayrag.generator.checkpoint import load_checkpoint, save_checkpoint
from rayrag.generator.moe import (
    SwiGLUExperts,
    _ContiguousGrad,
    _grouped_linear,
    _loop_linear,
    grouped_mm_runs,
)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
EXPERT_WEIGHTS = ("w1", "w3", "w2")  # gate, up, down; each (E, out, in)

# (rows (n, in), stacked weight (E, out, in)) -> (n, out): grouped matmul, loop or one expert.
_StackedLinear = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _kaiming_(tensor: torch.Tensor) -> torch.Tensor:
    # nn.Linear's own init (and PEFT's for A): kaiming-uniform with a = sqrt(5).
    return nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))


class LoRALinear(nn.Linear):
    """An `nn.Linear` with a frozen weight and a trainable rank-r update.

    >>> layer = LoRALinear(nn.Linear(64, 64, bias=False), rank=4, alpha=8.0)
    >>> layer.lora_A.shape, layer.lora_B.shape
    (torch.Size([4, 64]), torch.Size([64, 4]))
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        if rank <= 0:
            raise ConfigError(f"LoRA rank must be > 0, got {rank} (lora.rank)")
        weight = base.weight
        # Built on the meta device (allocates nothing), then the base's Parameters are adopted.
        super().__init__(
            base.in_features,
            base.out_features,
            bias=base.bias is not None,
            device="meta",
            dtype=weight.dtype,
        )
        self.weight = weight
        self.bias = base.bias
        for p in (self.weight, self.bias):
            if p is not None:
                p.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.lora_A = nn.Parameter(_kaiming_(weight.new_empty(rank, base.in_features)))  # (r, in)
        self.lora_B = nn.Parameter(weight.new_zeros(base.out_features, rank))  # (out, r)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.train(base.training)  # a model in eval stays in eval, adapter dropout included

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        return y + F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.weight += self.delta_weight().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight -= self.delta_weight().to(self.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


class LoRASwiGLUExperts(SwiGLUExperts):
    """A `SwiGLUExperts` stack with per-expert rank-r updates on w1, w3 and w2.

    Expert j computes (W2_j + s B2_j A2_j)(silu((W1_j + s B1_j A1_j) x) * (W3_j + s B3_j A3_j) x).
    A (E, r, in) and B (E, out, r) are stacks in the same nn.Linear layout as the weights, so
    the low-rank terms run through moe.py's own grouped matmul (or its per-expert loop) on
    the activations: no (E, out, in) delta is materialised, and dropout on their input works
    as in `LoRALinear`. Merged, it is the base class's forward, unchanged.
    """

    def __init__(self, base: SwiGLUExperts, rank: int, alpha: float, dropout: float = 0.0) -> None:
        if rank <= 0:
            raise ConfigError(f"LoRA rank must be > 0, got {rank} (lora.rank)")
        with torch.device("meta"):  # allocates nothing; the base's Parameters are adopted below
            super().__init__(base.n_experts, base.d_model, base.ffn_dim, base.dispatch)
        # Plain attributes the base holds (sizes, dispatch, last_dispatch) carry over.
        for name, value in vars(base).items():
            if not name.startswith("_") and name != "training":
                setattr(self, name, value)
        for name in EXPERT_WEIGHTS:
            weight = getattr(base, name)
            weight.requires_grad_(False)
            setattr(self, name, weight)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for name in EXPERT_WEIGHTS:
            weight = getattr(self, name)  # (E, out, in)
            n_experts, out_dim, in_dim = weight.shape
            a = weight.new_empty(n_experts, rank, in_dim)  # (E, r, in)
            for e in range(n_experts):
                _kaiming_(a[e])
            self.lora_A[name] = nn.Parameter(a)
            # (E, out, r)
            self.lora_B[name] = nn.Parameter(weight.new_zeros(n_experts, out_dim, rank))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.train(base.training)  # a model in eval stays in eval, adapter dropout included

    def forward_sorted(self, x_sorted: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x_sorted (N, d), rows grouped by expert id ascending; counts (E,) int64 -> (N, d)."""
        if self.merged:
            return super().forward_sorted(x_sorted, counts)
        assert x_sorted.shape[-1] == self.d_model and counts.shape == (self.n_experts,)
        sizes = counts.tolist()

        def loop(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return _loop_linear(x, w, sizes)

        base_linear = lora_linear = loop
        self.last_dispatch = "loop"
        if x_sorted.shape[0] and self.use_grouped_mm(x_sorted):
            offsets = counts.cumsum(0).to(torch.int32)  # (E,) end row of each expert's group

            def grouped(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
                return _grouped_linear(x, w, offsets)

            base_linear, self.last_dispatch = grouped, "grouped_mm"
            # The rank-r matmuls have their own widths (r = 4 is misaligned for bf16 kernels).
            dev, dtype, r = x_sorted.device, x_sorted.dtype, self.rank
            if all(
                grouped_mm_runs(dev, dtype, i, o)
                for i, o in (
                    (self.d_model, r),
                    (self.ffn_dim, r),
                    (r, self.ffn_dim),
                    (r, self.d_model),
                )
            ):
                lora_linear = grouped
        try:
            return _ContiguousGrad.apply(self._swiglu(x_sorted, base_linear, lora_linear))  # (N, d)
        except RuntimeError:
            if base_linear is loop:
                raise
            # A shape the probe did not cover (as in SwiGLUExperts): take the loop this time.
            self.last_dispatch = "loop"
            return self._swiglu(x_sorted, loop, loop)

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Adapted expert e alone on rows x (n, d) -> (n, d): the textbook form, a reference."""
        if self.merged:  # the stacked weights already hold the update
            w1, w3, w2 = (getattr(self, name)[e].to(x.dtype) for name in EXPERT_WEIGHTS)
            return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)

        def single(rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return F.linear(rows, w[e])

        return self._swiglu(x, single, single)

    def _swiglu(
        self, x: torch.Tensor, base_linear: _StackedLinear, lora_linear: _StackedLinear
    ) -> torch.Tensor:
        def adapted(rows: torch.Tensor, name: str) -> torch.Tensor:
            weight = getattr(self, name).to(rows.dtype)  # (E, out, in)
            # (E, r, in), (E, out, r)
            a, b = (
                self.lora_A[name].to(rows.dtype),
                self.lora_B[name].to(rows.dtype),
            )
            low_rank = lora_linear(lora_linear(self.lora_dropout(rows), a), b)  # (n, r) -> (n, out)
            return base_linear(rows, weight) + low_rank * self.scaling

        hidden = F.silu(adapted(x, "w1")) * adapted(x, "w3")  # (n, ffn)
        return adapted(hidden, "w2")  # (n, d)

    def delta_weight(self, name: str) -> torch.Tensor:
        return torch.bmm(self.lora_B[name], self.lora_A[name]) * self.scaling  # (E, out, in)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            for name in EXPERT_WEIGHTS:
                weight = getattr(self, name)
                weight += self.delta_weight(name).to(weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            for name in EXPERT_WEIGHTS:
                weight = getattr(self, name)
                weight -= self.delta_weight(name).to(weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


_LORA_MODULES = (LoRALinear, LoRASwiGLUExperts)


def apply_lora(model: nn.Module, config: LoraConfig) -> list[str]:
    """Replace the targeted submodules by adapted ones; returns their qualified names.

    `config.targets` are attribute names of `nn.Linear` children (`q_proj` matches every
    `model.layers.{i}.self_attn.q_proj`); `config.experts` adds every `SwiGLUExperts`.
    Rank 0 means no adapters. A target that matches nothing is a ConfigError (a typo would
    otherwise train nothing but the base).
    """
    if config.rank == 0:
        return []
    if any(isinstance(m, _LORA_MODULES) for m in model.modules()):
        raise ConfigError("model already has LoRA adapters; apply_lora runs once per model")
    # Find everything first and mutate after, so a bad config leaves the model untouched.
    found: list[
        tuple[nn.Module, str, str, nn.Module]
    ] = []  # (parent, attribute, qualified name, child)
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if (child_name in config.targets and isinstance(child, nn.Linear)) or (
                config.experts and isinstance(child, SwiGLUExperts)
            ):
                qualified = f"{parent_name}.{child_name}" if parent_name else child_name
                found.append((parent, child_name, qualified, child))
    linear_names = {attr for _, attr, _, child in found if isinstance(child, nn.Linear)}
    unmatched = [t for t in config.targets if t not in linear_names]
    if unmatched:
        raise ConfigError(
            f"lora.targets {unmatched} match no nn.Linear submodule of "
            f"{type(model).__name__} (lora.targets)"
        )
    if config.experts and not any(isinstance(child, SwiGLUExperts) for *_, child in found):
        raise ConfigError(
            f"lora.experts is true but {type(model).__name__} has no SwiGLUExperts (lora.experts)"
        )
    for parent, attr, _, child in found:
        adapter_cls = LoRALinear if isinstance(child, nn.Linear) else LoRASwiGLUExperts
        setattr(parent, attr, adapter_cls(child, config.rank, config.alpha, config.dropout))
    return [qualified for _, _, qualified, _ in found]


def _is_lora_key(name: str) -> bool:
    return any(part.startswith("lora_") for part in name.split("."))


def mark_only_lora_trainable(model: nn.Module) -> None:
    """Freeze everything but the adapters (router, norms, embeddings and head included)."""
    for name, param in model.named_parameters():
        param.requires_grad_(_is_lora_key(name))


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if _is_lora_key(k)}


def merge_lora(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, _LORA_MODULES):
            module.merge()


def unmerge_lora(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, _LORA_MODULES):
            module.unmerge()


def export_merged(base: str | Path, adapters: str | Path, out: str | Path) -> Path:
    """A plain, servable checkpoint at `out`: `base` with the adapters in `adapters` merged into
    its weights (W + alpha/r B A), its tokenizer copied. What a tuning sweep registers as the
    challenger: the Reader, expert shards and Mixtral export read it like any checkpoint."""
    plain = load_checkpoint(base)
    dtype = next(plain.parameters()).dtype
    plain = plain.float()
    adapted = copy.deepcopy(plain)
    load_adapters(adapted, adapters)
    merge_lora(adapted)
    merged = {k: v for k, v in adapted.state_dict().items() if not _is_lora_key(k)}
    plain.load_state_dict(merged)  # LoRA modules kept the base's parameter names: the keys agree
    return save_checkpoint(plain.to(dtype), out, tokenizer_path=base)


def _adapted_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, _LORA_MODULES)]


def _mismatches(model: nn.Module, config: LoraConfig, other: str) -> list[str]:
    """How the model's adapters differ from `config` (rank, targets, experts); [] = they agree."""
    adapted = [(name, m) for name, m in model.named_modules() if isinstance(m, _LORA_MODULES)]
    ranks = sorted({m.rank for _, m in adapted})
    targets = sorted({name.rsplit(".", 1)[-1] for name, m in adapted if isinstance(m, LoRALinear)})
    experts = any(isinstance(m, LoRASwiGLUExperts) for _, m in adapted)
    problems = []
    if ranks != [config.rank]:
        problems.append(f"rank {ranks[0] if len(ranks) == 1 else ranks} vs {other} {config.rank}")
    if targets != sorted(config.targets):
        problems.append(f"targets {targets} vs {other} {sorted(config.targets)}")
    if experts != config.experts:
        problems.append(f"experts {experts} vs {other} {config.experts}")
    return problems


# -- PEFT's on-disk format ---------------------------------------------------------------------
#
# What PEFT's `save_pretrained` writes for a LoRA on a causal LM, and what vLLM's LoRA loader
# reads: adapter_config.json (PEFT's LoraConfig fields) + adapter_model.safetensors, one
# (r, in) `lora_A.weight` and one (out, r) `lora_B.weight` per adapted nn.Linear, under
# `base_model.model.<module path>`. Our module paths are HF's (`model.layers.{i}.self_attn.
# q_proj`), so the same tensors load into `MixtralForCausalLM` through PEFT.

PEFT_PREFIX = "base_model.model."
PEFT_SCHEMA_VERSION = "0.21.2"  # the PEFT release whose adapter_config.json keys are written
LEGACY_FORMAT_VERSION = 1  # rayrag's own adapter_config.json before PEFT's: read, never written
# Expert adapters in PEFT's per-expert layout, the one PEFT writes for a Mixtral whose experts
# are nn.Linear modules (transformers 4.x): `<experts>.{j}.w1.lora_A.weight`. PEFT 0.21 maps
# these onto transformers 5's fused expert parameters itself.
EXPERT_TARGETS = ("w1", "w3", "w2")
_PEFT_LINEAR_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")
_PEFT_EXPERT_KEY = re.compile(
    r"^(?P<module>.+\.experts)\.(?P<expert>\d+)\.(?P<weight>w[123])\.lora_(?P<ab>[AB])\.weight$"
)
# PEFT options that change what an adapter computes and that LoRALinear does not implement,
# with the value that means "off". A directory that turns one on is refused, not half-loaded.
_PEFT_UNSUPPORTED = {
    "use_dora": False,
    "use_rslora": False,
    "bias": "none",
    "lora_bias": False,
    "fan_in_fan_out": False,
    "modules_to_save": None,
    "rank_pattern": {},
    "alpha_pattern": {},
    "layer_replication": None,
    "target_parameters": [],
    "trainable_token_indices": None,
    "alora_invocation_tokens": None,
    "use_qalora": False,
}


def peft_adapter_config(config: LoraConfig, base_model: str | None = None) -> dict[str, Any]:
    """adapter_config.json as PEFT 0.21 writes it for `LoraConfig(task_type="CAUSAL_LM")`:
    every key PEFT writes, PEFT's defaults where rayrag has no setting, and no other key
    (PEFT warns about keys it does not know). `target_modules` are `lora.targets`, plus
    w1, w3, w2 with `lora.experts`."""
    alpha = int(config.alpha) if float(config.alpha).is_integer() else config.alpha
    targets = list(config.targets) + (list(EXPERT_TARGETS) if config.experts else [])
    out: dict[str, Any] = {
        "alora_invocation_tokens": None,
        "alpha_pattern": {},
        "arrow_config": None,
        "auto_mapping": None,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "corda_config": None,
        "ensure_weight_tying": False,
        "eva_config": None,
        "exclude_modules": None,
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "kasa_config": None,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": alpha,
        "lora_bias": False,
        "lora_dropout": config.dropout,
        "lora_ga_config": None,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "monteclora_config": None,
        "peft_type": "LORA",
        "peft_version": PEFT_SCHEMA_VERSION,
        "qalora_group_size": 16,
        "r": config.rank,
        "rank_pattern": {},
        "revision": None,
        "target_modules": targets,
        "target_parameters": [],
        "task_type": "CAUSAL_LM",
        "trainable_token_indices": None,
        "use_bdlora": None,
        "use_dora": False,
        "use_qalora": False,
        "use_rslora": False,
        "velora_config": None,
    }
    return out


def to_peft_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's adapters under PEFT's key names: `base_model.model.<path>.lora_A.weight`
    (r, in) and `.lora_B.weight` (out, r); an expert stack is split per expert, each its own
    storage (safetensors refuses shared ones)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = module.lora_A.detach()
            out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = module.lora_B.detach()
        elif isinstance(module, LoRASwiGLUExperts):
            for weight in EXPERT_WEIGHTS:
                for ab, stack in (("A", module.lora_A[weight]), ("B", module.lora_B[weight])):
                    for j in range(stack.shape[0]):
                        key = f"{PEFT_PREFIX}{name}.{j}.{weight}.lora_{ab}.weight"
                        out[key] = stack[j].detach().clone()
    return out


def _parse_peft_key(key: str, source: str) -> tuple[re.Match[str], bool]:
    """(match, is_expert) of a PEFT adapter key; anything but a plain LoRA factor (DoRA
    magnitudes, embedding adapters, biases) is a ModelError."""
    if not key.startswith(PEFT_PREFIX):
        raise ModelError(f"{source}: {key!r} is not a PEFT LoRA key (base_model.model.<module>)")
    name = key.removeprefix(PEFT_PREFIX)
    if m := _PEFT_EXPERT_KEY.match(name):
        return m, True
    if m := _PEFT_LINEAR_KEY.match(name):
        return m, False
    raise ModelError(
        f"{source}: {key!r} is not a LoRA A/B weight (rayrag loads plain LoRA adapters)"
    )


def from_peft_state_dict(tensors: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """PEFT-named adapter tensors -> the state-dict keys of our adapted modules
    (`<path>.lora_A`, expert stacks `<experts>.lora_A.w1` (E, r, in))."""
    state: dict[str, torch.Tensor] = {}
    experts: dict[tuple[str, str, str], dict[int, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        m, is_expert = _parse_peft_key(key, source)
        if is_expert:
            slot = (m["module"], m["weight"], m["ab"])
            experts.setdefault(slot, {})[int(m["expert"])] = tensor
        else:
            state[f"{m['module']}.lora_{m['ab']}"] = tensor
    for (module, weight, ab), by_expert in experts.items():
        ids = sorted(by_expert)
        if ids != list(range(len(ids))):
            raise ModelError(
                f"{source}: {module}.*.{weight}.lora_{ab}: experts {ids[:8]} are not 0..n-1"
            )
        state[f"{module}.lora_{ab}.{weight}"] = torch.stack([by_expert[j] for j in ids])
    return state


def save_adapters(
    model: nn.Module, path: str | Path, config: LoraConfig, base_model: str | Path | None = None
) -> Path:
    """Write the model's adapters into `path` in PEFT's format, atomically.

    `adapter_config.json` (PEFT's LoRA schema, `base_model_name_or_path` = `base_model`) and
    `adapter_model.safetensors` (PEFT's key names), so `PeftModel.from_pretrained` and vLLM
    load attention adapters as they are: serving needs no conversion step. Expert adapters
    (`lora.experts`) are written in PEFT's per-expert layout under Mixtral's names, which
    PEFT loads and vLLM only with FusedMoE LoRA (see the module docstring). The
    directory is filled under a temp name and renamed into place, so a reader sees the old
    adapters or the new ones, never one file of each.
    """
    state = to_peft_state_dict(model)
    if not state:
        raise ConfigError(
            "model has no LoRA adapters to save (apply_lora first, with lora.rank > 0)"
        )
    problems = _mismatches(model, config, "config")
    if problems:
        raise ConfigError(
            f"the model's adapters do not match the lora config: {'; '.join(problems)}"
        )
    meta = peft_adapter_config(config, str(base_model) if base_model is not None else None)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tensors = {k: v.to("cpu").contiguous() for k, v in state.items()}
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(
            json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
            with open(tmp / name, "rb") as handle:
                os.fsync(handle.fileno())
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(out.parent)
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    if (
        out.exists()
        and not (out / ADAPTER_CONFIG).is_file()
        and (not out.is_dir() or any(out.iterdir()))
    ):
        raise ConfigError(f"refusing to replace {out}: it exists and is not an adapter directory")
    swap_dir_into_place(tmp, out)


def read_adapter_config(path: str | Path) -> LoraConfig:
    """The `LoraConfig` of the adapters in `path` (PEFT's format, or rayrag's older one):
    rank, alpha and dropout from the config, targets and experts from the saved tensors."""
    path = Path(path)
    raw = _read_config(path)
    if _is_legacy(raw):
        return _legacy_config(raw, path)
    return _peft_config(raw, _weight_keys(path), path / ADAPTER_CONFIG)


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise ModelError(f"adapter config not found: {config_file}")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(
            f"adapter config is not valid JSON: {config_file} ({type(exc).__name__})"
        ) from None
    if not isinstance(raw, dict):
        raise ModelError(f"adapter config {config_file} is not a JSON object")
    return raw


def _is_legacy(raw: dict[str, Any]) -> bool:
    return "peft_type" not in raw and "format_version" in raw


def _peft_config(raw: dict[str, Any], keys: list[str], config_file: Path) -> LoraConfig:
    """PEFT's adapter_config.json + the tensor names -> LoraConfig. Targets are the adapted
    modules' names as the tensors show them (PEFT keeps target_modules that matched nothing),
    in target_modules' order where it lists them."""
    if raw.get("peft_type") != "LORA":
        raise ModelError(
            f"adapter config {config_file}: peft_type must be 'LORA', got {raw.get('peft_type')!r}"
        )
    on = [
        f"{k}={raw[k]!r}"
        for k, off in _PEFT_UNSUPPORTED.items()
        if raw.get(k) not in (off, None, [], {})
    ]
    if on:
        raise ModelError(
            f"adapter config {config_file} uses PEFT options rayrag's LoRA does not implement: "
            f"{', '.join(on)} (plain LoRA only)"
        )
    missing = [k for k in ("r", "lora_alpha") if k not in raw]
    if missing:
        raise ModelError(f"adapter config {config_file} lacks keys {missing}")
    linear, experts = set(), False
    for key in keys:
        m, is_expert = _parse_peft_key(key, str(config_file.parent / ADAPTER_WEIGHTS))
        if is_expert:
            experts = True
        else:
            linear.add(m["module"].rsplit(".", 1)[-1])
    listed = raw.get("target_modules")
    order = [t for t in listed if t in linear] if isinstance(listed, list) else []
    targets = tuple(dict.fromkeys([*order, *sorted(linear)]))
    return _lora_config(
        config_file,
        rank=raw["r"],
        alpha=raw["lora_alpha"],
        dropout=raw.get("lora_dropout", 0.0),
        targets=targets,
        experts=experts,
    )


def _legacy_config(raw: dict[str, Any], path: Path) -> LoraConfig:
    """rayrag's adapter_config.json before PEFT's format (format_version 1)."""
    config_file = path / ADAPTER_CONFIG
    required = ("format_version", "rank", "alpha", "dropout", "targets", "experts")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ModelError(f"adapter config {config_file} lacks keys {missing}")
    if raw["format_version"] != LEGACY_FORMAT_VERSION:
        raise ModelError(
            f"adapter format_version {raw['format_version']} is not supported "
            f"(expected {LEGACY_FORMAT_VERSION}, or PEFT's format): {config_file}"
        )
    return _lora_config(
        config_file,
        rank=raw["rank"],
        alpha=raw["alpha"],
        dropout=raw["dropout"],
        targets=tuple(raw["targets"]),
        experts=raw["experts"],
    )


def _lora_config(config_file: Path, **fields: Any) -> LoraConfig:
    try:
        return LoraConfig(**fields)
    except (ValidationError, TypeError) as exc:
        raise ModelError(
            f"adapter config {config_file} has invalid values "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0]})"
        ) from None


def _weights_file(path: Path) -> Path:
    weights_file = path / ADAPTER_WEIGHTS
    if not weights_file.is_file():
        raise ModelError(f"adapter weights not found: {weights_file}")
    return weights_file


def _weight_keys(path: Path) -> list[str]:
    weights_file = _weights_file(path)
    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError) as exc:
        raise ModelError(
            f"adapter weights are corrupt: {weights_file} ({type(exc).__name__})"
        ) from None


def _read_adapters(path: Path) -> tuple[LoraConfig, dict[str, torch.Tensor], list[str] | None]:
    """(config, tensors under our state-dict keys, the adapted modules a legacy dir lists)."""
    raw = _read_config(path)
    weights_file = _weights_file(path)
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError) as exc:
        raise ModelError(
            f"adapter weights are corrupt: {weights_file} ({type(exc).__name__})"
        ) from None
    if _is_legacy(raw):
        return _legacy_config(raw, path), tensors, raw.get("adapted_modules")
    config = _peft_config(raw, list(tensors), path / ADAPTER_CONFIG)
    return config, from_peft_state_dict(tensors, str(weights_file)), None


def load_adapters(model: nn.Module, path: str | Path) -> list[str]:
    """Load the adapters in `path` into `model`; returns the adapted module names.

    `path` is a PEFT LoRA directory, ours (`save_adapters`) or one PEFT's `save_pretrained`
    wrote for the same architecture, or a directory in rayrag's older format (read, never
    written). A model without adapters gets them first (`apply_lora` with the saved config);
    a model that already has adapters must have the same rank, targets and expert setting.
    Every saved tensor must find its key and shape, and every adapter of the model must be in
    the file: a partial load would silently serve a different model. Loading unmerges
    nothing: call it on an unmerged model (a merged one is a ModelError).
    """
    path = Path(path)
    saved, tensors, listed = _read_adapters(path)
    present = [m for m in model.modules() if isinstance(m, _LORA_MODULES)]
    if not present:
        names = apply_lora(model, saved)
    else:
        problems = _mismatches(model, saved, "saved")
        if problems:
            raise ModelError(f"adapters in {path} do not match the model's: {'; '.join(problems)}")
        if any(m.merged for m in present):
            raise ModelError("cannot load adapters into a merged model; unmerge_lora first")
        names = _adapted_names(model)
    if listed is not None and sorted(listed) != sorted(names):
        raise ModelError(
            f"adapters in {path} were saved for modules {sorted(listed)[:4]}..., "
            f"the model adapts {sorted(names)[:4]}... (a different architecture)"
        )
    weights_file = path / ADAPTER_WEIGHTS
    expected = lora_state_dict(model)
    extra = sorted(set(tensors) - set(expected))
    absent = sorted(set(expected) - set(tensors))
    if extra or absent:
        raise ModelError(
            f"adapter weights in {weights_file} do not match the model: "
            f"{len(absent)} missing (e.g. {absent[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})"
        )
    for key, tensor in tensors.items():
        if tensor.shape != expected[key].shape:
            raise ModelError(
                f"adapter tensor {key} has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(tensors, strict=False)
    for module in model.modules():  # the saved alpha wins (dropout matters only in training)
        if isinstance(module, _LORA_MODULES):
            module.alpha, module.scaling = saved.alpha, saved.alpha / saved.rank
    return names
