"""Ray Train adapter: two DDP workers train the tiny model and rank 0 writes the checkpoint."""

from __future__ import annotations

import pytest

from rayrag.generator.checkpoint import load_checkpoint
from rayrag.pipelines.train import train
from tests.training.test_train_data import make_tiny_bundle
from tests.training.test_trainer import tiny_config


@pytest.mark.slow
def test_two_workers_with_ray_train(tmp_path, ray_local):
    bundle, _ = make_tiny_bundle(tmp_path)
    cfg = tiny_config("train.lm_steps=3", "train.reader_steps=3", "train.checkpoint_every=2")
    result = train(cfg, tmp_path / "ckpt-ddp", bundle=bundle, workers=2, progress=False)
    assert result.summary["workers"] == 2 and result.summary["steps"] == 6
    assert load_checkpoint(tmp_path / "ckpt-ddp").config.n_experts == 4
