"""Training report: per-phase summary numbers, the expert-load heatmap, what goes to MLflow."""

from __future__ import annotations

import numpy as np

from rayrag.config import TrackingConfig
from rayrag.tracking.tracker import Tracker
from rayrag.training.report import (
    SUMMARY_FILE,
    TRAIN_LOSS_WINDOW,
    PhaseLog,
    log_artifacts,
    phase_summary,
    plot_expert_load,
)
from rayrag.training.schedule import Phase


def test_phase_summary_smooths_the_final_train_loss():
    losses = [10.0] * 5 + [2.0] * TRAIN_LOSS_WINDOW
    log = PhaseLog(losses=losses, val_start=5.123456, val_end=None, seconds=1.234, tokens=640)
    summary = phase_summary([Phase("lm", 15, 0.005)], [log])
    assert summary == {
        "lm": {
            "steps": 15,
            "lr": 0.005,
            "train_loss_start": 10.0,
            "train_loss": 2.0,
            "val_loss_start": 5.1235,
            "val_loss": None,
            "tokens": 640,
            "seconds": 1.23,
        }
    }
    assert phase_summary([Phase("reader", 0, 0.005)], [PhaseLog()])["reader"]["train_loss"] is None


def test_plot_expert_load_writes_a_png(tmp_path):
    path = plot_expert_load(
        np.full((2, 4), 0.25), tmp_path / "load.png", title="expert token share"
    )
    assert path.read_bytes().startswith(b"\x89PNG")


def test_log_artifacts_sends_summary_counts_and_one_heatmap_per_phase_with_routing(tmp_path):
    import mlflow

    phases = [Phase("lm", 2, 0.1), Phase("reader", 2, 0.1)]
    logs = [PhaseLog(share_sum=[[1.0, 1.0], [0.5, 1.5]], share_steps=2), PhaseLog()]
    tracker = Tracker(
        TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
        artifact_root=tmp_path / "artifacts",
    )
    with tracker.start_run("train") as run:
        log_artifacts(run, phases, logs, {"data": {"chunks": 8}})
    client = mlflow.MlflowClient(tracker.tracking_uri)
    assert client.get_run(run.run_id).data.metrics == {"data/chunks": 8.0}
    assert {a.path for a in client.list_artifacts(run.run_id)} >= {SUMMARY_FILE, "plots"}
    assert [a.path for a in client.list_artifacts(run.run_id, "plots")] == [
        "plots/expert_load_lm.png"
    ]

    untracked = Tracker(
        TrackingConfig(enabled=False, tracking_uri=f"sqlite:///{tmp_path / 'off.db'}")
    )
    with untracked.start_run("train") as run:  # tracking disabled: nothing is logged, nothing fails
        log_artifacts(run, phases, logs, {"data": {}})
    assert not (tmp_path / "off.db").exists()
