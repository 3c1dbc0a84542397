"""The single door to MLflow: experiments per activity, config params, artifacts, metrics.

Only this module imports mlflow: one place to change when MLflow's API moves. Every run logs the
config three ways (flattened params, the YAML as an artifact, the `config_hash` tag) so a bundle,
model or evaluation can be traced to the exact config that made it. Params, tags and metrics carry
ids, counts, digests and timings only — never document or question text. Every run is
also tagged with the code that made it (`mlflow.source.git.commit`, `rayrag_version`), and a
dataset is logged by its sha256 and path, never its rows (MLflow's `MetaDataset`).

Besides runs, this door serves MLflow's two registries: the reader's prompt template
(`Tracker.register_prompt` / `prompt_version`) and the generator checkpoints
(`ModelRegistry`, in `registry.py`, which reaches mlflow only through a `Tracker`).

    >>> tracker = Tracker(cfg.tracking)
    >>> with tracker.start_run("ingest", cfg, tags={"bundle_id": "b-1"}) as run:
    ...     run.log_metrics({"chunks": 812})
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rayrag
from rayrag.config import RAGConfig, TrackingConfig
from rayrag.errors import ConfigError
from rayrag.event_log import get_logger

_log = get_logger("rayrag.tracking")
MAX_PARAM_CHARS = 500  # MLflow allows 6000; long values are configs, not params
DATASET_DIGEST_CHARS = 32  # MLflow's dataset digest column holds 36 characters
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # the tag the MLflow UI shows as the run's commit


def default_tracking_uri(config: TrackingConfig, workdir: Path | None = None) -> str:
    """config.tracking_uri, else $MLFLOW_TRACKING_URI, else sqlite:///<workdir>/mlflow.db."""
    if config.tracking_uri:
        return config.tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = (workdir or Path.cwd()).resolve()
    return f"sqlite:///{base / 'mlflow.db'}"


def default_artifact_root(tracking_uri: str) -> Path | None:
    """Beside a SQLite store, `<store's folder>/mlartifacts`; None for any other store (its
    server decides). MLflow's own default is ./mlruns under whatever folder a command runs in,
    which scatters one store's artifacts over every working directory."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"


def require_store(config: TrackingConfig, workdir: Path | None = None) -> str:
    """The tracking URI, when a store is there to read: a command that only reads (`rayrag
    registry list`) must not leave an empty `mlflow.db` wherever it was run."""
    uri = default_tracking_uri(config, workdir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}: after `make demo`, "
            "`source .rayrag/demo/demo.env`; or set MLFLOW_TRACKING_URI (or tracking.tracking_uri)"
        )
    return uri


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

    def log_dataset(self, path: Path, name: str, context: str) -> str:
        """Record which file a run read, by sha256 and path only; returns the full sha256.

        The digest is computed even when tracking is off, so callers can stamp it elsewhere.
        MLflow gets a `MetaDataset` (source, name, digest) and no rows: a corpus holds the
        documents this system must not copy into a tracking store.
        """
        path = Path(path)
        sha256 = file_sha256(path)
        if self._mlflow is None:
            return sha256
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        with warnings.catch_warnings():  # a local path matches two equivalent source types
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(path.resolve()))
        dataset = MetaDataset(source=source, name=name, digest=sha256[:DATASET_DIGEST_CHARS])
        self._mlflow.log_input(dataset, context=context)
        self._mlflow.set_tag(f"dataset.{context}.digest", sha256)
        return sha256

    def log_figure(self, fig: Any, artifact_file: str) -> None:
        """A matplotlib figure as a PNG artifact. The caller owns (and closes) `fig`."""
        if self._mlflow is None:
            return
        self._mlflow.log_figure(fig, artifact_file)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """A list of flat dicts as a JSON artifact (readable without pandas, unlike log_table)."""
        if self._mlflow is None:
            return
        text = json.dumps([dict(row) for row in rows], indent=2, default=str)
        self._mlflow.log_text(text, artifact_file)


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's bytes, read in 1 MiB blocks (corpora can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def source_git_commit() -> str | None:
    """`git rev-parse HEAD` of the tree rayrag is imported from; None outside a checkout.

    Asked once per process: a run must name the code that made it, and a subprocess per run
    would be waste. Any failure (no git, not a checkout, slow disk) just leaves the tag off.
    """
    package_dir = Path(rayrag.__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=package_dir,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if len(commit) >= 40 else None


def code_version_tags() -> dict[str, str]:
    """The tags that tie a run to its code: the git commit (when known) and rayrag's version."""
    tags = {"rayrag_version": rayrag.__version__}
    commit = source_git_commit()
    if commit:
        tags[GIT_COMMIT_TAG] = commit
    return tags


