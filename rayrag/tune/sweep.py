"""`rayrag tune`: a Ray Tune sweep over chunking, retrieval depth and LoRA rank.

    spec (rayrag/configs/tune.yaml) ─► bundles, one per chunking, built in parallel by Ray tasks
      (cached by key: never per trial) ─► Tuner: Optuna TPE (or grid) proposes knob values,
      ASHA stops trials whose validation loss lags, MLflowLoggerCallback makes every trial
      an MLflow run under the sweep's run ─► the default config measured the same way
      ─► best config YAML (validated, logged, tagged `best`), the winner's merged adapters
      registered as `challenger`, a sensitivity table, plots, the top trials.

The trainable is `trial.tune_trial` (CONVENTIONS 11); all logic is in `TrialRunner`, and
this module only assembles Ray and MLflow around it.

    >>> summary = run_sweep(
    ...     load_tune_spec("rayrag/configs/tune.yaml", smoke=True), out=Path(".rayrag/tune/s1")
    ... )
    >>> summary["best"]["objective"], summary["best_config"]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rayrag.atomic import atomic_text
from rayrag.config import RAGConfig, load_config
from rayrag.errors import ConfigError, DataError, RayRagError
from rayrag.tracking.tracker import Tracker, compose_run_name
from rayrag.tune.report import (
    TrialRecord,
    format_sensitivity,
    format_top_trials,
    plot_objective_by,
    plot_objective_grid,
    sensitivity,
    sensitivity_table,
)
from rayrag.tune.spec import TuneSpec
from rayrag.tune.trial import PLAN_FILE, TRIALS_DIR, SweepPlan, TrialRunner, tune_trial

Progress = Callable[[str], None]
BEST_FILE = "best.yaml"
DEFAULT_ROOT = Path(".rayrag/tune")
STRICT_METRICS_ENV = "TUNE_DISABLE_STRICT_METRIC_CHECKING"


def _stderr(message: str) -> None:
    print(f"[rayrag tune] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- inputs


def resolve_inputs(
    spec: TuneSpec,
    base: RAGConfig,
    corpus: Path | None,
    dev: Path | None,
    base_model: str | None,
    root: Path,
    progress: Progress,
) -> tuple[Path, Path, Path | None, Path]:
    """(corpus, dev set, canaries file or None, base checkpoint dir): flags win over the spec;
    no corpus anywhere = the demo corpus, generated once under `root`."""
    from rayrag.tracking.model_registry import resolve_model

    corpus = corpus or (Path(spec.data.corpus) if spec.data.corpus else None)
    if corpus is None:
        from rayrag.data.demo_corpus import generate_demo_corpus

        data_dir = root / "demo-data"
        if not (data_dir / "qa.jsonl").is_file():
            progress(f"generating the demo corpus into {data_dir}")
            generate_demo_corpus(data_dir, seed=0)
        corpus = data_dir / "corpus.jsonl"
    if not Path(corpus).is_file():
        raise ConfigError(f"corpus not found: {corpus} (--corpus)")
    dev = dev or (Path(spec.data.dev) if spec.data.dev else Path(corpus).parent / "qa.jsonl")
    if not Path(dev).is_file():
        raise ConfigError(f"dev set not found: {dev} (--dev)")
    canaries = Path(dev).parent / "planted_pii.json"
    ref = base_model or spec.data.base_model
    try:
        model = resolve_model(ref, base.tracking)
    except ConfigError as error:
        raise ConfigError(
            f"{error}; train one first (`make demo` or `rayrag train`) or pass --base"
        ) from None
    if not (Path(model) / "config.json").is_file():
        raise ConfigError(f"base generator not found: {model} (--base)")
    return (
        Path(corpus).resolve(),
        Path(dev).resolve(),
        canaries.resolve() if canaries.is_file() else None,
        Path(model).resolve(),
    )


def _corpus_groups(corpus: Path) -> tuple[str, ...]:
    """Every ACL group of the corpus: the dev evaluation sees what an admin sees (access
    control is tested elsewhere; here it would only hide gold passages)."""
    from rayrag.data.readers import read_corpus

    groups = {g for doc in read_corpus(corpus).documents for g in doc.acl}
    return tuple(sorted(groups)) or ("public",)


def default_params(spec: TuneSpec, base: RAGConfig) -> dict[str, Any]:
    """The knob values of the base config as served: its own chunking, depth, ...; no adapter."""
    tree = base.model_dump(mode="json")
    params: dict[str, Any] = {}
    for name in spec.knob_names:
        node: Any = tree
        for part in spec.key_of(name).split("."):
            node = node[part]
        params[name] = node
    if "lora_rank" in params:
        params["lora_rank"] = 0  # the champion is served without adapters
    return params


# ---------------------------------------------------------------- the sweep


def _param_space(spec: TuneSpec, plan_path: Path) -> dict[str, Any]:
    from ray import tune

    pick = tune.grid_search if spec.search.algorithm == "grid" else tune.choice
    return {
        **{name: pick(list(knob.values)) for name, knob in spec.knobs.items()},
        "plan": str(plan_path),
    }


def _final_objective_search() -> type:
    """Ray's OptunaSearch, told only the trial's final objective: the reports before it carry
    the validation loss (for ASHA), which is not the objective and must not reach Optuna as
    an intermediate value of it."""
    from ray.tune.search.optuna import OptunaSearch

    class FinalObjectiveOptunaSearch(OptunaSearch):
        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if self.metric in result:
                super().on_trial_result(trial_id, result)

    return FinalObjectiveOptunaSearch


def _tuner(spec: TuneSpec, plan_path: Path, out: Path, callback: Any) -> Any:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    search_alg = None
    if spec.search.algorithm == "tpe":
        from optuna.samplers import TPESampler

        search_alg = _final_objective_search()(
            metric="objective", mode="max", sampler=TPESampler(seed=spec.search.seed)
        )
    scheduler = ASHAScheduler(
        metric="val_loss",
        mode="min",
        time_attr="training_iteration",
        max_t=spec.trial.reports + 1,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )
    gpus = spec.trial.gpus if ray.cluster_resources().get("GPU", 0) > 0 else 0
    trainable = tune.with_resources(tune_trial, {"cpu": spec.trial.cpus, "gpu": gpus})
    return tune.Tuner(
        trainable,
        param_space=_param_space(spec, plan_path),
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=spec.search.num_samples,
            max_concurrent_trials=spec.search.max_concurrent,
        ),
        run_config=tune.RunConfig(
            name="trials",
            storage_path=str(out / "ray"),
            callbacks=[callback],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            verbose=1,
        ),
    )


@contextlib.contextmanager
def _objective_only_at_the_end() -> Iterator[None]:
    """The searcher's metric (`objective`) comes in a trial's last report only, by design:
    the reports before it carry the validation loss ASHA decides on. Tune's strict check
    would reject them, so it is off while the sweep runs (and restored after)."""
    saved = os.environ.get(STRICT_METRICS_ENV)
    os.environ[STRICT_METRICS_ENV] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(STRICT_METRICS_ENV, None)
        else:
            os.environ[STRICT_METRICS_ENV] = saved


def _records(results: Any, knobs: list[str]) -> list[TrialRecord]:
    from rayrag.errors import user_error_in

    records = []
    for result in results:
        config = dict(result.config or {})
        params = {k: config[k] for k in knobs if k in config}
        metrics = {
            k: float(v)
            for k, v in (result.metrics or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
        }
        trial_id = str((result.metrics or {}).get("trial_id") or Path(str(result.path)).name)
        history = result.metrics_dataframe
        if history is not None and "val_loss" in history and len(history):
            first = float(history["val_loss"].iloc[0])  # the first rung: every trial reaches it
            if math.isfinite(first):
                metrics["first_val_loss"] = first
        if result.error is not None:
            user = user_error_in(result.error)
            message = (
                str(user)
                if user is not None
                else f"{type(result.error).__name__} (see {result.path})"
            )
            records.append(
                TrialRecord(
                    trial_id,
                    params,
                    "error",
                    metrics,
                    message.splitlines()[0] if message else "",
                    int(metrics.get("training_iteration", 0)),
                )
            )
        else:
            status = "completed" if "objective" in metrics else "stopped"
            records.append(
                TrialRecord(
                    trial_id,
                    params,
                    status,
                    metrics,
                    None,
                    int(metrics.get("training_iteration", 0)),
                )
            )
    return records


def _run_default(plan_path: Path, params: dict[str, Any], cpus: float) -> Any:
    """The default config, measured like a trial, as a Ray task beside the sweep."""
    import ray

    @ray.remote(num_cpus=cpus)
    def measure(plan_file: str, knob_values: dict[str, Any]) -> dict[str, Any]:
        runner = TrialRunner(SweepPlan.load(plan_file), knob_values, "default")
        return runner.run(lambda _result: None)

    return measure.remote(str(plan_path), params)


def run_sweep(
    spec: TuneSpec,
    *,
    out: Path | None = None,
    cache: Path | None = None,
    corpus: Path | None = None,
    dev: Path | None = None,
    base_model: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    tracker: Tracker | None = None,
    progress: Progress = _stderr,
) -> dict[str, Any]:
    """The whole sweep; returns the summary `rayrag tune --json` prints."""
    import ray

    from rayrag.errors import user_error_in
    from rayrag.ray_runtime import ensure_ray
    from rayrag.tune.bundles import BundleCache, bundle_key, corpus_digest

    started = time.perf_counter()
    base = spec.base(overrides)
    spec.check_keys(base)
    if not base.tracking.enabled:
        raise ConfigError("tuning logs every trial to MLflow: tracking.enabled must be true")
    root = (out.parent if out is not None else DEFAULT_ROOT).resolve()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = (out or DEFAULT_ROOT / f"sweep-{stamp}").resolve()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"refusing to write into {out}: it is not empty (--out)")
    cache_root = (cache or root / "bundles").resolve()
    corpus, dev, canaries, model = resolve_inputs(
        spec, base, corpus, dev, base_model, root, progress
    )
    ensure_ray(base)

    # Bundles: one per chunking variant (+ the default's), built before any trial starts.
    variants, invalid = [], {}
    for values in [
        *spec.bundle_variants(),
        {n: default_params(spec, base)[n] for n in spec.bundle_knobs()},
    ]:
        try:
            variants.append(base.with_overrides(spec.overrides(values)))
        except ConfigError as error:
            invalid[json.dumps(values, sort_keys=True)] = str(error)
    digest = corpus_digest(corpus)
    progress(
        f"bundles: {len({bundle_key(c, digest) for c in variants})} chunking variant(s) "
        f"({len(invalid)} invalid, left to fail their trials) -> cache {cache_root}"
    )
    prebuilt = BundleCache(cache_root).prebuild(
        corpus, variants, num_cpus=spec.trial.cpus, progress=progress
    )
    if prebuilt.failed and not prebuilt.paths:
        raise DataError(f"no bundle could be built: {next(iter(prebuilt.failed.values()))}")
    _warn_identical_bundles(prebuilt.paths, progress)

    out.mkdir(parents=True, exist_ok=True)
    plan = SweepPlan(
        spec=spec,
        base_config=base.model_dump(mode="json"),
        corpus_digest=digest,
        bundles={k: str(v) for k, v in prebuilt.paths.items()},
        dev=str(dev),
        canaries_file=str(canaries) if canaries else None,
        base_model=str(model),
        out=str(out),
        groups=_corpus_groups(corpus),
    )
    plan_path = plan.save(out / PLAN_FILE)
    defaults = default_params(spec, base)

    tracker = tracker or Tracker(base.tracking)
    tags = {
        "sweep": out.name,
        "algorithm": spec.search.algorithm,
        "searched": ",".join(spec.knob_names),
    }
    name = compose_run_name("tune", base, spec.search.algorithm, out.name)
    with tracker.start_run("tune", base, tags=tags, run_name=name) as parent:
        parent.log_dataset(dev, "dev", "tuning")
        parent.log_dict(spec.model_dump(mode="json"), "tune_spec.json")
        parent.log_dict(prebuilt.to_json(), "bundles.json")
        progress(
            f"sweep: {spec.search.algorithm}, {spec.search.num_samples} sample(s) over "
            f"{', '.join(spec.knob_names)}; ASHA on val_loss; MLflow parent run {parent.run_id}"
        )
        default_ref = _run_default(plan_path, defaults, spec.trial.cpus)
        # Tune's progress tables go to stderr with ours: stdout ends with the one JSON summary.
        with (
            tracker.tune_logger(parent.run_id, tags={"sweep": out.name}) as callback,
            _objective_only_at_the_end(),
            contextlib.redirect_stdout(sys.stderr),
        ):
            results = _tuner(spec, plan_path, out, callback).fit()
        try:
            default_metrics = ray.get(default_ref)
        except Exception as exc:  # the default failing is reported, not fatal: the sweep stands
            user = user_error_in(exc)
            default_metrics = {"error": str(user) if user else type(exc).__name__}
        records = _records(results, spec.knob_names)
        summary = _summarise(
            spec,
            base,
            records,
            defaults,
            default_metrics,
            out,
            tracker,
            parent,
            prebuilt,
            invalid,
            progress,
        )
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def _warn_identical_bundles(paths: dict[str, Path], progress: Progress) -> None:
    """Two chunkings that cut the corpus the same way make the same bundle: say so, or a flat
    sensitivity would look like a finding about chunk size rather than about this corpus."""
    import pyarrow.parquet as pq

    seen: dict[str, str] = {}
    for key, path in paths.items():
        ids = pq.read_table(
            Path(path) / "chunks.parquet", columns=["chunk_id", "start", "end"]
        ).to_pydict()
        fingerprint = json.dumps(ids, sort_keys=True)
        if fingerprint in seen:
            progress(
                f"note: bundles {seen[fingerprint][:12]} and {key[:12]} cut the corpus into the "
                "same chunks (its documents are shorter than both chunk sizes)"
            )
        else:
            seen[fingerprint] = key


def _summarise(
    spec: TuneSpec,
    base: RAGConfig,
    records: list[TrialRecord],
    defaults: dict[str, Any],
    default_metrics: dict[str, Any],
    out: Path,
    tracker: Tracker,
    parent: Any,
    prebuilt: Any,
    invalid: dict[str, str],
    progress: Progress,
) -> dict[str, Any]:
    knobs = spec.knob_names
    completed = [r for r in records if r.objective is not None]
    trial_runs = tracker.child_runs("tune", parent.run_id)
    summary: dict[str, Any] = {
        "trials": len(records),
        "completed": len(completed),
        "stopped_early": sum(r.status == "stopped" for r in records),
        "errored": sum(r.status == "error" for r in records),
        "searched": knobs,
        "algorithm": spec.search.algorithm,
        "mlflow_runs": len(trial_runs),
        "mlflow_parent_run_id": parent.run_id,
        "out": str(out),
        "bundles": {
            "built": len(prebuilt.built),
            "reused": len(prebuilt.reused),
            "failed": len(prebuilt.failed),
            "invalid_chunkings": len(invalid),
            "trial_hits": int(sum(r.metrics.get("bundle_cache_hit", 0) > 0 for r in records)),
        },
    }
    summary["errors"] = [
        {"trial_id": r.trial_id, **r.params, "error": r.error}
        for r in records
        if r.status == "error"
    ][:10]
    rows = sensitivity(records, knobs)
    summary["sensitivity"] = [
        {"knob": r["knob"], "range": r["range"], "best_value": r["best_value"]} for r in rows
    ]
    default_objective = default_metrics.get("objective")
    summary["default"] = {
        "objective": default_objective,
        **defaults,
        **{
            k: default_metrics[k]
            for k in (
                "context_recall",
                "recall_at_5",
                "answer_f1",
                "answer_em",
                "p50_ms",
                "val_loss",
            )
            if k in default_metrics
        },
        **({"error": default_metrics["error"]} if "error" in default_metrics else {}),
    }
    progress("top trials:\n" + format_top_trials(records, knobs))
    progress(
        "sensitivity (range of the mean objective over each knob's values, completed trials):\n"
        + format_sensitivity(rows)
    )
    # Every trial, stopped ones too, reports a validation loss at the first rung: the knobs ASHA
    # pruned on show here even when no trial with their losing values completed.
    loss_rows = sensitivity(records, knobs, metric="first_val_loss", lower_is_better=True)
    summary["sensitivity_val_loss"] = [
        {"knob": r["knob"], "range": r["range"], "best_value": r["best_value"]} for r in loss_rows
    ]
    progress(
        "sensitivity of the first validation loss (all trials; lower is better):\n"
        + format_sensitivity(loss_rows, measure="val_loss")
    )
    parent.log_table(sensitivity_table(rows), "sensitivity.json")
    parent.log_table(sensitivity_table(loss_rows, measure="val_loss"), "sensitivity_val_loss.json")
    parent.log_table(
        [
            {
                "trial_id": r.trial_id,
                "status": r.status,
                **r.params,
                **{
                    k: r.metrics.get(k)
                    for k in (
                        "objective",
                        "val_loss",
                        "context_recall",
                        "recall_at_5",
                        "answer_f1",
                        "answer_em",
                        "p50_ms",
                    )
                },
            }
            for r in records
        ],
        "trials.json",
    )
    _plots(records, knobs, out, parent)
    summary["best"] = summary["best_trial"] = summary["best_config"] = summary["challenger"] = None
    shown = ("context_recall", "recall_at_5", "answer_f1", "answer_em", "p50_ms", "val_loss")
    default_record = None
    if isinstance(default_objective, float | int):
        default_record = TrialRecord(
            "default",
            dict(defaults),
            "completed",
            {k: float(v) for k, v in default_metrics.items() if isinstance(v, float | int)},
        )
    best_trial = max(completed, key=lambda r: r.objective) if completed else None
    if best_trial is not None:
        summary["best_trial"] = {
            "objective": best_trial.objective,
            "trial_id": best_trial.trial_id,
            **best_trial.params,
            **{k: best_trial.metrics[k] for k in shown if k in best_trial.metrics},
        }
        if default_record is not None:
            summary["improvement_over_default"] = round(
                best_trial.objective - default_record.objective, 6
            )
    # The default is a candidate too: a sweep that finds nothing better recommends what is served.
    candidates = [r for r in (best_trial, default_record) if r is not None]
    if not candidates:
        progress("no trial completed and the default could not be measured: no best config")
        _cleanup_trials(out, keep=None)
        return summary
    best = max(candidates, key=lambda r: r.objective)  # a tie keeps the trial (listed first)
    if best is default_record:
        progress("the default config scored best: no trial beat it, best.yaml is the default")
    best_config = base.with_overrides(spec.overrides(best.params))
    best_path = _write_best(best_config, out / BEST_FILE)
    summary["best_config"] = str(best_path)
    summary["best"] = {
        "objective": best.objective,
        "trial_id": best.trial_id,
        **best.params,
        **{k: best.metrics[k] for k in shown if k in best.metrics},
    }
    best_run = None
    if best is not default_record:
        best_run = next(
            (
                run["run_id"]
                for run in trial_runs
                if best.trial_id in run["tags"].get("trial_name", "")
            ),
            None,
        )
        if best_run is not None:
            tracker.set_run_tags(best_run, {"best": "true"})
    parent.log_artifact(best_path)
    parent.set_tags(
        {
            "best": best.trial_id,
            "best_config_hash": best_config.config_hash,
            "best_run_id": best_run or "",
        }
    )
    parent.log_metrics(
        {
            "best_objective": best.objective,
            "trials": float(len(records)),
            "completed": float(len(completed)),
            "stopped_early": float(summary["stopped_early"]),
            "errored": float(summary["errored"]),
            **({"default_objective": default_record.objective} if default_record else {}),
        }
    )
    # The challenger is the best trial that trained adapters, even when a rank-0 trial won:
    # the sweep's ranking is offline, the champion/challenger split is where adapters earn
    # promotion.
    adapted = [
        r
        for r in completed
        if r.params.get("lora_rank")
        and (out / TRIALS_DIR / r.trial_id / "model" / "config.json").is_file()
    ]
    contender = max(adapted, key=lambda r: r.objective) if adapted else None
    if contender is None:
        progress(
            "no completed trial trained adapters (lora_rank > 0): nothing to register as challenger"
        )
    else:
        contender_run = (
            best_run
            if contender is best
            else next(
                (
                    run["run_id"]
                    for run in trial_runs
                    if contender.trial_id in run["tags"].get("trial_name", "")
                ),
                None,
            )
        )
        summary["challenger"] = _register_challenger(
            contender, out, tracker, contender_run, progress, won=contender is best
        )
    _cleanup_trials(out, keep={best.trial_id} | ({contender.trial_id} if contender else set()))
    return summary


def _write_best(config: RAGConfig, path: Path) -> Path:
    """The winner's whole config as YAML, written atomically, then read back through the
    same validation every config goes through (it must load to the same hash)."""
    with atomic_text(path) as handle:
        handle.write(f"# Best config of the sweep in {path.parent.name} (rayrag tune).\n")
        handle.write(config.to_yaml())
    loaded = load_config(path)
    if loaded.config_hash != config.config_hash:
        raise RayRagError(f"{path} does not load back to the config it was written from")
    return path


def _register_challenger(
    trial: TrialRecord,
    out: Path,
    tracker: Tracker,
    run_id: str | None,
    progress: Progress,
    *,
    won: bool,
) -> dict[str, Any]:
    """The trial's merged adapters as a version of the generator, aliased `challenger`
    (tagged with whether it won the sweep), so serving can compare it with the champion."""
    from rayrag.tracking.model_registry import ModelRegistry

    model_dir = out / TRIALS_DIR / trial.trial_id / "model"
    registry = ModelRegistry(tracker)
    info = registry.register(
        model_dir,
        run_id=run_id,
        tags={
            "lora_rank": trial.params["lora_rank"],
            "tune_trial": trial.trial_id,
            "objective": trial.objective,
            "won_sweep": str(won).lower(),
            "source": "tune",
        },
    )
    if "champion" in info.aliases:  # the first version ever registered: it is the champion already
        return {
            "model": registry.name,
            "version": info.version,
            "alias": "champion",
            "trial_id": trial.trial_id,
            "won_sweep": won,
        }
    registry.set_challenger(info.version)
    standing = "the sweep's best" if won else "the best adapter trial; a rank-0 trial scored higher"
    progress(
        f"registered {registry.name} v{info.version} as challenger (merged LoRA rank "
        f"{trial.params['lora_rank']}, {standing}); promote with `rayrag registry promote "
        f"{info.version}`"
    )
    return {
        "model": registry.name,
        "version": info.version,
        "alias": "challenger",
        "trial_id": trial.trial_id,
        "won_sweep": won,
    }


def _plots(records: list[TrialRecord], knobs: list[str], out: Path, parent: Any) -> None:
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    figures = {}
    if "chunk_size" in knobs and "top_k" in knobs:
        figures["objective_chunk_size_x_top_k.png"] = plot_objective_grid(
            records, "chunk_size", "top_k"
        )
    if "lora_rank" in knobs:
        figures["objective_by_lora_rank.png"] = plot_objective_by(records, "lora_rank")
    for name, fig in figures.items():
        fig.savefig(plots / name, dpi=110, bbox_inches="tight")
        parent.log_figure(fig, f"plots/{name}")


def _cleanup_trials(out: Path, keep: set[str] | None) -> None:
    """Trial folders hold merged checkpoints; only the winner's and the challenger's are kept."""
    import shutil

    trials = out / TRIALS_DIR
    if not trials.is_dir():
        return
    for folder in trials.iterdir():
        if folder.name not in (keep or set()):
            shutil.rmtree(folder, ignore_errors=True)
