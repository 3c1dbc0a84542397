"""The single door to MLflow: experiments per activity, config params, artifacts, metrics.

Only this module imports mlflow (CONVENTIONS.md §12). Every run logs the config three ways
(flattened params, the YAML as an artifact, the `config_hash` tag) so a bundle, model or
evaluation can be traced to the exact config that made it. Params, tags and metrics carry
ids, counts, digests and timings only — never document or question text.

    >>> tracker = Tracker(cfg.tracking)
    >>> with tracker.start_run("ingest", cfg, tags={"bundle_id": "b-1"}) as run:
    ...     run.log_metrics({"chunks": 812})
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayrag.config import RAGConfig, TrackingConfig
from rayrag.governance.privacy_log import get_logger

_log = get_logger("rayrag.tracking")
MAX_PARAM_CHARS = 500  # MLflow allows 6000; long values are configs, not params


def default_tracking_uri(config: TrackingConfig, workdir: Path | None = None) -> str:
    """config.tracking_uri, else $MLFLOW_TRACKING_URI, else sqlite:///<workdir>/mlflow.db."""
    if config.tracking_uri:
        return config.tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = (workdir or Path.cwd()).resolve()
    return f"sqlite:///{base / 'mlflow.db'}"


@dataclass
class RunHandle:
    """What a caller may do inside a run. `run_id` is None when tracking is disabled."""

    run_id: str | None
    experiment: str
    _mlflow: Any = None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._mlflow is None:
            return
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        self._mlflow.log_metrics(clean, step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self._mlflow is None:
            return
        self._mlflow.log_params({k: _param_value(v) for k, v in params.items()})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self._mlflow is None:
            return
        self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        if self._mlflow is None:
            return
        self._mlflow.log_dict(dict(data), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self._mlflow is None:
            return
        self._mlflow.log_text(text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self._mlflow is None:
            return
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path)


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


class Tracker:
    """Opens MLflow runs, one experiment per activity (`rayrag-ingest`, `rayrag-eval`, ...)."""

    def __init__(self, config: TrackingConfig, workdir: Path | None = None,
                 artifact_root: Path | None = None) -> None:
        self.config = config
        self.workdir = workdir
        self.artifact_root = artifact_root
        self._mlflow: Any = None

    @property
    def tracking_uri(self) -> str:
        return default_tracking_uri(self.config, self.workdir)

    def warm_up(self) -> None:
        if self._mlflow is not None or not self.config.enabled:
            return
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        self._mlflow = mlflow

    def experiment_name(self, activity: str) -> str:
        return f"{self.config.experiment_prefix}-{activity}"

    def _ensure_experiment(self, name: str) -> str:
        mlflow = self._mlflow
        found = mlflow.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.artifact_root is not None:
            location = (self.artifact_root / name).resolve().as_uri()
        return mlflow.create_experiment(name, artifact_location=location)

    @contextlib.contextmanager
    def start_run(self, activity: str, config: RAGConfig | None = None,
                  tags: Mapping[str, Any] | None = None,
                  run_name: str | None = None) -> Iterator[RunHandle]:
        """A run in the activity's experiment, with the config logged three ways."""
        name = self.experiment_name(activity)
        if not self.config.enabled:
            yield RunHandle(run_id=None, experiment=name)
            return
        self.warm_up()
        mlflow = self._mlflow
        experiment_id = self._ensure_experiment(name)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as active:
            handle = RunHandle(run_id=active.info.run_id, experiment=name, _mlflow=mlflow)
            if config is not None:
                handle.log_params(config.flat_params())
                handle.set_tags({"config_hash": config.config_hash, "config_name": config.name})
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "config.yaml"
                    path.write_text(config.to_yaml(), encoding="utf-8")
                    handle.log_artifact(path)
            if tags:
                handle.set_tags(tags)
            handle.set_tags({"activity": activity})
            _log.info("mlflow_run_started", extra={"fields": {
                "experiment": name, "run_id": handle.run_id}})
            yield handle

    def find_runs(self, activity: str, max_results: int = 100) -> list[dict[str, Any]]:
        """Runs of an activity, newest first, as plain dicts (for tests and reports)."""
        self.warm_up()
        mlflow = self._mlflow
        experiment = mlflow.get_experiment_by_name(self.experiment_name(activity))
        if experiment is None:
            return []
        frame = mlflow.search_runs(experiment_ids=[experiment.experiment_id],
                                   max_results=max_results, order_by=["start_time DESC"])
        return frame.to_dict(orient="records")
