"""Training schedule: warmup then cosine, decay on matrices only,
seeded sharded data order, padding."""

from __future__ import annotations

import numpy as np
import pytest

from rayrag.generator.model import IGNORE_INDEX
from rayrag.training.schedule import lr_at, pad_batch, param_groups, sample_indices
from tests.training.test_trainer import tiny_config


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 100, 1.0, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert lr_at(0, 3, 1.0, 10, 0.0) == pytest.approx(1 / 3)  # warmup clamped to the phase


def test_weight_decay_only_on_matrices():
    from rayrag.generator.model import MoETransformer

    model = MoETransformer(tiny_config().generator)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim >= 2 and "embed_tokens" not in names[id(p)] for p in decay["params"])
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "model.embed_tokens.weight" in no_decay_names and "model.norm.weight" in no_decay_names
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_sample_indices_are_seeded_epochs_sharded_by_rank():
    one_epoch = np.concatenate([sample_indices(12, 4, s, seed=0, phase=0) for s in range(3)])
    assert sorted(one_epoch.tolist()) == list(range(12))
    assert np.array_equal(sample_indices(12, 4, 5, 0, 0), sample_indices(12, 4, 5, 0, 0))
    r0, r1 = sample_indices(12, 3, 0, 0, 0, 0, 2), sample_indices(12, 3, 0, 0, 0, 1, 2)
    assert not set(r0.tolist()) & set(r1.tolist())


def test_pad_batch_right_pads_and_masks():
    ids, labels, mask = pad_batch([([5, 6, 7], [IGNORE_INDEX, 6, 7]), ([8], [8])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert labels.tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
