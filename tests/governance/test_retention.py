"""Retention: events (and rotated files), escalations, audit records, MLflow runs and traces
older than their TTL are deleted for real; writers survive a purge rewriting their file."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rayrag.config import RAGConfig
from rayrag.errors import ConfigError
from rayrag.event_log import file_event_logger
from rayrag.governance.privacy.audit import AuditLog
from rayrag.governance.privacy.retention import RECORD_TYPES, event_log_files, parse_duration, purge
from rayrag.serve.escalation import EscalationQueue

DAY = 86_400.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, *extra: str) -> RAGConfig:
    return RAGConfig().with_overrides(
        [
            f"serve.event_log={tmp_path / 'events.jsonl'}",
            f"serve.escalation_queue={tmp_path / 'escalations.jsonl'}",
            f"governance.audit_log={tmp_path / 'audit.jsonl'}",
            "tracking.enabled=false",
            *extra,
        ]
    )


def _lines(path: Path, ts: float, n: int, tag: str) -> str:
    return "".join(
        json.dumps({"ts": ts, "event": "request", "request_id": f"{tag}-{i}"}) + "\n"
        for i in range(n)
    )


def test_parse_duration():
    assert (
        parse_duration("30d") == 30
        and parse_duration("12h") == 0.5
        and parse_duration("1.5d") == 1.5
    )
    for bad in ("30", "d", "-1d", "3x", "30 days", ""):
        with pytest.raises(ConfigError, match="--older-than"):
            parse_duration(bad)


def test_events_and_rotated_files(tmp_path):
    now = time.time()
    cfg = _config(tmp_path)  # events_days = 30
    log = tmp_path / "events.jsonl"
    log.write_text(
        _lines(log, now - 40 * DAY, 3, "old") + _lines(log, now - DAY, 2, "new") + "not json\n"
    )
    # all old: deleted
    (tmp_path / "events.jsonl.1").write_text(_lines(log, now - 31 * DAY, 4, "old1"))
    (tmp_path / "events.jsonl.2").write_text(
        _lines(log, now - 50 * DAY, 1, "old2") + _lines(log, now, 1, "n2")
    )
    os.chmod(log, 0o600)

    dry = purge(cfg, dry_run=True, now=now)
    assert dry.purged["events"] == 8 and dry.kept["events"] == 4 and dry.files_deleted == 1
    assert (tmp_path / "events.jsonl.1").exists() and len(log.read_text().splitlines()) == 6

    report = purge(cfg, now=now).to_json()
    assert (
        report["purged"]["events"] == 8 and report["kept"]["events"] == 4 and not report["dry_run"]
    )
    assert report["ttl_days"]["events"] == 30 and set(report["purged"]) == set(RECORD_TYPES)
    assert not (tmp_path / "events.jsonl.1").exists()
    assert [json.loads(x)["request_id"] for x in log.read_text().splitlines()[:2]] == [
        "new-0",
        "new-1",
    ]
    assert log.read_text().splitlines()[2] == "not json"  # undatable lines are kept
    assert [
        json.loads(x)["request_id"] for x in (tmp_path / "events.jsonl.2").read_text().splitlines()
    ] == ["n2-0"]
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert "tracking disabled" in report["notes"][0] and report["purged"]["mlflow_runs"] == 0
    assert purge(cfg, now=now).purged["events"] == 0  # idempotent


def test_older_than_overrides_every_ttl(tmp_path):
    now = time.time()
    cfg = _config(tmp_path)
    (tmp_path / "events.jsonl").write_text(_lines(tmp_path, now - 2 * DAY, 2, "a"))
    AuditLog(tmp_path / "audit.jsonl").record("forget", n_docs=1)
    assert purge(cfg, now=now).purged["events"] == 0
    report = purge(cfg, older_than_days=1, now=now)
    assert report.purged["events"] == 2 and report.purged["audit"] == 0
    assert set(report.ttl_days.values()) == {1.0}
    assert purge(cfg, older_than_days=0.5, now=now + DAY).purged["audit"] == 1
    with pytest.raises(ConfigError, match="older_than_days"):
        purge(cfg, older_than_days=-1)


def test_escalations_and_audit(tmp_path):
    cfg = _config(tmp_path)  # escalations 90 days, audit 2555 days
    queue = EscalationQueue(tmp_path / "escalations.jsonl")
    queue.record(
        "req-1",
        user_hash="3f9a0c1e2b4d6f80",
        team="finance",
        reasons=["low_groundedness"],
        confidence=0.3,
        groundedness=0.3,
        chunk_ids=["d1#0"],
        model_version="m-1",
    )
    written_at = queue.read()[0]["ts"]
    queue.record(
        "req-2",
        user_hash="3f9a0c1e2b4d6f80",
        team="finance",
        reasons=["low_groundedness"],
        confidence=0.3,
        groundedness=0.3,
        chunk_ids=["d1#0"],
        model_version="m-1",
    )
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.record("forget", n_docs=1)

    report = purge(cfg, now=written_at + 91 * DAY)
    assert report.purged["escalations"] == 2 and report.kept["escalations"] == 0
    assert queue.read() == [] and (tmp_path / "escalations.jsonl").exists()
    assert report.purged["audit"] == 0 and report.kept["audit"] == 1
    assert purge(cfg, now=written_at + 2556 * DAY).purged["audit"] == 1
    assert audit.read() == []
    audit.record("purge", n=1)  # the writer appends to the rewritten file
    assert len(audit.read()) == 1
    assert stat.S_IMODE(os.stat(audit.path).st_mode) == 0o600


def test_logger_follows_purge_and_rotation(tmp_path):
    log = tmp_path / "events.jsonl"
    logger = file_event_logger("rayrag.test.retention.follow", log, max_bytes=600, backups=20)
    try:
        old = logging.makeLogRecord(
            {
                "name": logger.name,
                "msg": "request",
                "levelno": logging.INFO,
                "levelname": "INFO",
                "created": time.time() - 100 * DAY,
            }
        )
        for i in range(6):
            logger.handle(old)
            logger.info("request", extra={"fields": {"request_id": f"r{i}"}})
        assert len(event_log_files(log)) > 1  # rotated
        # lock is hidden
        assert all(p.name.rsplit(".", 1)[1].isdigit() for p in tmp_path.glob("events.jsonl.*"))
        assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
        inode = os.stat(log).st_ino
        report = purge(_config(tmp_path))
        assert report.purged["events"] == 6 and report.kept["events"] == 6
        logger.info("request", extra={"fields": {"request_id": "after"}})
        ids = [
            json.loads(x)["request_id"]
            for p in event_log_files(log)
            for x in p.read_text().splitlines()
        ]
        assert "after" in ids and len(ids) == 7
        assert os.stat(log).st_ino != inode or report.files_deleted  # the file was replaced or kept
    finally:
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)


_WRITER = """
import logging, sys, time
from rayrag.event_log import file_event_logger
log = file_event_logger("rayrag.events", sys.argv[1], max_bytes=4000, backups=200)
old = time.time() - 1000 * 86400
for i in range(int(sys.argv[3])):
    log.info("request", extra={"fields": {"request_id": f"{sys.argv[2]}-{i}"}})
    log.handle(logging.makeLogRecord({"name": "rayrag.events", "msg": "request", "levelno": 20,
                                      "levelname": "INFO", "created": old}))
