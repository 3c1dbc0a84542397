"""Upload ingest jobs: their records on disk and the queue that runs them one at a time.

A job is one upload request's staging folder, ingested incrementally into the served bundle
(`ingest(staging, bundle, config, previous=bundle, engine="local")`: only new or changed
documents are processed, the rest of the bundle is reused, and the new version replaces the
bundle atomically). `IngestQueue` runs jobs in order on one worker thread per Ingress
replica, and every run holds the bundle's erasure lock, so two uploads, or an upload and a
`forget`, never interleave on one bundle, whichever replica (or process on the host) runs
them: an ingest that read the bundle before an erasure rewrote it would bring the erased
documents back.

`JobStore` keeps one JSON record per job (`<dir>/jobs/<id>.json`, written temp-then-rename),
so `GET /v1/admin/ingest/{id}` answers after a replica restart; a job whose owning process
is gone before it finished is reported failed ("interrupted"). Records hold ids, counts,
stage messages (which name no document), quarantine reasons (never content) and one-line
errors. Ray-free: the route module (`serve.uploads`) is the adapter.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rayrag.atomic import atomic_text, exclusive_lock, pid_alive
from rayrag.errors import RayRagError

STATES = ("queued", "running", "succeeded", "failed")
JOB_ID = re.compile(r"^ing-[0-9a-f]{16}$")
MAX_STAGES = 50  # stage messages kept per record
MAX_ERROR_CHARS = 300
HOST = socket.gethostname()


def new_job_id() -> str:
    return f"ing-{uuid.uuid4().hex[:16]}"


def now() -> float:
    return round(time.time(), 3)


class JobFailed(RayRagError):
    """An ingest job failed; the message is its record's one-line error."""


def error_line(exc: BaseException, staging: Path | None = None) -> str:
    """One line for a failed job: a rayrag error's own message (they name values and keys,
    never document text) with the staging path left out; anything else by type only."""
    if isinstance(exc, JobFailed):
        return str(exc)
    if isinstance(exc, RayRagError):
        text = str(exc)
        if staging is not None:
            text = text.replace(str(staging), "the upload")
        text = " ".join(text.split())
        return f"{type(exc).__name__}: {text}"[:MAX_ERROR_CHARS]
    return f"ingest failed ({type(exc).__name__})"


