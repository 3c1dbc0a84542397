"""rayrag.serve.ingest_jobs: job records that survive a restart, a queue that runs one job at
a time, one-line errors. No Serve: the queue runs plain callables here; the real upload
ingest through the served graph is in test_app.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from rayrag.config import resolve_config
from rayrag.errors import DataError
from rayrag.serve.ingest_jobs import (
    IngestQueue,
    JobFailed,
    JobStore,
    error_line,
    ingest_upload,
    new_job_id,
)


def test_a_record_is_written_atomically_and_read_back_by_a_new_store(tmp_path):
    store = JobStore(tmp_path / "jobs")
    job = new_job_id()
    store.create(job, [{"name": "a.md", "doc_id": "uploads/a.md", "bytes": 3}])
    store.update(job, state="running", stage="read 1 documents")
    store.update(job, stage="building FAISS index over 2 vectors")
    again = JobStore(tmp_path / "jobs").get(job)  # a restarted replica's store
    assert again["state"] == "running" and again["files"][0]["doc_id"] == "uploads/a.md"
    assert again["stages"] == ["read 1 documents", "building FAISS index over 2 vectors"]
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == [f"{job}.json"]  # no temp left
    for unknown in (new_job_id(), "../jobs/x", "ing-XYZ", ""):
        assert store.get(unknown) is None


def test_a_job_whose_process_died_unfinished_reads_as_interrupted(tmp_path):
    store = JobStore(tmp_path)
    job = new_job_id()
    record = store.create(job, [])
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    record["owner"]["pid"] = int(dead.stdout)
    (tmp_path / f"{job}.json").write_text(json.dumps(record))
    got = store.get(job)
    assert got["state"] == "failed" and got["error"].startswith("interrupted")
    assert json.loads((tmp_path / f"{job}.json").read_text())["state"] == "failed"
    live = new_job_id()
    store.create(live, [])
    assert store.get(live)["state"] == "queued"  # this process is alive: still queued


def test_only_the_newest_records_are_kept(tmp_path):
    store = JobStore(tmp_path, keep=3)
    jobs = []
    for _ in range(5):
        jobs.append(new_job_id())
        store.create(jobs[-1], [])
        time.sleep(0.01)
    assert sorted(p.stem for p in tmp_path.iterdir()) == sorted(jobs[-3:])


def test_the_queue_runs_jobs_in_order_one_at_a_time_and_records_failures(tmp_path):
    store = JobStore(tmp_path / "jobs")
    running, seen, finished, cleaned = [], [], [], []
    lock = threading.Lock()

    def run(job_id, progress):
        with lock:
            running.append(job_id)
            overlap = len(running) > 1
        progress("processing 1 documents")
        time.sleep(0.05)
        with lock:
            running.remove(job_id)
        seen.append((job_id, overlap))
        if len(seen) == 2:
            raise DataError("no valid documents in /srv/x/staging/ing-1: 1 rows quarantined")
        if len(seen) == 3:
            raise RuntimeError("something with a secret path /srv/x")
        return {"counts": {"processed": 1}, "bundle_id": f"b-{len(seen)}"}

    queue = IngestQueue(store, run, done=finished.append, cleanup=cleaned.append)
    jobs = [new_job_id() for _ in range(4)]
    for job in jobs:
        store.create(job, [])
        queue.submit(job)
    assert queue.wait_idle(30)
    assert [j for j, _ in seen] == jobs and not any(overlap for _, overlap in seen)
    records = [store.get(j) for j in jobs]
    assert [r["state"] for r in records] == ["succeeded", "failed", "failed", "succeeded"]
    assert records[0]["bundle_id"] == "b-1" and records[0]["counts"] == {"processed": 1}
    assert records[0]["stages"] == ["processing 1 documents"]
    assert records[1]["error"].startswith("DataError: no valid documents")
    assert records[2]["error"] == "ingest failed (RuntimeError)"  # its text is not trusted
    assert all(r["started_at"] <= r["finished_at"] for r in records)
    assert [r["ingest_id"] for r in finished] == jobs and cleaned == jobs
    assert all(r["seconds"] >= 0.05 for r in finished)


def test_error_lines_leave_out_the_staging_path_and_stay_on_one_line(tmp_path):
    exc = DataError(f"no valid documents in {tmp_path}:\n1 rows quarantined")
    assert (
        error_line(exc, tmp_path)
        == "DataError: no valid documents in the upload: 1 rows quarantined"
    )
    assert len(error_line(DataError("x" * 1000))) == 300


def test_an_upload_whose_every_file_is_quarantined_fails_and_writes_no_bundle(tmp_path):
    config = resolve_config("demo", ["tracking.enabled=false"])
    staging = tmp_path / "staging"
    (staging / "uploads").mkdir(parents=True)
    (staging / "uploads" / "empty.md").write_text("   \n")
    (staging / "uploads" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(JobFailed) as failed:
        ingest_upload(staging, tmp_path / "bundle", config, lambda message: None)
    message = str(failed.value)
    assert message.startswith("DataError: no valid documents in the upload: 2 rows quarantined")
    assert str(tmp_path) not in message and "\n" not in message
    assert not (tmp_path / "bundle").exists()
