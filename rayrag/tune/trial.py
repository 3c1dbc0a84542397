"""One tuning trial, Ray-free: a knob setting in, validation losses and dev-set scores out.

The sweep driver (`tune/sweep.py`) writes a `SweepPlan` (the base config, the pre-built
bundles by key, the dev set, the base generator, the objective) to the sweep folder; a
Tune trainable is then a few lines around `TrialRunner.run(report)`:

1. The trial's config = base config + `section.key=value` per knob. An invalid value (alone
   or in combination) is a `ConfigError` naming the key: this trial fails, the sweep goes on.
2. Its bundle comes from the cache by `bundle_key` (chunking, embedding, redaction, KG and
   corpus digest). A trial never builds one: a missing bundle is an error.
3. `lora_rank > 0`: LoRA adapters on the base generator for `trial.lora_steps` steps
   (`Trainer`, reader phase, `train.lora_lr`). Every `report_every` steps the trial reports
   its validation loss: the dev answer loss, the mean NLL of the dev questions' gold answers
   after their served prompts built from this trial's own retrieval (top_k passages and
   facts). It is measured on the same questions in every trial, so ASHA can compare a
   chunk size of 32 with one of 128 (the reader's own held-out loss, reported beside it as
   `reader_val_loss`, is built from each bundle's chunks and cannot). The adapters are then
   merged into a plain checkpoint (what the sweep registers as the challenger when this
   is the best trial with adapters). `lora_rank = 0`: the base as it is; its loss is measured once
   and reported at the same points, so ASHA compares every trial at every rung.
4. The dev set, answered end to end in process (redact, retrieve, read, guard: the serve
   graph's steps, `InProcessAnswerer`), scored like `rayrag eval`; the composite objective =
   sum of weight x metric - penalty x p50 seconds.

Nothing here logs text: reports are numbers; the plan holds paths and hashes.

    >>> runner = TrialRunner(
    ...     SweepPlan.load(Path("sweep/plan.json")),
    ...     {"chunk_size": 128, "top_k": 4, "lora_rank": 8},
    ...     "t1",
    ... )
    >>> runner.run(report=print)["objective"]
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from rayrag.config import RAGConfig
from rayrag.errors import ConfigError, DataError
from rayrag.tune.spec import ObjectiveSpec, TuneSpec

Report = Callable[[dict[str, Any]], None]
PLAN_FILE = "plan.json"
TRIALS_DIR = "trials"


class SweepPlan(BaseModel):
    """Everything a trial reads besides its knob values (paths absolute: Ray workers do not
    share the driver's working directory)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: TuneSpec
    base_config: dict[str, Any]
    corpus_digest: str
    bundles: dict[str, str]  # bundle key -> bundle directory
    dev: str
    canaries_file: str | None = None
    base_model: str
    out: str
    groups: tuple[str, ...]  # the evaluating principal's ACL groups (every group of the corpus)

    def config(self) -> RAGConfig:
        return RAGConfig.model_validate(self.base_config)

    def save(self, path: Path) -> Path:
        from rayrag.atomic import atomic_text

        with atomic_text(path) as handle:
            handle.write(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SweepPlan:
        try:
            return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the sweep plan {path}: {type(exc).__name__}") from None


def objective(metrics: dict[str, Any], spec: ObjectiveSpec) -> float:
    """sum(weight x metric) - latency_penalty_per_s x p50 seconds; an undefined metric counts 0."""
    score = sum(weight * float(metrics.get(name) or 0.0) for name, weight in spec.weights.items())
    return score - spec.latency_penalty_per_s * float(metrics.get("p50_ms") or 0.0) / 1000.0


class TrialRunner:
    """Runs one knob setting of a sweep; `report` receives each result dict (Tune's
    `tune.report` in a trial, a list's append in a test)."""

    def __init__(self, plan: SweepPlan, params: dict[str, Any], trial_id: str) -> None:
        self.plan, self.params, self.trial_id = plan, dict(params), trial_id
        self.dir = Path(plan.out) / TRIALS_DIR / trial_id

    def config(self) -> RAGConfig:
        """Base + knob values. A bad value raises ConfigError naming the key and the value."""
        try:
            return self.plan.config().with_overrides(self.plan.spec.overrides(self.params))
        except ConfigError as error:
            message = str(error).replace("(--set ", "(knob ")
            raise ConfigError(f"trial config is invalid: {message}") from None

    def bundle(self, config: RAGConfig) -> Path:
        from rayrag.tune.bundles import bundle_key

        key = bundle_key(config, self.plan.corpus_digest)
        path = self.plan.bundles.get(key)
        if path is None or not (Path(path) / "manifest.json").is_file():
            raise DataError(
                f"no pre-built bundle for this trial's chunking (key {key[:12]}); "
                "bundles are built before the trials start, never per trial"
            )
        return Path(path)

    def run(self, report: Report) -> dict[str, Any]:
        from rayrag.data.readers import read_qa
        from rayrag.evaluation.answerers import InProcessAnswerer

        config = self.config()
        bundle = self.bundle(config)
        trial = self.plan.spec.trial
        _set_threads(trial.cpus)
        rank = config.lora.rank
        base = Path(self.plan.base_model)
        questions = dev_sample(read_qa(self.plan.dev), trial.dev_questions)
        if not questions:
            raise DataError(f"the dev set {self.plan.dev} has no questions")
        answerer = InProcessAnswerer(bundle, base, config, config.retrieval.mode)
        answerer.warm_up()
        # this trial's retrieval, fixed while the adapters learn
        rows = self.answer_rows(answerer, questions)
        tokens = answerer.reader.tokenizer

        def dev_loss(model: Any) -> float:
            from rayrag.training.trainer import mean_nll

            device = next(model.parameters()).device
            return _finite(
                mean_nll(model, rows, tokens.pad_id, trial.batch_size, len(rows), device)
            )

        base_metrics = {
            "bundle_cache_hit": 1.0,
            "lora_rank": float(rank),
            "dev_loss_questions": float(len(rows)),
        }
        if rank > 0:
            train_cfg = config.with_overrides(
                [
                    "tracking.enabled=false",
                    f"train.reader_steps={trial.lora_steps}",
                    f"train.eval_every={trial.report_every}",
                    f"train.checkpoint_every={trial.lora_steps + 1}",
                    f"train.batch_size={trial.batch_size}",
                    f"train.num_threads={max(1, int(trial.cpus))}",
                ]
            )
            model_dir, val_loss = self._fine_tune(
                train_cfg, bundle, base, rank, report, base_metrics, dev_loss
            )
            from rayrag.generator.reader import Reader

            answerer.reader = Reader(model_dir, config)  # the merged checkpoint answers the dev set
            answerer.reader.warm_up()
        else:
            model_dir, val_loss = base, dev_loss(answerer.reader.model)
            for step in range(1, trial.reports + 1):  # the base is its own curve: flat
                report(
                    {
                        **base_metrics,
                        "val_loss": val_loss,
                        "step": float(min(step * trial.report_every, trial.lora_steps)),
                    }
                )
        scores = self.evaluate(answerer, questions)
        final = {
            **base_metrics,
            **scores,
            "val_loss": val_loss,
            "objective": round(objective(scores, self.plan.spec.objective), 6),
        }
        report(final)
        return final

    def answer_rows(self, answerer: Any, questions: list) -> list[tuple[list[int], list[int]]]:
        """(ids, labels) per dev question: its served prompt from this trial's retrieval (top_k
        passages and facts) followed by its gold answer. Their mean NLL, the dev answer loss,
        is the validation loss ASHA compares: unlike the reader's own held-out loss, it is
        measured on the same questions in every trial, so chunking and top_k move it too."""
        from rayrag.generator.prompt import build_training_example
        from rayrag.generator.reader import reader_facts
        from rayrag.types import Principal

        principal = Principal("tuner", frozenset(self.plan.groups))
        reader = answerer.reader
        max_len = reader.model.config.max_seq_len
        rows = []
        for qa in questions:
            if not qa.answers:
                continue
            question, evidence = answerer.evidence(qa, principal)
            try:
                rows.append(
                    build_training_example(
                        question,
                        evidence.passages,
                        reader_facts(evidence.facts),
                        qa.answers[0],
                        reader.tokenizer,
                        max_len,
                    )
                )
            except DataError:
                continue  # a question and answer longer than the window: not scored here
        if not rows:
            raise DataError(
                f"no dev question of {self.plan.dev} has an answer that fits the model's window"
            )
        return rows

    def _fine_tune(
        self,
        train_cfg: RAGConfig,
        bundle: Path,
        base: Path,
        rank: int,
        report: Report,
        base_metrics: dict[str, float],
        dev_loss: Callable[[Any], float],
    ) -> tuple[Path, float]:
        from rayrag.generator.lora import export_merged
        from rayrag.training.trainer import Trainer

        adapter_dir, model_dir = self.dir / "adapter", self.dir / "model"
        self.dir.mkdir(parents=True, exist_ok=True)
        last = {"val_loss": float("inf")}
        trainer: Any = None

        def on_validate(step: int, reader_loss: float | None) -> None:
            last["val_loss"] = dev_loss(trainer.model)
            report(
                {
                    **base_metrics,
                    "val_loss": last["val_loss"],
                    "reader_val_loss": _finite(reader_loss),
                    "step": float(step),
                }
            )

        trainer = Trainer(
            train_cfg,
            adapter_dir,
            bundle=bundle,
            base=base,
            lora_rank=rank,
            progress=False,
            on_validate=on_validate,
            max_val_batches=self.plan.spec.trial.max_val_batches,
        )
        trainer.run()
        export_merged(base, adapter_dir, model_dir)
        (model_dir / "tuning.json").write_text(
            json.dumps(
                {
                    "trial_id": self.trial_id,
                    "params": self.params,
                    "base_model": str(base),
                    "lora_rank": rank,
                    "lora_steps": self.plan.spec.trial.lora_steps,
                },
                indent=2,
                sort_keys=True,
            )
            + "\n",
            encoding="utf-8",
        )
        return model_dir, last["val_loss"]

    def evaluate(self, answerer: Any, questions: list) -> dict[str, Any]:
        """The dev set end to end in this process, scored like `rayrag eval` (no MLflow run:
        the trial's run is the Tune callback's)."""
        from rayrag.evaluation.answer_eval import load_canaries
        from rayrag.evaluation.answer_scoring import aggregate_scores, score_example
        from rayrag.types import Principal

        canaries = load_canaries(Path(self.plan.canaries_file)) if self.plan.canaries_file else []
        principal = Principal("tuner", frozenset(self.plan.groups))
        rows = [score_example(qa, answerer(qa, principal), canaries) for qa in questions]
        aggregated = aggregate_scores(rows)
        return {k: float(v) for k, v in aggregated.items() if v is not None}

    def cleanup(self) -> None:
        """Drop this trial's files (the sweep keeps only the winner's)."""
        if self.dir.exists():
            aside = self.dir.parent / f".{self.dir.name}.drop-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            os.rename(self.dir, aside)
            shutil.rmtree(aside, ignore_errors=True)


def dev_sample(questions: list, n: int | None) -> list:
    """`n` questions spread evenly over the file (every trial gets the same ones): a QA file is
    often grouped by kind (the demo's: two-hop, then one-hop), so its head is not a sample."""
    if n is None or n >= len(questions):
        return list(questions)
    return [questions[(i * len(questions)) // n] for i in range(n)]


def _finite(value: float | None) -> float:
    """Tune and ASHA want a number: an undefined loss (no validation rows) is +inf (worst)."""
    return float("inf") if value is None else float(value)


def _set_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def tune_trial(config: dict[str, Any]) -> None:
    """The Ray Tune trainable (CONVENTIONS 11: reads only `config`, reports with tune.report):
    `config` holds the knob values and the plan file's path."""
    from ray import tune

    params = dict(config)
    plan = SweepPlan.load(params.pop("plan"))
    TrialRunner(plan, params, tune.get_context().get_trial_id()).run(
        lambda result: tune.report(result)
    )