RUN_NAME_PART_CHARS = 48  # per part: a run name is a label for the runs table, not a record
_RUN_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._:@,+=/-]+")


def compose_run_name(
    activity: str,
    config: RAGConfig | None = None,
    setting: str | None = None,
    model: str | None = None,
    version: str | int | None = None,
) -> str:
    """`<activity> <config name> <mode or key setting> <model name> v<version>`, e.g.
    `eval demo hybrid rayrag-generator v1`; '-' for a part that does not apply.

    One place builds every run's name so the runs table reads alike across activities. Parts
    are identifiers only (names, modes, versions): anything outside `[A-Za-z0-9._:@,+=/-]` is
    dropped and each part is cut to a label's length, so no text content reaches a name.
    """

    def part(value: Any) -> str:
        text = _RUN_NAME_UNSAFE.sub("", str(value)) if value not in (None, "") else ""
        return text[:RUN_NAME_PART_CHARS] or "-"

    version_text = part(version)
    version_text = (
        version_text[1:]
        if version_text[:1] in ("v", "V") and len(version_text) > 1
        else version_text
    )
    parts = (
        part(activity),
        part(config.name if config is not None else None),
        part(setting),
        part(model),
        f"v{version_text}",
    )
    return " ".join(parts)


def _quote(value: str) -> str:
    """A value for an MLflow search filter; MLflow has no escape, so pick a free quote."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ConfigError(f"cannot search MLflow for a value holding both quote characters: {value!r}")


def _tag_key(key: str) -> str:
    if "`" in key:
        raise ConfigError(f"cannot search MLflow for a tag key holding a backtick: {key!r}")
    return f"tags.`{key}`"


@contextlib.contextmanager
def _uri_env_restored() -> Iterator[None]:
    """mlflow 3's URI setters also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI; put the
    environment back, or the next Tracker without a URI would write into this store."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Tracker:
    """Opens MLflow runs, one experiment per activity (`rayrag-ingest`, `rayrag-eval`, ...)."""

    def __init__(
        self, config: TrackingConfig, workdir: Path | None = None, artifact_root: Path | None = None
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.artifact_root = artifact_root
        self._mlflow: Any = None
        self._client: Any = None

    @property
    def tracking_uri(self) -> str:
        return default_tracking_uri(self.config, self.workdir)

    def warm_up(self) -> None:
        """Import mlflow and point it at this tracker's store.

        mlflow's fluent API (start_run, log_*, genai.register_prompt) reads one global URI, so
        every entry point re-points it: two trackers in one process (a test, a CLI `compare`)
        must not write into each other's store.
        """
        if not self.config.enabled:
            return
        if self._mlflow is None:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            import mlflow

            self._mlflow = mlflow
        uri = self.tracking_uri
        with _uri_env_restored():
            if self._mlflow.get_tracking_uri() != uri:
                self._mlflow.set_tracking_uri(uri)
            if self._mlflow.get_registry_uri() != uri:
                self._mlflow.set_registry_uri(uri)

    @property
    def mlflow(self) -> Any:
        """The mlflow module, pointed at this store (for `registry.py`, which may not import it)."""
        self._require_enabled()
        self.warm_up()
        return self._mlflow

    def client(self) -> Any:
        """An `MlflowClient` bound to this store (not to whatever URI is global now)."""
        mlflow = self.mlflow
        if self._client is None:
            self._client = mlflow.MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def _require_enabled(self) -> None:
        if not self.config.enabled:
            raise ConfigError(
                "this needs MLflow, but tracking is disabled (tracking.enabled: false)"
            )

    def download_artifacts(self, artifact_uri: str, dst_path: Path) -> Path:
        """Fetch an artifact directory (any scheme this store serves) into `dst_path`."""
        mlflow = self.mlflow
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, dst_path=str(dst_path), tracking_uri=self.tracking_uri
        )
        return Path(local)

    def experiment_name(self, activity: str) -> str:
        return f"{self.config.experiment_prefix}-{activity}"

    def _ensure_experiment(self, name: str) -> str:
        mlflow = self._mlflow
        found = mlflow.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        root = self.artifact_root or default_artifact_root(self.tracking_uri)
        location = None if root is None else (root / name).resolve().as_uri()
        return mlflow.create_experiment(name, artifact_location=location)

    @contextlib.contextmanager
    def start_run(
        self,
        activity: str,
        config: RAGConfig | None = None,
        tags: Mapping[str, Any] | None = None,
        run_name: str | None = None,
    ) -> Iterator[RunHandle]:
        """A run in the activity's experiment, with the config logged three ways. Without
        `run_name` it is named `compose_run_name(activity, config)`, never MLflow's random one."""
        name = self.experiment_name(activity)
        run_name = run_name or compose_run_name(activity, config)
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
            handle.set_tags(code_version_tags())
            if tags:
                handle.set_tags(tags)
            handle.set_tags({"activity": activity})
            _log.info(
                "mlflow_run_started",
                extra={"fields": {"experiment": name, "run_id": handle.run_id}},
            )
            yield handle

    def create_run(
        self, activity: str, tags: Mapping[str, Any] | None = None, run_name: str | None = None
    ) -> str:
        """A run made through the client, not the fluent stack; the caller ends it with
        `client().set_terminated(run_id)`. Usable inside another active run (a training
        script registering its checkpoint), where `start_run` would refuse to nest."""
        self.warm_up()
        experiment_id = self._ensure_experiment(self.experiment_name(activity))
        all_tags = {
            **code_version_tags(),
            **{k: str(v) for k, v in (tags or {}).items()},
            "activity": activity,
            "mlflow.runName": run_name or compose_run_name(activity),
        }
        return self.client().create_run(experiment_id, tags=all_tags).info.run_id

    def find_runs(self, activity: str, max_results: int = 100) -> list[dict[str, Any]]:
        """Runs of an activity, newest first, as plain dicts (for tests and reports)."""
        if not self.config.enabled:
            return []
        self.warm_up()
        mlflow = self._mlflow
        experiment = mlflow.get_experiment_by_name(self.experiment_name(activity))
        if experiment is None:
            return []
        frame = mlflow.search_runs(
            experiment_ids=[experiment.experiment_id],
            max_results=max_results,
            order_by=["start_time DESC"],
        )
        return frame.to_dict(orient="records")

    def last_run(
        self, activity: str, tags: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        """The newest run of `activity` whose tags equal all of `tags`, or None.

        The gate's question ("what did the champion score?") as a plain dict:
        {"run_id", "metrics", "params", "tags", "start_time" (ms)}.
        """
        if not self.config.enabled:
            return None
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment_name(activity))
        if experiment is None:
            return None
        wanted = " and ".join(f"{_tag_key(k)} = {_quote(str(v))}" for k, v in (tags or {}).items())
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=wanted,
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            return None
        run = runs[0]
        return {
            "run_id": run.info.run_id,
            "metrics": dict(run.data.metrics),
            "params": dict(run.data.params),
            "tags": dict(run.data.tags),
            "start_time": run.info.start_time,
        }

    def child_runs(self, activity: str, parent_run_id: str) -> list[dict[str, Any]]:
        """Runs of `activity` nested under `parent_run_id` (a sweep's trials), oldest first:
        {"run_id", "status", "metrics", "params", "tags"}."""
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment_name(activity))
        if experiment is None:
            return []
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = {_quote(parent_run_id)}",
            order_by=["attributes.start_time ASC"],
            max_results=5000,
        )
        return [
            {
                "run_id": r.info.run_id,
                "status": r.info.status,
                "metrics": dict(r.data.metrics),
                "params": dict(r.data.params),
                "tags": dict(r.data.tags),
            }
            for r in runs
        ]

    def set_run_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Tag a run that is not the active one (a finished trial)."""
        client = self.client()
        for key, value in tags.items():
            client.set_tag(run_id, key, str(value))

    @contextlib.contextmanager
    def tune_logger(
        self, parent_run_id: str, tags: Mapping[str, str] | None = None
    ) -> Iterator[Any]:
        """Ray Tune's `MLflowLoggerCallback`, writing one run per trial into this store's
        `tune` experiment, each nested under `parent_run_id` (the sweep's run). Ray's callback
        points mlflow's global URI at the store (and exports it); the environment is put back
        when the block ends, as `warm_up` does."""
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        self._require_enabled()
        self.warm_up()
        # our artifact location, not the callback's
        self._ensure_experiment(self.experiment_name("tune"))
        callback = MLflowLoggerCallback(
            tracking_uri=self.tracking_uri,
            registry_uri=self.tracking_uri,
            experiment_name=self.experiment_name("tune"),
            tags={
                "mlflow.parentRunId": parent_run_id,
                "activity": "tune-trial",
                **code_version_tags(),
                **{k: str(v) for k, v in (tags or {}).items()},
            },
        )
        try:
            with _uri_env_restored():
                yield callback
        finally:
            self.warm_up()  # the callback moved mlflow's global URI

    # -- prompt registry -------------------------------------------------------------------

    def register_prompt(self, template: str, name: str | None = None) -> int:
        """Register `template` as the prompt's next version, unless the latest already holds it.

        Idempotent so every process can call it at start-up without minting versions.
        """
        name = name or self.config.prompt_name
        mlflow = self.mlflow
        latest = mlflow.genai.load_prompt(
            f"prompts:/{name}@latest", allow_missing=True, link_to_model=False, cache_ttl_seconds=0
        )
        if latest is not None and latest.template == template:
            return int(latest.version)
        created = mlflow.genai.register_prompt(
            name=name,
            template=template,
            commit_message=f"rayrag {rayrag.__version__}",
            tags={"rayrag_version": rayrag.__version__},
        )
        _log.info(
            "prompt_registered", extra={"fields": {"prompt": name, "version": created.version}}
        )
        return int(created.version)

    def load_prompt(self, version: int, name: str | None = None) -> str:
        """The template text of a registered prompt version (ConfigError if there is none)."""
        name = name or self.config.prompt_name
        prompt = self.mlflow.genai.load_prompt(
            f"prompts:/{name}/{int(version)}",
            allow_missing=True,
            link_to_model=False,
            cache_ttl_seconds=0,
        )
        if prompt is None:
            raise ConfigError(f"prompt {name} has no version {version} (tracking.prompt_version)")
        return prompt.template

    def prompt_version(self, template: str) -> str:
        """ "NAME/VERSION" of the reader prompt: the pinned version (which must exist), else
        `template` (the built-in one) registered.

        A pinned version is served as the registry renders it (`prompt.reader_template`), so
        the label and the text that produced an answer cannot disagree.
        """
        name = self.config.prompt_name
        if not self.config.enabled:
            return f"{name}/unregistered"
        pinned = self.config.prompt_version
        if pinned is None:
            return f"{name}/{self.register_prompt(template, name)}"
        self.load_prompt(pinned, name)  # a pin to a version that is not there fails here
        return f"{name}/{pinned}"


__all__ = [
    "RunHandle",
    "Tracker",
    "code_version_tags",
    "compose_run_name",
    "default_tracking_uri",
    "file_sha256",
]
