"""`rayrag train`: the offline training job, in process for one worker, on Ray Train for more.

Checks the paths it is given, makes them absolute (Ray Train workers do not share the
driver's working directory) and hands over to `training.trainer.Trainer` or to the Ray
Train adapter in `pipelines.train_distributed`.

    >>> result = train(cfg, Path("ckpt"), bundle=Path("bundle"), qa=Path("qa.jsonl"))
"""

from __future__ import annotations

from pathlib import Path

from rayrag.config import RAGConfig
from rayrag.errors import ConfigError
from rayrag.pipelines.train_distributed import train_distributed
from rayrag.tracking.tracker import Tracker
from rayrag.training.curve import AnswerCurve
from rayrag.training.trainer import Trainer, TrainResult


def train(
    config: RAGConfig,
    out: Path,
    *,
    bundle: Path,
    qa: Path | None = None,
    resume: bool = False,
    base: Path | None = None,
    lora_rank: int | None = None,
    workers: int | None = None,
    tracker: Tracker | None = None,
    progress: bool = True,
    curve_qa: Path | None = None,
    curve_limit: int | None = None,
) -> TrainResult:
    """`rayrag train`: in-process for one worker, Ray Train for more."""
    if workers is not None:
        config = config.with_overrides([f"train.workers={workers}"])
    if qa is not None and not Path(qa).is_file():
        raise ConfigError(f"QA file not found: {qa} (--qa)")
    if base is not None and not Path(base).is_dir():
        raise ConfigError(f"base checkpoint not found: {base} (--base)")
    # Absolute paths: Ray Train workers do not share the driver's working directory.
    if curve_qa is not None and not Path(curve_qa).is_file():
        raise ConfigError(f"QA file not found: {curve_qa} (--curve-qa)")
    kwargs = {
        "bundle": Path(bundle).resolve(),
        "qa": Path(qa).resolve() if qa else None,
        "resume": resume,
        "base": Path(base).resolve() if base else None,
        "lora_rank": lora_rank,
        "tracker": tracker,
        "progress": progress,
    }
    if curve_qa is not None:
        kwargs["curve"] = AnswerCurve(
            config, Path(bundle).resolve(), Path(curve_qa).resolve(), curve_limit
        )
    if config.train.workers > 1:
        return train_distributed(config, out, **kwargs)
    return Trainer(config, out, **kwargs).run()
