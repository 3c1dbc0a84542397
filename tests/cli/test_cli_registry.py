"""`rayrag registry`: register, list, challenger, promote, rollback through the real CLI."""

from __future__ import annotations

import json

import pytest
import torch

from rayrag.config import GeneratorConfig
from rayrag.generator.checkpoint import save_checkpoint
from rayrag.generator.model import MoETransformer
from tests.cli.test_cli import _one_line_error, rayrag

pytestmark = pytest.mark.slow


def _checkpoint(path, seed):
    torch.manual_seed(seed)
    cfg = GeneratorConfig(
        vocab_size=64,
        d_model=16,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        ffn_dim=16,
        n_experts=2,
        experts_per_token=1,
        max_seq_len=16,
        adaptive_softmax_cutoffs=(),
    )
    return save_checkpoint(MoETransformer(cfg), path)


def test_the_registry_lifecycle_through_the_cli(tmp_path, monkeypatch):
    store = [
        "--set",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "--set",
        f"tracking.model_cache={tmp_path / 'cache'}",
    ]

    def run(*args):
        proc = rayrag("registry", *args, *store, "--json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first = run("register", str(_checkpoint(tmp_path / "a", 0)))
    second = run("register", str(_checkpoint(tmp_path / "b", 1)))
    assert first["aliases"] == ["champion"] and second["aliases"] == [] and second["version"] == 2
    assert run("challenger", "2")["aliases"] == ["challenger"]
    promoted = run("promote", "2", "--why", "better answer_f1 on the dev set")
    assert (
        promoted["aliases"] == ["champion"]
        and promoted["promoted_why"] == "better answer_f1 on the dev set"
    )
    rolled = run("rollback", "--why", "p99 regression")
    assert (
        rolled["version"] == 1
        and "champion" in rolled["aliases"]
        and rolled["rolled_back_why"] == "p99 regression"
    )
    listed = run("list")
    assert [v["version"] for v in listed["versions"]] == [2, 1]
    _one_line_error(
        rayrag("registry", "rollback", "--why", "again", *store, cwd=tmp_path),
        "no previous champion",
    )
    _one_line_error(
        rayrag("registry", "register", str(tmp_path / "nothing"), *store, cwd=tmp_path), "nothing"
    )


def test_reading_a_registry_that_is_not_there_is_one_line_and_creates_nothing(tmp_path):
    """`rayrag registry list` where no store exists (a repository root before `make demo`):
    one line that says what to do, exit 2, and no empty mlflow.db left behind."""
    proc = rayrag(
        "registry",
        "list",
        "--set",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        cwd=tmp_path,
    )
    _one_line_error(proc, "no MLflow store at")
    assert "demo.env" in proc.stderr and not (tmp_path / "mlflow.db").exists()
