"""The generator's model registry: checkpoints as versions of one MLflow registered model.

A version is a checkpoint directory logged as run artifacts ("checkpoint/"), tagged with the
same `model_digest` the Reader stamps on every answer (`<dir name>@<weights sha256[:12]>`),
so an answer, an eval run and a registry version can be matched by string equality.
Aliases follow MLflow's champion/challenger pattern; the first version is the champion.
Promotions and rollbacks record who, when and why on the version, and the champion
history lives in a registered-model tag (`champion_history`), so `rollback` needs no state
outside MLflow.

This module does not import mlflow (only tracking.py does): it reaches MLflow only through
`Tracker.client()`, `Tracker.mlflow` and `Tracker.create_run`.

    >>> registry = ModelRegistry(Tracker(cfg.tracking))
    >>> info = registry.register(Path("checkpoints/run-7"))
    >>> registry.promote(info.version, who="ana", why="+3 pt recall@5 on eval-v2")
    >>> resolve_model("models:/rayrag-generator@champion", cfg.tracking)  # -> local dir
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayrag.config import TrackingConfig
from rayrag.errors import ConfigError, ModelError
from rayrag.event_log import get_logger

if TYPE_CHECKING:
    from rayrag.tracking.tracker import Tracker

_log = get_logger("rayrag.registry")
CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "champion_history"  # comma-separated former champions, oldest first
ARTIFACT_DIR = "checkpoint"
MODELS_SCHEME = "models:/"


@dataclass
class ModelVersionInfo:
    """One registered checkpoint, as plain data (no MLflow types leak out)."""

    version: int
    aliases: list[str]
    model_digest: str
    source: str
    run_id: str | None
    created: str  # ISO 8601, UTC
    tags: dict[str, str] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _iso(ms: int | None) -> str:
    return datetime.fromtimestamp((ms or 0) / 1000, tz=timezone.utc).isoformat(timespec="seconds")


def model_digest(checkpoint: Path) -> str:
    """Exactly `Reader.model_version`: `<checkpoint dir name>@<weights digest>`."""
    from rayrag.generator.reader import weights_digest  # torch: only when registering

    return f"{checkpoint.resolve().name}@{weights_digest(checkpoint)}"


class ModelRegistry:
    """Versions, aliases, promotion and rollback of one registered model."""

    def __init__(self, tracker: Tracker, name: str | None = None) -> None:
        self.tracker = tracker
        self.name = name or tracker.config.model_name

    # -- reading ---------------------------------------------------------------------------

    def _not_found(self, error: Exception) -> bool:
        return getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"

    def _info(self, version: Any) -> ModelVersionInfo:
        tags = dict(version.tags or {})
        return ModelVersionInfo(
            version=int(version.version),
            aliases=sorted(version.aliases or []),
            model_digest=tags.get("model_digest", ""),
            source=version.source,
            run_id=version.run_id or None,
            created=_iso(version.creation_timestamp),
            tags=tags,
        )

    def version_for_weights(self, model_version: str) -> ModelVersionInfo | None:
        """The newest version holding the weights `model_version` (`dir@digest`) names, or None:
        a registry download lives in `v<N>/`, so the directory part is not compared."""
        weights = model_version.rsplit("@", 1)[-1]
        if not weights:
            return None
        for info in self.versions():
            if info.model_digest.rsplit("@", 1)[-1] == weights:
                return info
        return None

    def versions(self) -> list[ModelVersionInfo]:
        """All versions, newest first (none when the model was never registered)."""
        client = self.tracker.client()
        found = client.search_model_versions(f"name = '{self._safe_name()}'")
        # search results do not always carry aliases; get_model_version does.
        infos = [self.get(int(v.version)) for v in found]
        return sorted(infos, key=lambda info: info.version, reverse=True)

    def get(self, version: int) -> ModelVersionInfo:
        client = self.tracker.client()
        try:
            return self._info(client.get_model_version(self.name, str(int(version))))
        except self.tracker.mlflow.MlflowException as error:
            if self._not_found(error) or "not found" in str(error).lower():
                raise ConfigError(f"model {self.name} has no version {version}") from None
            raise

    def version_for_alias(self, alias: str) -> ModelVersionInfo | None:
        client = self.tracker.client()
        try:
            return self._info(client.get_model_version_by_alias(self.name, alias))
        except self.tracker.mlflow.MlflowException:
            return None  # unknown alias or unknown model: both mean "nothing there"

    def _safe_name(self) -> str:
        if "'" in self.name:
            raise ConfigError(
                f"registered model name may not contain a quote: {self.name!r} "
                "(tracking.model_name)"
            )
        return self.name

    def _history(self) -> list[int]:
        try:
            model = self.tracker.client().get_registered_model(self.name)
        except self.tracker.mlflow.MlflowException as error:
            if self._not_found(error):
                return []
            raise
        text = (model.tags or {}).get(HISTORY_TAG, "")
        return [int(v) for v in text.split(",") if v.strip()]

    def _set_history(self, history: list[int]) -> None:
        self.tracker.client().set_registered_model_tag(
            self.name, HISTORY_TAG, ",".join(str(v) for v in history)
        )

    # -- writing ---------------------------------------------------------------------------

    def register(
        self,
        checkpoint: Path,
        *,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        description: str = "",
    ) -> ModelVersionInfo:
        """Log `checkpoint/` as artifacts of `run_id`
        (or a new "registry" run) and make it a version."""
        checkpoint = Path(checkpoint)
        if not (checkpoint / "config.json").is_file():
            raise ModelError(f"not a generator checkpoint (no config.json): {checkpoint}")
        digest = model_digest(checkpoint)
        client = self.tracker.client()
        own_run = run_id is None
        if run_id is None:  # a client-made run: registering inside a caller's run must work
            run_id = self.tracker.create_run(
                "registry", tags={"model_name": self.name, "model_digest": digest}
            )
            client.log_artifacts(run_id, str(checkpoint), ARTIFACT_DIR)
            client.set_terminated(run_id)
        else:
            client.log_artifacts(run_id, str(checkpoint), ARTIFACT_DIR)
        source = client.get_run(run_id).info.artifact_uri.rstrip("/") + f"/{ARTIFACT_DIR}"
        self._ensure_model(description)
        version_tags = {"model_digest": digest, **{k: str(v) for k, v in (tags or {}).items()}}
        if (
            "prompt_version" not in version_tags
        ):  # the prompt this version answers with: pinned to it
            from rayrag.generator.prompt import PROMPT_TEMPLATE

            version_tags["prompt_version"] = self.tracker.prompt_version(PROMPT_TEMPLATE)
        created = client.create_model_version(
            self.name,
            source=source,
            run_id=run_id,
            tags=version_tags,
            description=description or None,
        )
        version = int(created.version)
        if own_run:  # named once the version is known: `registry - register NAME vN`
            from rayrag.tracking.tracker import compose_run_name

            client.set_tag(
                run_id,
                "mlflow.runName",
                compose_run_name("registry", None, "register", self.name, version),
            )
        if self.version_for_alias(CHAMPION) is None:  # the first version is the champion
            client.set_registered_model_alias(self.name, CHAMPION, str(version))
        _log.info(
            "model_registered",
            extra={"fields": {"model": self.name, "version": version, "model_digest": digest}},
        )
        return self.get(version)

    def _ensure_model(self, description: str) -> None:
        client = self.tracker.client()
        try:
            client.get_registered_model(self.name)
        except self.tracker.mlflow.MlflowException as error:
            if not self._not_found(error):
                raise
            client.create_registered_model(self.name, description=description or None)

    def set_challenger(self, version: int) -> ModelVersionInfo:
        info = self.get(version)
        if CHAMPION in info.aliases:
            raise ConfigError(
                f"version {version} of {self.name} is the champion; "
                "a challenger must be another version"
            )
        self.tracker.client().set_registered_model_alias(self.name, CHALLENGER, str(version))
        return self.get(version)

    def promote(self, version: int, *, who: str, why: str) -> ModelVersionInfo:
        """Make `version` the champion; the old champion goes onto the rollback history."""
        info = self.get(version)
        client = self.tracker.client()
        current = self.version_for_alias(CHAMPION)
        if current is not None and current.version == info.version:
            return info  # already champion: nothing to record, nothing to roll back to
        if current is not None:
            self._set_history([*self._history(), current.version])
        client.set_registered_model_alias(self.name, CHAMPION, str(version))
        if CHALLENGER in info.aliases:
            client.delete_registered_model_alias(self.name, CHALLENGER)
        for key, value in {"promoted_by": who, "promoted_at": _now(), "promoted_why": why}.items():
            client.set_model_version_tag(self.name, str(version), key, value)
        _log.info(
            "model_promoted",
            extra={
                "fields": {
                    "model": self.name,
                    "version": version,
                    "previous": current and current.version,
                }
            },
        )
        return self.get(version)

    def rollback(self, *, who: str, why: str) -> ModelVersionInfo:
        """Give the champion alias back to the previous champion (pops the history)."""
        history = self._history()
        if not history:
            raise ConfigError("no previous champion to roll back to")
        client = self.tracker.client()
        target = history.pop()
        current = self.version_for_alias(CHAMPION)
        from_version = current.version if current is not None else None
        at = _now()
        client.set_registered_model_alias(self.name, CHAMPION, str(target))
        self._set_history(history)
        for key, value in {
            "rolled_back_by": who,
            "rolled_back_at": at,
            "rolled_back_why": why,
            "rolled_back_from": str(from_version or ""),
        }.items():
            client.set_model_version_tag(self.name, str(target), key, value)
        record = {"from": from_version, "to": target, "who": who, "at": at, "why": why}
        client.set_registered_model_tag(self.name, "last_rollback", json.dumps(record))
        _log.info(
            "model_rolled_back",
            extra={"fields": {"model": self.name, "from": from_version, "to": target}},
        )
        return self.get(target)

    # -- using -----------------------------------------------------------------------------

    def _lookup(self, ref: str | int) -> ModelVersionInfo:
        if isinstance(ref, int) or str(ref).isdigit():
            return self.get(int(ref))
        info = self.version_for_alias(str(ref))
        if info is None:
            raise ConfigError(f"model {self.name} has no alias {ref}")
        return info

    def cache_dir(self) -> Path:
        root = Path(self.tracker.config.model_cache)
        if not root.is_absolute() and self.tracker.workdir is not None:
            root = Path(self.tracker.workdir) / root
        return root / self.name

    def download(self, ref: str | int) -> Path:
        """A local checkpoint directory for an alias or version, downloaded once.

        The files land in a temp dir beside the target and are renamed into place, so a
        crash or a concurrent download never leaves a half-written checkpoint that looks
        complete. The weights digest is checked against the version's `model_digest` tag.
        """
        info = self._lookup(ref)
        # <cache>/<name>/v<N>/<the checkpoint's own folder name>: the Reader names a model by its
        # folder and weights (`model@1a2b...`), so a downloaded champion answers under the very
        # `model_digest` it was registered with.
        folder = info.model_digest.rsplit("@", 1)[0] if "@" in info.model_digest else "model"
        target = self.cache_dir() / f"v{info.version}" / folder
        if (target / "config.json").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{folder}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            fetched = self.tracker.download_artifacts(info.source, staging)
            if not (fetched / "config.json").is_file():
                raise ModelError(
                    f"model {self.name} v{info.version} has no config.json at {info.source}"
                )
            self._check_digest(fetched, info)
            try:
                fetched.rename(target)
            except OSError:
                if not (target / "config.json").is_file():  # lost a race to a complete copy: fine
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _check_digest(self, fetched: Path, info: ModelVersionInfo) -> None:
        if "@" not in info.model_digest:
            return
        from rayrag.generator.reader import weights_digest

        expected = info.model_digest.rsplit("@", 1)[1]
        got = weights_digest(fetched, chars=len(expected))
        if got != expected:
            raise ModelError(
                f"model {self.name} v{info.version}: downloaded weights digest {got} "
                f"!= registered {expected}"
            )


def parse_model_uri(uri: str) -> tuple[str, str | int]:
    """ "models:/NAME@ALIAS" -> (NAME, ALIAS); "models:/NAME/VERSION" -> (NAME, VERSION)."""
    rest = uri[len(MODELS_SCHEME) :]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return name, alias
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and version.isdigit():
            return name, int(version)
    raise ConfigError(
        f"bad model URI {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION (--model)"
    )


def model_prompt_tag(ref: str | Path, config: TrackingConfig) -> str:
    """The `prompt_version` tag (`rayrag-reader/2`) of the registry version a `models:/` ref
    names: the prompt pinned to that model. "" for a local path or with tracking off."""
    if isinstance(ref, Path) or not str(ref).startswith(MODELS_SCHEME) or not config.enabled:
        return ""
    from rayrag.tracking.tracker import Tracker

    name, selector = parse_model_uri(str(ref))
    try:
        info = ModelRegistry(Tracker(config), name)._lookup(selector)
    except ConfigError as error:
        raise ConfigError(f"{ref}: {error}") from None
    return str(info.tags.get("prompt_version", ""))


def resolve_model(ref: str | Path, config: TrackingConfig) -> Path:
    """A local checkpoint directory for `ref`: a registry URI is downloaded, a path is a path."""
    if isinstance(ref, Path) or not str(ref).startswith(MODELS_SCHEME):
        return Path(ref)
    from rayrag.tracking.tracker import Tracker

    name, selector = parse_model_uri(str(ref))
    if not config.enabled:
        raise ConfigError(f"{ref}: registry models need tracking.enabled: true")
    try:
        return ModelRegistry(Tracker(config), name).download(selector)
    except ConfigError as error:
        raise ConfigError(f"{ref}: {error}") from None