class JobStore:
    """One JSON record per ingest job under `folder`; updates are read-modify-write under a
    lock and land atomically."""

    def __init__(self, folder: Path, keep: int = 1000) -> None:
        self.folder = Path(folder)
        self.keep = keep
        self._lock = threading.Lock()

    def path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def create(self, job_id: str, files: list[dict[str, Any]]) -> dict[str, Any]:
        record = {
            "ingest_id": job_id,
            "state": "queued",
            "files": files,
            "created_at": now(),
            "started_at": None,
            "finished_at": None,
            "stages": [],
            "counts": {},
            "quarantined": [],
            "bundle_id": None,
            "previous_bundle_id": None,
            "error": None,
            "owner": {"host": HOST, "pid": os.getpid()},
        }
        with self._lock:
            self._write(record)
        self.prune()
        return record

    def update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            record = self._read(job_id)
            if record is None:
                raise KeyError(job_id)
            stage = fields.pop("stage", None)
            record.update(fields)
            if stage is not None:
                record["stages"] = [*record["stages"], stage][-MAX_STAGES:]
            self._write(record)
            return record

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The record (None for an unknown or malformed id); an unfinished job whose
        process is gone is reported, and saved, as failed."""
        if not JOB_ID.match(job_id):
            return None
        with self._lock:
            record = self._read(job_id)
            if record is None or record["state"] in ("succeeded", "failed"):
                return record
            owner = record.get("owner") or {}
            if owner.get("host") == HOST and not pid_alive(int(owner.get("pid", 0))):
                record.update(
                    state="failed",
                    finished_at=now(),
                    error="interrupted: the serving replica stopped before this ingest "
                    "finished; the served bundle is unchanged, upload again",
                )
                self._write(record)
            return record

    def prune(self) -> None:
        """Delete the oldest finished records beyond `keep`."""
        records = sorted(self.folder.glob("ing-*.json"), key=lambda p: p.stat().st_mtime)
        for path in records[: max(0, len(records) - self.keep)]:
            path.unlink(missing_ok=True)

    def _read(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(job_id).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _write(self, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_text(self.path(record["ingest_id"])) as handle:
            handle.write(json.dumps(record, sort_keys=True))


def bundle_lock(bundle: Path) -> Any:
    """The lock `forget` takes (governance/privacy/erasure.py): one writer per bundle."""
    return exclusive_lock(bundle.parent / f".{bundle.name}.forget.lock")


def ingest_upload(
    staging: Path, bundle: Path, config: Any, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Ingest one staging folder into `bundle` (a new version, atomically) under the bundle
    lock; the record's outcome fields: counts, quarantine reasons, bundle ids."""
    from rayrag.pipelines.ingest import ingest

    try:
        with bundle_lock(bundle):
            result = ingest(
                staging, bundle, config, previous=bundle, engine="local", progress=progress
            )
    except Exception as exc:
        raise JobFailed(error_line(exc, staging)) from exc
    counts = result.counts
    return {
        "counts": {
            "processed": counts["processed_documents"],
            "reused": counts["reused_documents"],
            "replaced": counts["removed_documents"],
            "quarantined": counts["quarantined"],
            "documents": counts["documents"],
            "chunks": counts["chunks"],
        },
        "quarantined": [{"doc_id": q.doc_id, "reason": q.reason} for q in result.quarantined],
        "bundle_id": result.manifest["bundle_id"],
        "previous_bundle_id": result.manifest["parent_bundle_id"],
    }


Runner = Callable[[str, Callable[[str], None]], dict[str, Any]]


class IngestQueue:
    """Jobs run in submission order, one at a time, on one daemon thread (off the event
    loop). `run(job_id, progress)` does the work and returns the record's outcome fields;
    `done(record)` is called after each job, succeeded or failed; `cleanup(job_id)` after
    that (the staging folder holds raw text: it never outlives its job)."""

    def __init__(
        self,
        store: JobStore,
        run: Runner,
        done: Callable[[dict[str, Any]], None] = lambda record: None,
        cleanup: Callable[[str], None] = lambda job_id: None,
    ) -> None:
        self.store, self.run, self.done, self.cleanup = store, run, done, cleanup
        self._jobs: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, job_id: str) -> None:
        self._jobs.put(job_id)
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="rayrag-ingest-jobs", daemon=True
                )
                self._thread.start()

    def wait_idle(self, timeout: float) -> bool:
        """True once every submitted job has finished (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._jobs.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._jobs.unfinished_tasks

    def _work(self) -> None:
        while True:
            job_id = self._jobs.get()
            try:
                self._run_one(job_id)
            finally:
                self._jobs.task_done()

    def _run_one(self, job_id: str) -> None:
        started = time.perf_counter()
        self.store.update(job_id, state="running", started_at=now())

        def progress(message: str) -> None:
            self.store.update(job_id, stage=" ".join(str(message).split())[:200])

        try:
            outcome = self.run(job_id, progress)
            record = self.store.update(job_id, state="succeeded", finished_at=now(), **outcome)
        except Exception as exc:  # noqa: BLE001 - a failed job is a record, never a dead thread
            record = self.store.update(
                job_id, state="failed", finished_at=now(), error=error_line(exc)
            )
        record = {**record, "seconds": round(time.perf_counter() - started, 3)}
        try:
            self.done(record)
        finally:
            self.cleanup(job_id)


def remove_staging(root: Path) -> Callable[[str], None]:
    """`IngestQueue.cleanup` for staging folders `root/<job id>`."""
    return lambda job_id: shutil.rmtree(root / job_id, ignore_errors=True)
