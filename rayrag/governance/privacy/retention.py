"""Retention: delete every record rayrag keeps once it is older than its time to live.

Storage limitation (GDPR art. 5(1)(e)): ids and counts are still personal data when they
can be joined back to a person, so each kind of record has a TTL in
`governance.retention` and `rayrag purge` (or the serve graph, every `purge_interval_s`)
deletes what is older:

- `events`: the request event log (`serve.event_log`) and its rotated files `.1 .. .N`.
  Lines whose `ts` is older go; a rotated file left empty is deleted.
- `escalations`: the escalation queue (`serve.escalation_queue`), by record `ts`.
- `audit`: the audit log (`governance.audit_log`), by record `ts`.
- `mlflow_runs`: runs in this project's experiments (`<tracking.experiment_prefix>-*`)
  that started before the cutoff: deleted, their artifacts removed and their rows
  hard-deleted as `mlflow gc` does. Runs that back a registered model version (the
  generator registry's checkpoints) are kept and counted as `protected`.
- `mlflow_traces`: traces in the same experiments (`MlflowClient.delete_traces`).

A file is rewritten atomically (temp file + `os.replace`) under the lock its writers take:
the event log's hidden sibling lock file (`privacy_log.lock_path`), the file's
own `flock` for the escalation queue and the audit log. Lines that are not JSON or carry no
`ts` are kept: retention deletes what it can date, never what it cannot read.

MLflow is reached only through `Tracker` (only tracking.py imports mlflow), as `registry.py` does.

    >>> report = purge(cfg, older_than_days=30, dry_run=True)
    >>> report.to_json()["purged"]
    {'events': 120, 'escalations': 3, 'audit': 0, 'mlflow_runs': 2, 'mlflow_traces': 0}
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayrag.atomic import atomic_path, exclusive_lock
from rayrag.config import RAGConfig
from rayrag.errors import ConfigError
from rayrag.event_log import get_logger, lock_path
from rayrag.tracking.traces import count_traces

_log = get_logger("rayrag.retention")
RECORD_TYPES = ("events", "escalations", "audit", "mlflow_runs", "mlflow_traces")
DAY_S = 86_400.0
_PAGE = 1000
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([dh])")


@dataclass
class PurgeReport:
    """What one purge deleted (or would delete, `dry_run`) and kept, per record type."""

    purged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECORD_TYPES, 0))
    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECORD_TYPES, 0))
    ttl_days: dict[str, float] = field(default_factory=dict)
    dry_run: bool = False
    files_deleted: int = 0
    protected_runs: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "purged": dict(self.purged),
            "kept": dict(self.kept),
            "ttl_days": dict(self.ttl_days),
            "dry_run": self.dry_run,
            "files_deleted": self.files_deleted,
            "protected_runs": self.protected_runs,
            "notes": list(self.notes),
        }


def parse_duration(text: str) -> float:
    """'30d' or '12h' (or '1.5d') -> days. Bad input raises ConfigError naming --older-than."""
    match = _DURATION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"--older-than must look like 30d or 12h, got {str(text)[:32]!r}")
    value = float(match.group(1))
    return value if match.group(2) == "d" else value / 24.0


def ttl_days(config: RAGConfig, older_than_days: float | None = None) -> dict[str, float]:
    """The TTL (days) each record type gets: the config's, or `older_than_days` for all."""
    if older_than_days is not None:
        if not math.isfinite(older_than_days) or older_than_days < 0:
            raise ConfigError(f"older_than_days must be >= 0, got {older_than_days} (--older-than)")
        return dict.fromkeys(RECORD_TYPES, float(older_than_days))
    r = config.governance.retention
    return {
        "events": r.events_days,
        "escalations": r.escalations_days,
        "audit": r.audit_days,
        "mlflow_runs": r.mlflow_runs_days,
        "mlflow_traces": r.traces_days,
    }


def purge(
    config: RAGConfig,
    *,
    older_than_days: float | None = None,
    dry_run: bool = False,
    now: float | None = None,
) -> PurgeReport:
    """Delete (or with `dry_run` only count) every record older than its TTL."""
    now = time.time() if now is None else float(now)
    ttls = ttl_days(config, older_than_days)
    report = PurgeReport(ttl_days=ttls, dry_run=dry_run)
    cutoff = {kind: now - days * DAY_S for kind, days in ttls.items()}

    event_log = Path(config.serve.event_log)
    if event_log_files(event_log):  # no log yet: nothing to date, and no lock file to leave behind
        with exclusive_lock(lock_path(event_log)):
            for path in event_log_files(event_log):
                _purge_jsonl(
                    path,
                    cutoff["events"],
                    dry_run,
                    report,
                    "events",
                    delete_empty=path != event_log,
                )
    for kind, path in (
        ("escalations", Path(config.serve.escalation_queue)),
        ("audit", Path(config.governance.audit_log)),
    ):
        if path.is_file():
            with exclusive_lock(path):
                _purge_jsonl(path, cutoff[kind], dry_run, report, kind, delete_empty=False)

    if config.tracking.enabled:
        _purge_mlflow(config, cutoff, dry_run, report)
    else:
        report.notes.append("tracking disabled: mlflow_runs and mlflow_traces skipped")
    _log.info(
        "purge_done",
        extra={
            "fields": {
                "dry_run": dry_run,
                "files_deleted": report.files_deleted,
                **{f"purged_{k}": v for k, v in report.purged.items()},
            }
        },
    )
    return report


def event_log_files(event_log: Path) -> list[Path]:
    """The event log and its rotated files (`.1`, `.2`, ...) that exist, newest first."""
    rotated = []
    for candidate in event_log.parent.glob(f"{event_log.name}.*"):
        suffix = candidate.name[len(event_log.name) + 1 :]
        if suffix.isdigit() and candidate.is_file():
            rotated.append((int(suffix), candidate))
    files = [event_log] if event_log.is_file() else []
    return files + [path for _, path in sorted(rotated)]


