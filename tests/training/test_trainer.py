"""Generator training: a loss that falls, exact resume, LoRA, MLflow, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rayrag.config import load_config
from rayrag.generator.checkpoint import load_checkpoint
from rayrag.generator.lora import export_merged, load_adapters, lora_state_dict
from rayrag.index.bundle import IndexBundle
from rayrag.pipelines.train import train
from rayrag.tracking.tracker import Tracker
from rayrag.training.data import TrainDataBuilder
from rayrag.training.trainer import RESUME_DIR, SUMMARY_FILE, Trainer
from tests.training.test_train_data import make_tiny_bundle

REPO = Path(__file__).resolve().parents[2]


def tiny_config(*extra: str):
    return load_config(
        None,
        [
            "generator.vocab_size=512",
            "generator.d_model=32",
            "generator.n_layers=2",
            "generator.n_heads=2",
            "generator.n_kv_heads=1",
            "generator.ffn_dim=48",
            "generator.n_experts=4",
            "generator.experts_per_token=2",
            "generator.adaptive_softmax_cutoffs=[128, 300]",
            "generator.max_seq_len=256",
            "train.lm_steps=12",
            "train.reader_steps=30",
            "train.batch_size=4",
            "train.seq_len=128",
            "train.warmup_steps=2",
            "train.eval_every=6",
            "train.checkpoint_every=5",
            "train.val_fraction=0.25",
            "train.context_passages=2",
            "train.lr=0.005",
            "train.num_threads=1",
            "tracking.enabled=false",
            *extra,
        ],
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-train")
    bundle, qa = make_tiny_bundle(root)
    data = TrainDataBuilder(tiny_config()).run(IndexBundle.load(bundle))
    return root, bundle, qa, data


@pytest.fixture(scope="module")
def trained(tiny):
    """One uninterrupted full run (the reference for resume, and the LoRA base)."""
    root, bundle, _, data = tiny
    out = root / "ckpt-full"
    result = Trainer(tiny_config(), out, bundle=bundle, data=data, progress=False).run()
    return out, result


def test_tiny_training_reduces_loss_and_writes_a_checkpoint(trained):
    out, result = trained
    lm, reader = result.summary["phases"]["lm"], result.summary["phases"]["reader"]
    assert lm["val_loss"] < lm["val_loss_start"] - 0.5
    assert lm["train_loss"] < lm["train_loss_start"]
    assert reader["train_loss"] < reader["train_loss_start"]
    assert result.summary["steps"] == 42 and result.summary["tokens_seen"] > 0
    assert not (out / RESUME_DIR).exists()
    saved = json.loads((out / SUMMARY_FILE).read_text())
    assert saved["config_hash"] == tiny_config().config_hash
    model = load_checkpoint(out)
    assert (out / "tokenizer.json").is_file() and model.config.d_model == 32


class _Crash(Exception):
    pass


class _CrashingTrainer(Trainer):
    def train_step(self, forward_model, optimizer, phase, phase_index, step, lr, log):
        if (phase_index, step) == (1, 7):
            raise _Crash
        return super().train_step(forward_model, optimizer, phase, phase_index, step, lr, log)


class _RecordingTrainer(Trainer):
    seen: list[tuple[int, int]]

    def train_step(self, forward_model, optimizer, phase, phase_index, step, lr, log):
        self.seen = getattr(self, "seen", []) + [(phase_index, step)]
        return super().train_step(forward_model, optimizer, phase, phase_index, step, lr, log)


def test_resume_continues_at_the_saved_step_and_matches_an_uninterrupted_run(tiny, trained):
    root, bundle, _, data = tiny
    reference, _ = trained
    out = root / "ckpt-resumed"
    with pytest.raises(_Crash):
        _CrashingTrainer(tiny_config(), out, bundle=bundle, data=data, progress=False).run()
    assert (out / RESUME_DIR / "state.pt").is_file()  # checkpoint_every=5: reader step 5 saved
    resumed = _RecordingTrainer(
        tiny_config(), out, bundle=bundle, data=data, resume=True, progress=False
    )
    result = resumed.run()
    assert resumed.seen[0] == (1, 5) and len(resumed.seen) == 25
    assert result.summary["resumed"] and result.summary["steps"] == 42
    a, b = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_config(tiny):
    root, bundle, _, data = tiny
    out = root / "ckpt-other"
    with pytest.raises(_Crash):
        _CrashingTrainer(tiny_config(), out, bundle=bundle, data=data, progress=False).run()
    from rayrag.errors import ConfigError

    with pytest.raises(ConfigError, match="different config"):
        Trainer(
            tiny_config("train.lr=0.001"),
            out,
            bundle=bundle,
            data=data,
            resume=True,
            progress=False,
        ).run()


def test_lora_trains_only_adapters_and_saves_them(tiny, trained):
    root, bundle, _, _ = tiny
    base, _ = trained
    out = root / "adapters"
    reports: list[tuple[int, float]] = []
    trainer = Trainer(
        tiny_config("train.reader_steps=6", "train.eval_every=3"),
        out,
        bundle=bundle,
        base=base,
        lora_rank=2,
        progress=False,
        on_validate=lambda step, loss: reports.append((step, loss)),
    )
    result = trainer.run()
    # Every mid-training validation reaches the hook (what a Tune trial reports for ASHA).
    assert [step for step, _ in reports] == [3, 6]
    # summary: 4 places
    assert reports[-1][1] == pytest.approx(result.summary["phases"]["reader"]["val_loss"], abs=1e-4)
    # Merged into a plain checkpoint, the adapters give the adapted model's logits.
    merged = export_merged(base, out, root / "merged")
    ids = torch.randint(4, 200, (2, 16))
    trainer.model.eval()
    with torch.no_grad():
        want = trainer.model(ids).logits
        got = load_checkpoint(merged)(ids).logits
        plain = load_checkpoint(base)(ids).logits
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(plain, want, atol=1e-4)
    assert (merged / "tokenizer.json").is_file() and not (
        merged / "adapter_model.safetensors"
    ).exists()
    assert result.summary["mode"] == "lora" and set(result.summary["phases"]) == {"reader"}
    assert (out / "adapter_model.safetensors").is_file() and not (
        out / "model.safetensors"
    ).exists()
    base_state = load_checkpoint(base).state_dict()
    trained_state = trainer.model.state_dict()
    for key, tensor in base_state.items():  # LoRA wraps q/v_proj: their weight moves under .base
        key = key if key in trained_state else key.replace(".weight", ".base.weight")
        assert torch.equal(tensor, trained_state[key]), key
    adapters = lora_state_dict(trainer.model)
    assert any(k.endswith("lora_B") or "lora_B" in k for k in adapters)
    assert any(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k)  # B starts at zero
    reloaded = load_checkpoint(base)
    load_adapters(reloaded, out)
    again = lora_state_dict(reloaded)
    assert again.keys() == adapters.keys() and all(
        torch.equal(again[k], adapters[k]) for k in again
    )


def test_mlflow_run_has_metrics_and_expert_load_png(tiny):
    root, bundle, qa, data = tiny
    cfg = tiny_config(
        "tracking.enabled=true",
        f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        "train.lm_steps=3",
        "train.reader_steps=3",
    )
    tracker = Tracker(cfg.tracking, artifact_root=root / "artifacts")
    result = train(
        cfg, root / "ckpt-tracked", bundle=bundle, qa=qa, tracker=tracker, progress=False
    )
    assert result.summary["reader_source"] == "qa"
    [run] = [
        r for r in tracker.find_runs("train") if r["run_id"] == result.summary["mlflow_run_id"]
    ]
    for metric in (
        "train/loss",
        "train/nll",
        "train/aux",
        "lr",
        "val/loss",
        "routing/layer0/entropy",
        "routing/layer1/max_violation",
    ):
        assert (
            f"metrics.{metric}" in run and run[f"metrics.{metric}"] == run[f"metrics.{metric}"]
        ), metric
    assert run["tags.config_hash"] == cfg.config_hash and run["params.train.lm_steps"] == "3"
    # Tracker has no artifact listing; the artifact store is a local folder here.
    files = {p.name for p in (root / "artifacts").rglob("*") if p.is_file()}
    assert {"expert_load_lm.png", "expert_load_reader.png", SUMMARY_FILE} <= files
    png = next((root / "artifacts").rglob("expert_load_lm.png")).read_bytes()
    assert png.startswith(b"\x89PNG")


def _rayrag(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'cli-mlflow.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "rayrag.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--bundle", "NOPE", "--out", "ck"], "NOPE"),
        (["--bundle", "NOPE", "--out", "ck", "--lora-rank", "4"], "--base"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, needle):
    args = [str(tmp_path / a) if a == "NOPE" else a for a in args]
    proc = _rayrag("train", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
