"""The search space of a tuning sweep: `rayrag/configs/tune.yaml`, typed and validated.

A sweep varies a few knobs of one base `RAGConfig` (the shipped `demo` config, a path, or
any config plus `base_overrides`). Each knob names a config key and the values to try;
the knobs rayrag knows by name (`chunk_size`, `top_k`, `lora_rank`, ...) need no key.
Knobs under `chunking.` / `embedding.` / `kg.` / `governance.redaction.` change the index
bundle: the sweep builds one bundle per combination of their values before any trial
starts (`tune/bundles.py`). A knob value that is invalid alone or in combination (an
overlap not below the chunk size) is not a spec error: that trial fails with the config's
one-line message and the sweep goes on.

`smoke:` holds the overrides `--smoke` applies: a sweep of a few minutes for CI.

    >>> spec = load_tune_spec("rayrag/configs/tune.yaml", smoke=True)
    >>> spec.knob_names, spec.search.num_samples
    (['chunk_size', 'top_k', 'lora_rank'], 8)
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rayrag.config import RAGConfig, resolve_config
from rayrag.errors import ConfigError

# The knobs rayrag knows by name -> the config key each one sets.
KNOWN_KNOBS = {
    "chunk_size": "chunking.chunk_size",
    "chunk_overlap": "chunking.chunk_overlap",
    "top_k": "retrieval.top_k",
    "lora_rank": "lora.rank",
    "retrieval_mode": "retrieval.mode",
    "fusion": "retrieval.fusion",
    "dense_weight": "retrieval.dense_weight",
    "candidate_k": "retrieval.candidate_k",
    "temperature": "decoding.temperature",
}
# Config sections that shape an index bundle (what `ingest_fingerprint` hashes).
BUNDLE_SECTIONS = ("chunking.", "embedding.", "kg.", "governance.redaction.")
ANSWER_METRICS = (
    "recall_at_2",
    "recall_at_5",
    "recall_at_10",
    "mrr",
    "context_recall",
    "answer_em",
    "answer_f1",
    "groundedness",
    "citation_precision",
    "kg_validation_rate",
    "kg_supported_rate",
)


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Knob(_Spec):
    key: str | None = Field(
        None, description="Config key the knob sets (section.key); None = the known knob's key."
    )
    values: tuple[Any, ...] = Field(
        ..., min_length=1, description="Values to try (grid) or choose from (TPE)."
    )


class SearchSpec(_Spec):
    algorithm: Literal["tpe", "grid"] = Field(
        "tpe", description="Optuna TPE through Ray Tune, or the full grid."
    )
    num_samples: int = Field(
        16, gt=0, description="Trials for TPE; grid runs every combination this many times."
    )
    max_concurrent: int | None = Field(
        None, gt=0, description="Trials at once; None = as many as the cluster's resources fit."
    )
    seed: int = Field(0, description="Seeds the TPE sampler.")


class SchedulerSpec(_Spec):
    grace_period: int = Field(
        1,
        gt=0,
        description="ASHA: validation reports a trial always gets before it can be stopped.",
    )
    reduction_factor: float = Field(
        2.0, gt=1, description="ASHA: 1/this of the trials go on at each rung."
    )


class ObjectiveSpec(_Spec):
    weights: dict[str, float] = Field(
        default_factory=lambda: {"context_recall": 0.3, "answer_f1": 0.6, "answer_em": 0.1},
        description="objective = sum of weight * dev-set metric (higher is better) ...",
    )
    latency_penalty_per_s: float = Field(
        0.05, ge=0, description="... minus this times the median latency in seconds."
    )

    @model_validator(mode="after")
    def _known_metrics(self) -> ObjectiveSpec:
        unknown = sorted(set(self.weights) - set(ANSWER_METRICS))
        if unknown:
            raise ValueError(
                f"unknown objective metric {unknown[0]!r}; known: {', '.join(ANSWER_METRICS)}"
            )
        if not self.weights:
            raise ValueError("objective.weights must name at least one metric")
        return self


class TrialSpec(_Spec):
    lora_steps: int = Field(
        60,
        gt=0,
        description="LoRA fine-tuning steps per trial (bounded: a sweep is many trainings).",
    )
    report_every: int = Field(
        15, gt=0, description="Steps between validation-loss reports (ASHA's rungs)."
    )
    batch_size: int = Field(8, gt=0, description="Sequences per LoRA step.")
    max_val_batches: int = Field(8, gt=0, description="Batches per validation-loss pass.")
    dev_questions: int | None = Field(
        60,
        gt=0,
        description=(
            "Dev-set questions each trial answers, spread evenly over the file; None = all."
        ),
    )
    cpus: float = Field(1.0, gt=0, description="CPUs per trial (its torch threads).")
    gpus: float = Field(
        0.5, ge=0, description="GPU share per trial when the cluster has GPUs (ignored without)."
    )

    @model_validator(mode="after")
    def _reports(self) -> TrialSpec:
        if self.report_every > self.lora_steps:
            raise ValueError(
                f"report_every must be <= lora_steps, got {self.report_every} > {self.lora_steps}"
            )
        return self

    @property
    def reports(self) -> int:
        """Validation-loss reports of a LoRA trial (the Trainer validates every `report_every`
        steps and after the last)."""
        return -(-self.lora_steps // self.report_every)


class DataSpec(_Spec):
    corpus: str | None = Field(
        None, description="Corpus file; None = the demo corpus, generated under the sweep root."
    )
    dev: str | None = Field(None, description="Dev QA JSONL; None = qa.jsonl beside the corpus.")
    base_model: str = Field(
        "models:/rayrag-generator@champion",
        description="Generator the LoRA trials fine-tune (a path or models:/ URI).",
    )


class TuneSpec(_Spec):
    base_config: str = Field(
        "demo", description="The RAGConfig the knobs override: a shipped name or a path."
    )
    base_overrides: tuple[str, ...] = Field(
        (), description="section.key=value applied to the base before the knobs."
    )
    knobs: dict[str, Knob] = Field(..., min_length=1, description="Knob name -> key and values.")
    search: SearchSpec = Field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    trial: TrialSpec = Field(default_factory=TrialSpec)
    data: DataSpec = Field(default_factory=DataSpec)

    @model_validator(mode="after")
    def _knob_keys(self) -> TuneSpec:
        for name, knob in self.knobs.items():
            if knob.key is None and name not in KNOWN_KNOBS:
                raise ValueError(
                    f"knob {name!r} needs a key (section.key); "
                    f"known knobs: {', '.join(KNOWN_KNOBS)}"
                )
        return self

    @property
    def knob_names(self) -> list[str]:
        return list(self.knobs)

    def key_of(self, knob: str) -> str:
        return self.knobs[knob].key or KNOWN_KNOBS[knob]

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """`section.key=value` for each knob value (JSON-ish YAML scalars,
        as `--set` reads them)."""
        return [
            f"{self.key_of(name)}={_yaml_scalar(params[name])}"
            for name in self.knobs
            if name in params
        ]

    def bundle_knobs(self) -> list[str]:
        return [name for name in self.knobs if self.key_of(name).startswith(BUNDLE_SECTIONS)]

    def base(self, extra_overrides: list[str] | tuple[str, ...] = ()) -> RAGConfig:
        return resolve_config(self.base_config, [*self.base_overrides, *extra_overrides])

    def bundle_variants(self) -> list[dict[str, Any]]:
        """Every combination of the bundle knobs' values (one bundle each)."""
        names = self.bundle_knobs()
        return [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(self.knobs[n].values for n in names))
        ]

    def check_keys(self, base: RAGConfig) -> None:
        """Each knob's key must exist in the config: a typo is a spec error, before any work."""
        known = base.flat_params()
        for name in self.knobs:
            key = self.key_of(name)
            if key not in known:
                raise ConfigError(f"knob {name!r}: unknown config key {key!r} (--space)")


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_tune_spec(
    path: str | Path, *, smoke: bool = False, num_samples: int | None = None
) -> TuneSpec:
    """Read and validate a tune YAML; `smoke` applies its `smoke:` section, `num_samples`
    (--num-samples) wins over both."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file not found: {path} (--space)")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"search space is not valid YAML: {path} ({type(exc).__name__})"
        ) from None
    if not isinstance(tree, dict):
        raise ConfigError(f"search space must be a mapping, got {type(tree).__name__}: {path}")
    smoke_section = tree.pop("smoke", None) or {}
    if smoke:
        if not isinstance(smoke_section, dict) or not smoke_section:
            raise ConfigError(f"--smoke needs a `smoke:` section in {path}")
        tree = _merge(tree, smoke_section)
    if num_samples is not None:
        if num_samples <= 0:
            raise ConfigError(f"num_samples must be > 0, got {num_samples} (--num-samples)")
        tree = _merge(tree, {"search": {"num_samples": num_samples}})
    try:
        return TuneSpec.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where}: {message} (--space)") from None


def tune_configs_path() -> Path:
    from rayrag.config import configs_dir

    return configs_dir() / "tune.yaml"