def _purge_jsonl(
    path: Path, cutoff: float, dry_run: bool, report: PurgeReport, kind: str, delete_empty: bool
) -> None:
    """Drop the lines of `path` dated before `cutoff`; the caller holds the writers' lock.

    Two streaming passes (count, then rewrite) so an unchanged file is never rewritten
    and memory stays flat however long the file is."""
    purged = kept = 0
    with path.open("rb") as src:
        for line in src:
            if _older(line, cutoff):
                purged += 1
            elif line.strip():
                kept += 1
    report.purged[kind] += purged
    report.kept[kind] += kept
    if purged == 0:
        return
    if delete_empty and kept == 0:
        report.files_deleted += 1
        if not dry_run:
            path.unlink(missing_ok=True)
        return
    if dry_run:
        return
    with path.open("rb") as src, atomic_path(path) as tmp, open(tmp, "wb") as out:  # mkstemp: 0600
        for line in src:
            if not _older(line, cutoff):
                out.write(line)


def _older(line: bytes, cutoff: float) -> bool:
    try:
        ts = json.loads(line).get("ts")
    except (ValueError, AttributeError):
        return False
    return isinstance(ts, int | float) and not isinstance(ts, bool) and ts < cutoff


# ------------------------------------------------------------------------------ MLflow
# Candidates for `tracking.py` (the MLflow door): `project_experiments`, `registered_run_ids`,
# `hard_delete_run` and `delete_traces` are MLflow operations written against `Tracker.client()`
# and `Tracker.mlflow` here, not imports of mlflow.


def _purge_mlflow(
    config: RAGConfig, cutoff: dict[str, float], dry_run: bool, report: PurgeReport
) -> None:
    from rayrag.tracking.tracker import Tracker

    tracker = Tracker(config.tracking)
    client = tracker.client()
    view_all = tracker.mlflow.entities.ViewType.ALL
    experiments = project_experiments(client, config.tracking.experiment_prefix, view_all)
    if not experiments:
        report.notes.append("no MLflow experiments with this project's prefix")
        return
    ids = [e.experiment_id for e in experiments]
    runs_cutoff_ms = int(cutoff["mlflow_runs"] * 1000)
    protected = registered_run_ids(client)
    old_runs = _search_runs(client, ids, f"attributes.start_time < {runs_cutoff_ms}", view_all)
    deletable = [run for run in old_runs if run.info.run_id not in protected]
    report.protected_runs = len(old_runs) - len(deletable)
    if not dry_run:
        for run in deletable:
            if not hard_delete_run(tracker, client, run):
                report.notes.append("a run was soft-deleted only: the store cannot hard-delete")
    report.purged["mlflow_runs"] = len(deletable)
    report.kept["mlflow_runs"] = len(_search_runs(client, ids, "", view_all))
    if dry_run:
        report.kept["mlflow_runs"] -= len(deletable)

    traces_cutoff_ms = int(cutoff["mlflow_traces"] * 1000)
    for experiment_id in ids:
        if dry_run:
            report.purged["mlflow_traces"] += count_traces(
                client, experiment_id, f"trace.timestamp_ms < {traces_cutoff_ms}"
            )
        else:
            # delete_traces deletes timestamps <= max: one ms less keeps "older than" strict.
            report.purged["mlflow_traces"] += int(
                client.delete_traces(
                    experiment_id=experiment_id, max_timestamp_millis=traces_cutoff_ms - 1
                )
            )
        report.kept["mlflow_traces"] += count_traces(
            client, experiment_id, f"trace.timestamp_ms >= {traces_cutoff_ms}"
        )


def project_experiments(client: Any, prefix: str, view_type: Any) -> list[Any]:
    """This project's experiments (named PREFIX-ACTIVITY), active and deleted."""
    found, token = [], None
    while True:
        page = client.search_experiments(view_type=view_type, max_results=_PAGE, page_token=token)
        found.extend(e for e in page if e.name.startswith(f"{prefix}-"))
        token = page.token
        if not token:
            return found


def registered_run_ids(client: Any) -> set[str]:
    """Runs that hold a registered model version's artifacts (never purged: serving needs them)."""
    run_ids, token = set(), None
    while True:
        page = client.search_model_versions(max_results=_PAGE, page_token=token)
        run_ids.update(v.run_id for v in page if v.run_id)
        token = page.token
        if not token:
            return run_ids


def hard_delete_run(tracker: Any, client: Any, run: Any) -> bool:
    """Delete a run as `mlflow gc` does: soft-delete, remove its artifacts, drop its rows.

    Returns False when the store only soft-deletes (no `_hard_delete_run`, e.g. a REST
    store: run `mlflow gc` on the server)."""
    run_id = run.info.run_id
    if run.info.lifecycle_stage != "deleted":
        client.delete_run(run_id)
    registry = tracker.mlflow.store.artifact.artifact_repository_registry
    try:
        registry.get_artifact_repository(run.info.artifact_uri).delete_artifacts()
    except Exception as exc:  # noqa: BLE001 - an unreachable artifact store must not stop the purge
        _log.warning(
            "run_artifacts_not_deleted",
            extra={"fields": {"run_id": run_id, "error": type(exc).__name__}},
        )
    store = client._tracking_client.store
    if not hasattr(store, "_hard_delete_run"):
        return False
    store._hard_delete_run(run_id)
    return True


def _search_runs(
    client: Any, experiment_ids: list[str], filter_string: str, view_type: Any
) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            run_view_type=view_type,
            max_results=_PAGE,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs
