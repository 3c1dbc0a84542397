"""What a training run reports: per-phase logs, the `training.json` summary, MLflow artifacts.

Numbers as nanoGPT logs them (train loss smoothed over the last steps, validation loss at
the start and end of a phase), plus the expert-load heatmap: each layer's mean share of
token-slots per expert, the balance Switch Transformer's auxiliary loss (Fedus et al. 2022)
pushes towards uniform, so a collapsed router shows at a glance. `Trainer` fills a
`PhaseLog` per phase; everything here is a pure function of those logs, and MLflow is
reached only through the tracker's `RunHandle`.

    >>> phase_summary(
    ...     [Phase("lm", 12, 5e-3)], [PhaseLog(losses=[6.1, 4.2], tokens=3072)]
    ... )["lm"]["train_loss"]
    5.15
    >>> plot_expert_load(np.full((2, 4), 0.25), Path("load.png"), title="expert token share")
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rayrag.tracking.tracker import RunHandle
from rayrag.training.schedule import Phase

SUMMARY_FILE = "training.json"
TRAIN_LOSS_WINDOW = 10  # "final train loss" = mean of the last this-many steps


@dataclass
class PhaseLog:
    """What a phase leaves for the summary and the expert-load plot (numbers only)."""

    losses: list[float] = field(default_factory=list)
    val_start: float | None = None
    val_end: float | None = None
    seconds: float = 0.0
    tokens: int = 0
    share_sum: list[list[float]] = field(default_factory=list)  # (layers, experts)
    share_steps: int = 0


def phase_summary(phases: list[Phase], logs: list[PhaseLog]) -> dict[str, dict[str, Any]]:
    """phase name -> its steps, learning rate, losses (start and end), tokens and seconds."""
    per_phase = {}
    for phase, log in zip(phases, logs, strict=True):
        tail = log.losses[-TRAIN_LOSS_WINDOW:]
        per_phase[phase.name] = {
            "steps": phase.steps,
            "lr": phase.lr,
            "train_loss_start": round(log.losses[0], 4) if log.losses else None,
            "train_loss": round(sum(tail) / len(tail), 4) if tail else None,
            "val_loss_start": _round(log.val_start),
            "val_loss": _round(log.val_end),
            "tokens": log.tokens,
            "seconds": round(log.seconds, 2),
        }
    return per_phase


def log_artifacts(
    run: RunHandle,
    phases: list[Phase],
    logs: list[PhaseLog],
    summary: dict[str, Any],
    curve: Any = None,
) -> None:
    """The summary, the data counts, one expert-load heatmap per phase and the exact-match
    learning curve (when one was measured), to the MLflow run."""
    if run.run_id is None:
        return
    run.log_dict(summary, SUMMARY_FILE)
    run.log_metrics({f"data/{k}": v for k, v in summary["data"].items()})
    with tempfile.TemporaryDirectory() as tmp:
        if curve is not None and curve.plot(Path(tmp) / "em_curve.png") is not None:
            run.log_artifact(Path(tmp) / "em_curve.png", artifact_path="plots")
        for phase, log in zip(phases, logs, strict=True):
            if log.share_steps:
                share = np.asarray(log.share_sum) / log.share_steps  # (layers, experts)
                path = Path(tmp) / f"expert_load_{phase.name}.png"
                plot_expert_load(share, path, title=f"expert token share, {phase.name} phase")
                run.log_artifact(path, artifact_path="plots")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def plot_expert_load(share: np.ndarray, path: Path, title: str) -> Path:
    """Heatmap layers x experts of the mean share of token-slots each expert received."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, experts = share.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * experts, 1.0 + 0.5 * layers))
    image = ax.imshow(share, cmap="viridis", vmin=0.0, aspect="auto")
    for i in range(layers):
        for j in range(experts):
            ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.set_xticks(range(experts))
    ax.set_yticks(range(layers))
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="token share")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
