"""AuditLog: append-only JSONL, one locked write per record, ids and counts only, 0600."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from rayrag.errors import DataError
from rayrag.governance.privacy.audit import AuditLog

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_record_and_read_back(tmp_path):
    log = AuditLog(tmp_path / "sub" / "audit.jsonl")
    first = log.record(
        "forget",
        doc_ids=["d1", "d2"],
        actor_hash="3f9a0c1e2b4d6f80",
        bundle_id="b-20261129T000000-abcd1234",
        chunks_removed=3,
        seconds=0.5,
        counts={"edges_removed": 2},
    )
    second = log.record("purge", dry_run=True, purged={"events": 4})
    records = log.read()
    assert [r["audit_id"] for r in records] == [first, second]
    assert len(first) == 32 and int(first, 16) >= 0
    assert records[0]["action"] == "forget" and records[0]["doc_ids"] == ["d1", "d2"]
    assert records[0]["counts"] == {"edges_removed": 2} and records[1]["purged"] == {"events": 4}
    assert all(isinstance(r["ts"], float) for r in records)
    assert stat.S_IMODE(os.stat(log.path).st_mode) == 0o600
    # One line per record, nothing else.
    assert len(log.path.read_text().splitlines()) == 2


def test_missing_file_is_empty(tmp_path):
    assert AuditLog(tmp_path / "none.jsonl").read() == []


@pytest.mark.parametrize(
    "fields",
    [
        {"doc_ids": ["The patient Maria Lopez was admitted on 3 May"]},
        {"note": "x" * 129},
        {"bundle_id": "has spaces"},
        {"nested": {"deep": {"er": 1}}},
        {"obj": object()},
        {"score": float("nan")},
    ],
)
def test_refuses_content_and_never_echoes_it(tmp_path, fields):
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(DataError) as info:
        log.record("forget", **fields)
    assert "Maria" not in str(info.value) and "xxxx" not in str(info.value)
    assert log.read() == []


def test_refuses_bad_action_and_reserved_fields(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(DataError, match="action"):
        log.record("Forget Everything")
    with pytest.raises(DataError, match="reserved"):
        log.record("forget", ts=1)
    with pytest.raises(DataError, match="audit_id"):
        log.record("forget", audit_id="not hex at all!")


def test_concurrent_writers_never_interleave(tmp_path):
    path = tmp_path / "audit.jsonl"
    code = (
        "import sys; from rayrag.governance.privacy.audit import AuditLog; log = "
        "AuditLog(sys.argv[1]);\nfor i in range(150): log.record('forget', "
        "doc_ids=[f'doc-{sys.argv[2]}-{i}'] * 20, n=i)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path), str(w)], cwd=REPO_ROOT)
        for w in range(3)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = path.read_text().splitlines()
    assert len(lines) == 450
    records = [json.loads(line) for line in lines]  # every line is one whole record
    assert len({r["audit_id"] for r in records}) == 450
