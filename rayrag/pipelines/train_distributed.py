"""Data-parallel training on Ray Train: the thin adapter around `Trainer` for `train.workers > 1`.

Ray's `TorchTrainer` starts `train.workers` workers; each runs the same `Trainer` with its
rank, and `ray.train.torch.prepare_model` wraps the model in PyTorch DDP (Li et al. 2020),
so gradients are all-reduced and every worker takes the same step. The driver builds the
tokenizer and examples once and ships them; only rank 0 writes OUT and logs to MLflow,
and the driver reads its `training.json` back. All training logic stays in `Trainer`.

    >>> result = train_distributed(
    ...     cfg.with_overrides(["train.workers=2"]), Path("ckpt"), bundle=Path("bundle")
    ... )
    >>> result.summary["workers"]
    2
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from rayrag.config import RAGConfig
from rayrag.tracking.tracker import Tracker
from rayrag.training.trainer import SUMMARY_FILE, Trainer, TrainResult


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: the same Trainer, with a DDP-wrapped model."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    trainer = Trainer(
        **loop_config["kwargs"],
        tracker=Tracker(
            loop_config["tracking"],
            workdir=loop_config["workdir"],
            artifact_root=loop_config["artifact_root"],
        ),
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        device=ray.train.torch.get_device(),
        # Some experts (and adaptive-softmax tail clusters) may see no token in a step.
        wrap_model=lambda m: ray.train.torch.prepare_model(
            m, parallel_strategy_kwargs={"find_unused_parameters": True}
        ),
    )
    result = trainer.run()
    ray.train.report({"steps": result.summary["steps"], "seconds": result.summary["seconds"]})


def train_distributed(
    config: RAGConfig,
    out: Path,
    *,
    bundle: Path,
    qa: Path | None = None,
    resume: bool = False,
    base: Path | None = None,
    lora_rank: int | None = None,
    tracker: Tracker | None = None,
    progress: bool = True,
) -> TrainResult:
    """Data-parallel training on `train.workers` Ray Train workers; rank 0 writes OUT and MLflow."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = Path(out).resolve()
    driver = Trainer(
        config,
        out,
        bundle=bundle,
        qa=qa,
        resume=resume,
        base=base,
        lora_rank=lora_rank,
        progress=progress,
    )
    driver._check_out()
    data = driver.prepare_data()  # tokenizer and examples once, shipped to every worker
    workers = config.train.workers
    if not ray.is_initialized():
        # log_to_driver: rank 0's progress bar is the only sign of life during training.
        ray.init(
            num_cpus=workers, include_dashboard=False, log_to_driver=True, configure_logging=False
        )
    tracker = tracker or Tracker(config.tracking)
    workdir = (tracker.workdir or Path.cwd()).resolve()
    kwargs = {
        "config": config,
        "out": out,
        "bundle": bundle,
        "qa": qa,
        "resume": resume,
        "base": base,
        "lora_rank": lora_rank,
        "progress": progress,
        "data": data,
    }
    storage = out.parent / f".{out.name}.ray-train"
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "kwargs": kwargs,
            "tracking": tracker.config,
            "workdir": workdir,
            # Ray workers run elsewhere: pin MLflow's default artifact folder to ours.
            "artifact_root": tracker.artifact_root or workdir / "mlartifacts",
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=torch.cuda.is_available()),
        run_config=RunConfig(name=f"train-{uuid.uuid4().hex[:8]}", storage_path=str(storage)),
    )
    trainer.fit()
    shutil.rmtree(storage, ignore_errors=True)
    summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    return TrainResult(out, summary)