"""


def test_concurrent_writers_and_purges_lose_nothing(tmp_path):
    log, per_writer = tmp_path / "events.jsonl", 300
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(log), f"w{w}", str(per_writer)], cwd=REPO_ROOT
        )
        for w in range(2)
    ]
    cfg = _config(tmp_path)
    purged = 0
    while any(p.poll() is None for p in procs):
        purged += purge(cfg).purged["events"]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    purged += purge(cfg).purged["events"]
    lines = [json.loads(x) for p in event_log_files(log) for x in p.read_text().splitlines()]
    assert purged == 2 * per_writer  # every old line went, exactly once
    assert sorted(r["request_id"] for r in lines) == sorted(
        f"w{w}-{i}" for w in range(2) for i in range(per_writer)
    )


# ------------------------------------------------------------------------------ MLflow


@pytest.fixture()
def mlflow_store(tmp_path):
    from rayrag.tracking.tracker import Tracker

    cfg = _config(
        tmp_path,
        "tracking.enabled=true",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.experiment_prefix=rrtest",
    )
    tracker = Tracker(cfg.tracking, artifact_root=tmp_path / "artifacts")
    return cfg, tracker


def _db_count(tmp_path: Path, sql: str, *args: str) -> int:
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        return db.execute(sql, args).fetchone()[0]


def test_mlflow_runs_and_traces_really_deleted(tmp_path, mlflow_store):
    cfg, tracker = mlflow_store
    with tracker.start_run("ingest", cfg) as new_run:  # now: kept
        new_run.log_metrics({"chunks": 3})
    client = tracker.client()
    mlflow = tracker.mlflow
    exp_id = client.get_experiment_by_name("rrtest-ingest").experiment_id
    old_ms = int((time.time() - 400 * DAY) * 1000)
    old_run = client.create_run(exp_id, start_time=old_ms).info.run_id
    client.log_text(old_run, "ids only", "notes/a.txt")
    client.set_terminated(old_run, end_time=old_ms + 1000)
    registered = client.create_run(exp_id, start_time=old_ms).info.run_id  # backs a model version
    client.create_registered_model("rrtest-generator")
    client.create_model_version(
        "rrtest-generator", source=f"runs:/{registered}/checkpoint", run_id=registered
    )
    other_exp = mlflow.create_experiment("someone-else")  # not this project's: untouched
    foreign = client.create_run(other_exp, start_time=old_ms).info.run_id
    old_art = Path(client.get_run(old_run).info.artifact_uri.removeprefix("file://"))
    assert (old_art / "notes" / "a.txt").is_file()

    old_trace = client.start_trace(
        "ask", experiment_id=exp_id, start_time_ns=int((time.time() - 40 * DAY) * 1e9)
    )
    client.end_trace(old_trace.trace_id, end_time_ns=int((time.time() - 40 * DAY) * 1e9) + 10**6)
    fresh = client.start_trace("ask", experiment_id=exp_id)
    client.end_trace(fresh.trace_id)
    mlflow.flush_trace_async_logging()

    dry = purge(cfg, dry_run=True)
    assert (
        dry.purged["mlflow_runs"] == 1
        and dry.protected_runs == 1
        and dry.purged["mlflow_traces"] == 1
    )
    assert _db_count(tmp_path, "select count(*) from runs where run_uuid = ?", old_run) == 1

    report = purge(cfg)  # mlflow_runs_days 365, traces_days 30
    assert report.purged["mlflow_runs"] == 1 and report.kept["mlflow_runs"] == 2
    assert report.purged["mlflow_traces"] == 1 and report.kept["mlflow_traces"] == 1
    # hard-deleted
    assert _db_count(tmp_path, "select count(*) from runs where run_uuid = ?", old_run) == 0
    assert _db_count(tmp_path, "select count(*) from params where run_uuid = ?", new_run.run_id) > 0
    assert not old_art.exists()
    for kept in (new_run.run_id, registered, foreign):
        assert _db_count(tmp_path, "select count(*) from runs where run_uuid = ?", kept) == 1
    assert (
        _db_count(
            tmp_path, "select count(*) from trace_info where request_id = ?", old_trace.trace_id
        )
        == 0
    )
    assert (
        _db_count(tmp_path, "select count(*) from trace_info where request_id = ?", fresh.trace_id)
        == 1
    )


_AUDIT_WRITER = """
import json, sys
from pathlib import Path
from rayrag.governance.privacy.audit import AuditLog, append_line
log = AuditLog(sys.argv[1])
for i in range(int(sys.argv[3])):
    log.record("forget", n=i, writer=sys.argv[2])
    append_line(Path(sys.argv[1]), json.dumps({"ts": 1.0, "action": "old"}))
"""


def test_audit_writers_survive_concurrent_purges(tmp_path):
    """A writer that waited for the lock while a purge replaced the file re-opens the new one."""
    path, per_writer = tmp_path / "audit.jsonl", 200
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _AUDIT_WRITER, str(path), f"w{w}", str(per_writer)],
            cwd=REPO_ROOT,
        )
        for w in range(2)
    ]
    cfg = _config(tmp_path)
    purged = 0
    while any(p.poll() is None for p in procs):
        purged += purge(cfg, older_than_days=1).purged["audit"]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    purged += purge(cfg, older_than_days=1).purged["audit"]
    records = AuditLog(path).read()
    assert purged == 2 * per_writer
    assert sorted((r["writer"], r["n"]) for r in records) == sorted(
        (f"w{w}", i) for w in range(2) for i in range(per_writer)
    )
