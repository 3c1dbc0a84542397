"""The pure pieces of the training loop: phases, the learning-rate schedule, the data order.

As in nanoGPT (Karpathy): linear warmup then cosine decay to `min_lr_ratio`, and AdamW with
weight decay on matrices only. The rows of a step are a pure function of (seed, phase,
step, rank), dealt round-robin across workers like PyTorch's `DistributedSampler`, which
is what lets `Trainer` resume exactly without saving a sampler. No state, no Ray.

    >>> lr_at(0, total=100, peak=1e-3, warmup=10, min_ratio=0.1)
    0.0001
    >>> sample_indices(12, batch_size=4, step=0, seed=0, phase=0).shape
    (4,)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rayrag.generator.model import IGNORE_INDEX


@dataclass(frozen=True)
class Phase:
    name: str  # "lm" or "reader"
    steps: int
    lr: float


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then cosine from `peak` to `peak * min_ratio`."""
    warmup = min(warmup, total)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices; not norms, biases or embeddings (GPT-2/nanoGPT convention)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "embed_tokens" in name else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def sample_indices(
    n: int, batch_size: int, step: int, seed: int, phase: int, rank: int = 0, world_size: int = 1
) -> np.ndarray:
    """The rows of step `step` for worker `rank`: epochs of seeded permutations, the global
    batch (batch_size * world_size) dealt round-robin like DistributedSampler."""
    positions = step * batch_size * world_size + np.arange(batch_size) * world_size + rank
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(positions // n):
        perm = np.random.default_rng([seed, phase, int(epoch)]).permutation(n)
        hit = positions // n == epoch
        out[hit] = perm[positions[hit] % n]
    return out


def pad_batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-pad (input_ids, labels) pairs -> input_ids, labels, attention_mask (B, S)."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.as_tensor(row_ids)
        labels[i, : len(row_labels)] = torch.as_tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return ids, labels, mask
