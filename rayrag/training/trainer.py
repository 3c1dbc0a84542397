"""Train the generator on a bundle: language modelling, then reader fine-tuning (or LoRA).

The loop is nanoGPT's (Karpathy): AdamW with decay on matrices only, linear warmup then
cosine decay to `min_lr_ratio`, global-norm gradient clipping, bf16 autocast on CUDA, and a
resumable checkpoint (`OUT/_resume/`) holding the model, the optimizer and the RNG state,
so `resume=True` continues at the same step with the same data order and ends with the
same weights. Data order is a pure function of (seed, phase, step), which is what makes
resumption exact without saving a sampler (`train_schedule`). `Trainer` is Ray-free;
`rayrag.pipelines.train` is the job that runs it (in process, or on Ray Train when
`train.workers > 1`), and `training.report` writes the summary and the MLflow artifacts.
LoRA (`base` + `lora_rank`) trains adapters on the reader phase only, in the base's own
tokenizer and prompt layout (a pretrained checkpoint's chat format: it answers in the format
it was tuned in), and saves them in PEFT's format for PEFT and vLLM to serve.

    >>> result = Trainer(cfg, Path("ckpt"), bundle=Path("bundle")).run()
    >>> result.summary["phases"]["reader"]["val_loss"]
    >>> Trainer(cfg, Path("adapters"), bundle=Path("bundle"), base=Path("ckpt"), lora_rank=8).run()
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayrag.atomic import atomic_text, fsync_dir
from rayrag.config import RAGConfig
from rayrag.errors import ConfigError, ModelError
from rayrag.generator.checkpoint import load_checkpoint, save_checkpoint
from rayrag.generator.lora import apply_lora, load_adapters, mark_only_lora_trainable, save_adapters
from rayrag.generator.model import IGNORE_INDEX, MoETransformer
from rayrag.generator.pretrained import PretrainedTokenizer, is_pretrained
from rayrag.generator.tokenizer import RayragTokenizer
from rayrag.tracking.tracker import RunHandle, Tracker, compose_run_name
from rayrag.training.data import TrainDataBuilder, TrainingData
from rayrag.training.report import SUMMARY_FILE, PhaseLog, log_artifacts, phase_summary
from rayrag.training.schedule import Phase, lr_at, pad_batch, param_groups, sample_indices

RESUME_DIR = "_resume"
RESUME_STATE = "state.pt"
MAX_VAL_BATCHES = 16  # bounds a validation pass; the val set is small by construction


@dataclass
class TrainResult:
    out: Path
    summary: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), **{k: v for k, v in self.summary.items() if k != "data"}}


class Trainer:
    """Two-phase (or LoRA) training of the generator; `run()` does everything.

    >>> Trainer(
    ...     cfg, Path("ckpt"), bundle=Path("bundle"), qa=Path("qa.jsonl")
    ... ).run().summary["steps"]
    800
    """

    def __init__(
        self,
        config: RAGConfig,
        out: Path,
        *,
        bundle: Path | None = None,
        qa: Path | None = None,
        resume: bool = False,
        base: Path | None = None,
        lora_rank: int | None = None,
        tracker: Tracker | None = None,
        progress: bool = True,
        log_every: int = 10,
        data: TrainingData | None = None,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
        wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        on_validate: Callable[[int, float | None], None] | None = None,
        max_val_batches: int = MAX_VAL_BATCHES,
        curve: Any = None,
    ) -> None:
        if lora_rank is not None and base is None:
            raise ConfigError(
                "--lora-rank needs --base (the checkpoint whose adapters are trained)"
            )
        if base is not None and lora_rank is None:
            raise ConfigError(
                "--base needs --lora-rank (full fine-tuning of a base is not supported)"
            )
        if lora_rank is not None and lora_rank <= 0:
            raise ConfigError(f"lora rank must be > 0, got {lora_rank} (--lora-rank)")
        if bundle is None and data is None:
            raise ConfigError("training needs a bundle (--bundle)")
        if lora_rank is not None:
            config = config.with_overrides([f"lora.rank={lora_rank}"])
        self.config = config
        self.out = Path(out).resolve()
        self.bundle, self.qa, self.base = bundle, qa, base
        self.resume, self.lora = resume, lora_rank is not None
        self.tracker = tracker
        self._tracker: Tracker | None = None  # the one the run was opened with (registration)
        self.progress, self.log_every = progress, max(1, log_every)
        self.data = data
        self.rank, self.world_size = rank, world_size
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.wrap_model = wrap_model
        # (global step, validation loss) after every mid-training validation: a Tune trial
        # reports it so ASHA can stop a bad trial early.
        self.on_validate = on_validate
        if max_val_batches <= 0:
            raise ConfigError(f"max_val_batches must be > 0, got {max_val_batches}")
        self.max_val_batches = max_val_batches
        # An AnswerCurve (train_curve.py): exact match on a QA set at every reader validation.
        self.curve = curve
        self.model: MoETransformer | None = None

    # -- setup -----------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def phases(self) -> list[Phase]:
        t = self.config.train
        if self.lora:
            return [Phase("reader", t.reader_steps, t.lora_lr)]
        return [
            p
            for p in (Phase("lm", t.lm_steps, t.lr), Phase("reader", t.reader_steps, t.lr))
            if p.steps > 0
        ]

    def _check_out(self) -> None:
        out = self.out
        if out.exists() and (
            not out.is_dir()
            or any(
                p.name
                not in (
                    "config.json",
                    "model.safetensors",
                    "tokenizer.json",
                    SUMMARY_FILE,
                    RESUME_DIR,
                    "adapter_config.json",
                    "adapter_model.safetensors",
                )
                for p in out.iterdir()
            )
        ):
            raise ConfigError(
                f"refusing to write into {out}: it holds files "
                "that are not a rayrag checkpoint (--out)"
            )
        if self.resume and not (out / RESUME_DIR / RESUME_STATE).is_file():
            raise ConfigError(
                f"nothing to resume: {out / RESUME_DIR / RESUME_STATE} not found (--resume)"
            )

    def prepare_data(self) -> TrainingData:
        """The training data; with LoRA, the reader examples in the base's own tokenizer and
        prompt layout (a pretrained checkpoint's chat format, or rayrag's template),
        checked against the base's vocabulary, not `generator.vocab_size`."""
        if self.data is None:
            tokenizer, vocab_size = None, None
            if self.lora:
                tokenizer = base_tokenizer(Path(self.base))
                vocab_size = base_vocab_size(Path(self.base))
            self.data = TrainDataBuilder(self.config).run(
                self.bundle, self.qa, tokenizer=tokenizer, vocab_size=vocab_size
            )
        return self.data

    def build_model(self) -> MoETransformer:
        torch.manual_seed(self.config.seed)
        if self.lora:
            model = load_checkpoint(self.base, dtype=torch.float32)
            apply_lora(model, self.config.lora)
            mark_only_lora_trainable(model)
        else:
            model = MoETransformer(
                self.config.generator, token_order=torch.as_tensor(self.data.token_order)
            )
        needed = self.config.train.seq_len + 1
        if needed > model.config.max_seq_len:
            raise ConfigError(
                f"train.seq_len + 1 must be <= generator.max_seq_len, got {needed} > "
                f"{model.config.max_seq_len} (train.seq_len)"
            )
        return model.to(self.device)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> TrainResult:
        if self.is_main:
            self._check_out()
        threads = torch.get_num_threads()
        if self.config.train.num_threads and self.device.type == "cpu":
            torch.set_num_threads(self.config.train.num_threads)
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> TrainResult:
        cfg = self.config
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.prepare_data()
        model = self.model = self.build_model()
        if self.curve is not None and self.is_main:
            self.curve.prepare(self.data.tokenizer, window=model.config.max_seq_len)
        forward_model = self.wrap_model(model) if self.wrap_model else model
        phases = self.phases()
        state = self._load_resume(model) if self.resume else None
        start_phase, start_step = (state["phase"], state["step"]) if state else (0, 0)
        logs = (
            [PhaseLog(**entry) for entry in state["logs"]]
            if state
            else [PhaseLog() for _ in phases]
        )
        if state:
            torch.set_rng_state(state["rng"]["torch"])
            if torch.cuda.is_available() and state["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        total = sum(p.steps for p in phases)
        done = sum(p.steps for p in phases[:start_phase]) + start_step
        started = time.perf_counter()
        with self._run_handle(state) as run:
            bar = self._progress_bar(total, done)
            for pi, phase in enumerate(phases):
                if pi < start_phase:
                    continue
                optimizer = torch.optim.AdamW(
                    param_groups(model, cfg.train.weight_decay),
                    lr=phase.lr,
                    betas=tuple(cfg.train.betas),
                )
                first = start_step if pi == start_phase else 0
                if state and pi == start_phase and state.get("optimizer") is not None:
                    optimizer.load_state_dict(state["optimizer"])
                log, offset = logs[pi], sum(p.steps for p in phases[:pi])
                if first == 0:
                    log.val_start = self.validate(phase)
                    run.log_metrics({"val/loss": log.val_start, "phase": pi}, step=offset)
                for step in range(first, phase.steps):
                    t0 = time.perf_counter()
                    lr = lr_at(
                        step, phase.steps, phase.lr, cfg.train.warmup_steps, cfg.train.min_lr_ratio
                    )
                    metrics = self.train_step(forward_model, optimizer, phase, pi, step, lr, log)
                    log.seconds += time.perf_counter() - t0
                    if step % self.log_every == 0 or step + 1 == phase.steps:
                        run.log_metrics(metrics, step=offset + step + 1)
                    if (step + 1) % cfg.train.eval_every == 0 or step + 1 == phase.steps:
                        log.val_end = self.validate(phase)
                        run.log_metrics({"val/loss": log.val_end}, step=offset + step + 1)
                        if self.curve is not None and self.is_main and phase.name == "reader":
                            run.log_metrics(
                                self.curve(model, offset + step + 1), step=offset + step + 1
                            )
                        if self.on_validate is not None and self.is_main:
                            self.on_validate(offset + step + 1, log.val_end)
                    if (
                        (step + 1) % cfg.train.checkpoint_every == 0
                        and step + 1 < phase.steps
                        and self.is_main
                    ):
                        self._save_resume(model, optimizer, pi, step + 1, logs)
                    bar.update(1)
                    bar.set_postfix(
                        phase=phase.name, loss=f"{metrics['train/loss']:.3f}", lr=f"{lr:.2e}"
                    )
            bar.close()
            summary = self._summary(phases, logs, time.perf_counter() - started, run.run_id, state)
            if self.curve is not None and self.is_main:
                summary["curve"] = [{"step": s, **point} for s, point in self.curve.history]
            if self.is_main:
                self._finish(model, summary)
                log_artifacts(run, phases, logs, summary, curve=self.curve)
                summary["registered_version"] = self._register(run)
        return TrainResult(self.out, summary)

    def _register(self, run: RunHandle) -> int | None:
        """A full training becomes a version of the registered model (the first one champion);
        adapters are not a servable checkpoint on their own and are not registered here."""
        if self.lora or run.run_id is None or self._tracker is None:
            return None
        from rayrag.tracking.model_registry import ModelRegistry

        info = ModelRegistry(self._tracker).register(
            self.out,
            run_id=run.run_id,
            tags={
                "config_hash": self.config.config_hash,
                "training_hash": self.config.training_hash,
            },
        )
        return info.version

    def train_step(
        self,
        forward_model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        phase: Phase,
        phase_index: int,
        step: int,
        lr: float,
        log: PhaseLog,
    ) -> dict[str, float]:
        model = self.model
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids, labels, mask = self.batch(phase, phase_index, step)
        with self._autocast():
            out = forward_model(ids, attention_mask=mask, labels=labels, compute_logits=False)
            loss = model.total_loss(out)
        loss.backward()
        trainable = [p for p in model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, self.config.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = int(mask.sum()) if mask is not None else ids.numel()
        log.tokens += tokens * self.world_size
        log.losses.append(float(out.loss.detach()))
        shares = [s.token_share.tolist() for s in out.routing]
        log.share_sum = (
            shares
            if not log.share_sum
            else [
                [a + b for a, b in zip(row, new, strict=True)]
                for row, new in zip(log.share_sum, shares, strict=True)
            ]
        )
        log.share_steps += 1
        metrics = {
            "train/loss": float(loss.detach()),
            "train/nll": log.losses[-1],
            "train/aux": float(out.aux_loss.detach()),
            "train/z": float(out.z_loss.detach()),
            "lr": lr,
            "grad_norm": float(grad_norm),
        }
        for i, stats in enumerate(out.routing):
            metrics[f"routing/layer{i}/entropy"] = stats.entropy
            metrics[f"routing/layer{i}/max_violation"] = stats.max_violation
            metrics[f"routing/layer{i}/drop_rate"] = stats.drop_rate
        return metrics

    def batch(
        self, phase: Phase, phase_index: int, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        bs, seed = self.config.train.batch_size, self.config.seed
        if phase.name == "lm":
            lm = self.data.lm
            idx = sample_indices(
                len(lm.train_inputs), bs, step, seed, phase_index, self.rank, self.world_size
            )
            ids = torch.as_tensor(lm.train_inputs[idx])
            labels = torch.as_tensor(lm.train_labels[idx])
            mask = (labels != IGNORE_INDEX).long()
        else:
            rows = self.data.reader.train
            idx = sample_indices(len(rows), bs, step, seed, phase_index, self.rank, self.world_size)
            ids, labels, mask = pad_batch([rows[i] for i in idx], self.data.tokenizer.pad_id)
        # An all-ones mask would only cost the causal fast path.
        mask_or_none = None if bool(mask.all()) else mask.to(self.device)
        return ids.to(self.device), labels.to(self.device), mask_or_none

    def validate(self, phase: Phase) -> float | None:
        """Mean next-token NLL over the held-out set (eval mode: dropless routing)."""
        if phase.name == "lm":
            lm = self.data.lm
            rows = list(zip(lm.val_inputs.tolist(), lm.val_labels.tolist(), strict=True))
        else:
            rows = self.data.reader.val
        return mean_nll(
            self.model,
            rows,
            self.data.tokenizer.pad_id,
            self.config.train.batch_size,
            self.max_val_batches,
            self.device,
            self._autocast,
        )

    def _autocast(self):
        if self.device.type == "cuda" and self.config.train.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _progress_bar(self, total: int, done: int):
        from tqdm import tqdm

        return tqdm(
            total=total,
            initial=done,
            desc="rayrag train",
            unit="step",
            file=sys.stderr,
            disable=not (self.progress and self.is_main),
            dynamic_ncols=True,
        )

    @contextlib.contextmanager
    def _run_handle(self, state: dict[str, Any] | None):
        if not self.is_main:
            yield RunHandle(run_id=None, experiment="")
            return
        tracker = self._tracker = self.tracker or Tracker(self.config.tracking)
        tags = {"mode": "lora" if self.lora else "full", "workers": self.world_size}
        if state:
            tags["resumed_at_step"] = (
                sum(p.steps for p in self.phases()[: state["phase"]]) + state["step"]
            )
        name = compose_run_name("train", self.config, tags["mode"], self.config.tracking.model_name)
        with tracker.start_run("train", self.config, tags=tags, run_name=name) as run:
            if self.bundle is not None:  # what the model was trained on, by digest
                run.log_dataset(Path(self.bundle) / "manifest.json", "bundle", "training")
            if self.qa is not None:
                run.log_dataset(Path(self.qa), "qa", "reader")
            yield run

    # -- checkpoints -----------------------------------------------------------------------

    def _save_resume(
        self,
        model: MoETransformer,
        optimizer: torch.optim.Optimizer,
        phase: int,
        step: int,
        logs: list[PhaseLog],
    ) -> None:
        """OUT/_resume/ = model (+ adapters) + state.pt, replaced as a whole (temp dir + rename)."""
        self.out.mkdir(parents=True, exist_ok=True)
        target = self.out / RESUME_DIR
        tmp = self.out / f".{RESUME_DIR}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            if self.lora:
                save_adapters(model, tmp / "adapters", self.config.lora, base_model=self.base)
            else:
                save_checkpoint(model, tmp / "model")
            state = {
                "phase": phase,
                "step": step,
                "config_hash": self.config.config_hash,
                "optimizer": optimizer.state_dict(),
                "logs": [vars(log) for log in logs],
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                },
            }
            torch.save(state, tmp / RESUME_STATE)
            with open(tmp / RESUME_STATE, "rb") as handle:
                os.fsync(handle.fileno())
            old = self.out / f".{RESUME_DIR}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            if target.exists():
                os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.out)

    def _load_resume(self, model: MoETransformer) -> dict[str, Any]:
        folder = self.out / RESUME_DIR
        state = torch.load(folder / RESUME_STATE, map_location="cpu", weights_only=False)
        if state["config_hash"] != self.config.config_hash:
            raise ConfigError(
                f"{folder} was written with a different config (hash {state['config_hash'][:12]} "
                f"vs {self.config.config_hash[:12]}); resume with the same --config/--set"
            )
        if self.lora:
            load_adapters(model, folder / "adapters")
        else:
            saved = load_checkpoint(folder / "model", dtype=torch.float32)
            model.load_state_dict(saved.state_dict())
        return state

    def _finish(self, model: MoETransformer, summary: dict[str, Any]) -> None:
        """The final artefact at OUT (checkpoint + tokenizer, or adapters) and training.json."""
        resume = self.out / RESUME_DIR
        aside = self.out.parent / f".{self.out.name}.resume-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if resume.exists():  # the writers below refuse a folder that holds more than their files
            os.rename(resume, aside)
        try:
            if self.lora:
                save_adapters(model, self.out, self.config.lora, base_model=self.base)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    self.data.tokenizer.save(Path(tmp))
                    save_checkpoint(model, self.out, tokenizer_path=Path(tmp))
            with atomic_text(self.out / SUMMARY_FILE) as handle:
                handle.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        except BaseException:
            if aside.exists() and not resume.exists():
                self.out.mkdir(parents=True, exist_ok=True)
                os.rename(aside, resume)
            raise
        shutil.rmtree(aside, ignore_errors=True)

    # -- reporting -------------------------------------------------------------------------

    def _summary(
        self,
        phases: list[Phase],
        logs: list[PhaseLog],
        seconds: float,
        run_id: str | None,
        state: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return {
            "mode": "lora" if self.lora else "full",
            "steps": sum(p.steps for p in phases),
            "phases": phase_summary(phases, logs),
            "tokens_seen": sum(log.tokens for log in logs),
            "seconds": round(seconds, 2),
            "workers": self.world_size,
            "config_hash": self.config.config_hash,
            "training_hash": self.config.training_hash,
            "mlflow_run_id": run_id,
            "resumed": state is not None,
            "reader_source": self.data.reader.source,
            "lora_rank": self.config.lora.rank if self.lora else None,
            "data": dict(self.data.counts),
        }


def base_tokenizer(base: Path) -> RayragTokenizer | PretrainedTokenizer:
    """The tokenizer a base checkpoint was trained with: a pretrained checkpoint's own
    (transformers' files beside the weights), else rayrag's tokenizer.json."""
    if is_pretrained(base):
        return PretrainedTokenizer.load(base)
    if not (base / "tokenizer.json").is_file():
        raise ModelError(f"base checkpoint {base} has no tokenizer.json (--base)")
    return RayragTokenizer.load(base)


def base_vocab_size(base: Path) -> int:
    """The base's embedding rows, from its config.json (`vocab_size`, or `text_config`'s)."""
    file = base / "config.json"
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{file}: cannot read config: {exc}") from exc
    text = raw.get("text_config") if isinstance(raw, dict) else None
    for source in (raw, text):
        if isinstance(source, dict) and isinstance(source.get("vocab_size"), int):
            return source["vocab_size"]
    raise ModelError(f"{file}: no vocab_size (--base)")


@torch.no_grad()
def mean_nll(
    model: MoETransformer,
    rows: list,
    pad_id: int,
    batch_size: int,
    max_batches: int,
    device: torch.device,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> float | None:
    """Mean next-token NLL of `rows` (token ids, labels) over at most `max_batches` batches,
    in eval mode (dropless routing); None without rows. The model is left in train mode."""
    if not rows:
        return None
    model.eval()
    total, count = 0.0, 0
    for start in range(0, min(len(rows), batch_size * max_batches), batch_size):
        ids, labels, mask = pad_batch(rows[start : start + batch_size], pad_id)
        labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
        n = int((labels[:, 1:] != IGNORE_INDEX).sum())
        with autocast():
            out = model(
                ids.to(device),
                attention_mask=mask.to(device),
                labels=labels.to(device),
                compute_logits=False,
            )
        total += float(out.loss) * n
        count += n
    model.train()
    return total / max(count, 1)
