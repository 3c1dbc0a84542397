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

Serving merges (`merge_lora`): the base forward then runs unchanged at base speed, and
`unmerge_lora` restores the exact base weights (up to fp32 rounding) to keep training.
Merge before handing expert weights to anything that bypasses `forward_sorted` (a
`MoELayer.expert_fn`, e.g. expert parallelism, reads the stacked weights only).

    >>> names = apply_lora(model, LoraConfig(rank=8, alpha=16, targets=("q_proj", "v_proj")))
    >>> mark_only_lora_trainable(model)
    >>> ...train...
    >>> save_adapters(model, "runs/adapters", cfg.lora)
    >>> fresh = load_checkpoint("runs/base"); load_adapters(fresh, "runs/adapters")
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from safetensors import SafetensorError
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
ADAPTER_FORMAT_VERSION = 1
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
            self.lora_B[name] = nn.Parameter(
                weight.new_zeros(n_experts, out_dim, rank)
            )  # (E, out, r)
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
            a, b = (
                self.lora_A[name].to(rows.dtype),
                self.lora_B[name].to(rows.dtype),
            )  # (E, r, in), (E, out, r)
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


def save_adapters(model: nn.Module, path: str | Path, config: LoraConfig) -> Path:
    """Write `adapter_config.json` + `adapter_model.safetensors` into `path`, atomically.

    The directory is filled under a temp name and renamed into place, so a reader sees the
    old adapters or the new ones, never one file of each.
    """
    state = lora_state_dict(model)
    if not state:
        raise ConfigError(
            "model has no LoRA adapters to save (apply_lora first, with lora.rank > 0)"
        )
    problems = _mismatches(model, config, "config")
    if problems:
        raise ConfigError(
            f"the model's adapters do not match the lora config: {'; '.join(problems)}"
        )
    meta: dict[str, Any] = {
        "format_version": ADAPTER_FORMAT_VERSION,
        "rank": config.rank,
        "alpha": config.alpha,
        "dropout": config.dropout,
        "targets": list(config.targets),
        "experts": config.experts,
        "adapted_modules": _adapted_names(model),
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
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
    """The `LoraConfig` that `save_adapters` recorded in `path`."""
    path = Path(path)
    meta = _read_meta(path)
    try:
        return LoraConfig(
            rank=meta["rank"],
            alpha=meta["alpha"],
            dropout=meta["dropout"],
            targets=tuple(meta["targets"]),
            experts=meta["experts"],
        )
    except (ValidationError, TypeError) as exc:
        raise ModelError(
            f"adapter config {path / ADAPTER_CONFIG} has invalid values "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0]})"
        ) from None


def _read_meta(path: Path) -> dict[str, Any]:
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise ModelError(f"adapter config not found: {config_file}")
    try:
        meta = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(
            f"adapter config is not valid JSON: {config_file} ({type(exc).__name__})"
        ) from None
    required = ("format_version", "rank", "alpha", "dropout", "targets", "experts")
    missing = [k for k in required if k not in meta] if isinstance(meta, dict) else list(required)
    if missing:
        raise ModelError(f"adapter config {config_file} lacks keys {missing}")
    if meta["format_version"] != ADAPTER_FORMAT_VERSION:
        raise ModelError(
            f"adapter format_version {meta['format_version']} is not supported "
            f"(expected {ADAPTER_FORMAT_VERSION}): {config_file}"
        )
    return meta


def load_adapters(model: nn.Module, path: str | Path) -> list[str]:
    """Load adapters saved by `save_adapters` into `model`; returns the adapted module names.

    A model without adapters gets them first (`apply_lora` with the saved config); a model
    that already has adapters must have the same rank, targets and expert setting. Every
    saved tensor must find its key and shape, and every adapter of the model must be in the
    file: a partial load would silently serve a different model. Loading unmerges nothing:
    call it on an unmerged model (a merged one is a ModelError).
    """
    path = Path(path)
    meta = _read_meta(path)
    saved = read_adapter_config(path)
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
    if sorted(meta.get("adapted_modules", names)) != sorted(names):
        raise ModelError(
            f"adapters in {path} were saved for modules {sorted(meta['adapted_modules'])[:4]}..., "
            f"the model adapts {sorted(names)[:4]}... (a different architecture)"
        )

    weights_file = path / ADAPTER_WEIGHTS
    if not weights_file.is_file():
        raise ModelError(f"adapter weights not found: {weights_file}")
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError) as exc:
        raise ModelError(
            f"adapter weights are corrupt: {weights_file} ({type(exc).__name__})"
        ) from None
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
