"""Bench redaction at its quick size, on the generated PII set (no ../shared needed), and its
optional labelled-data folder."""

from __future__ import annotations

import json
import math

import pytest

from rayrag.bench import redaction
from rayrag.errors import ConfigError


def test_redaction_bench_quick_runs_on_the_generated_pii_set(ray_local, monkeypatch):
    monkeypatch.delenv("RAYRAG_DATA_DIR", raising=False)
    result = json.loads(json.dumps(redaction.run(quick=True)))
    assert result["bench"] == "redaction" and result["quick"] is True
    assert result["source"] == "generate_pii_set(seed=0)" and result["docs"] == 40
    competitors = {"per_doc", "batch", "batch_no_parser"}
    assert (
        set(result["seconds"])
        == set(result["cpu_seconds"])
        == set(result["docs_per_s"])
        == competitors
    )
    assert all(v > 0 for v in result["docs_per_s"].values())
    # what ingest ships finds exactly what per-document analysis finds
    assert result["same_results"] is True
    assert result["spans"] >= result["docs"]  # every document holds several identifiers
    assert set(result["ratios"]) == {
        "batch_vs_per_doc",
        "batch_no_parser_vs_per_doc",
        "batch_vs_per_doc_wall",
        "ray_2_vs_1_actors",
    }
    assert all(math.isfinite(v) and v > 0 for v in result["ratios"].values())
    # the stage's scaling on Ray: the same documents through 1 and 2 warm actors
    scaling = result["ray_actors"]
    assert set(scaling["docs_per_s"]) == set(scaling["seconds"]) == {"1", "2"}
    assert all(len(s) == result["rounds"] for s in scaling["seconds"].values())
    assert scaling["batches"] >= 2 and scaling["same_spans"] is True
    assert ray_local.is_initialized()  # the session's Ray was reused


def test_documents_come_from_the_data_folder_when_one_is_named(tmp_path, monkeypatch):
    (tmp_path / "pii").mkdir()
    records = [{"full_text": f"Record {i} of Maria Garcia.", "spans": []} for i in range(6)]
    (tmp_path / redaction.PII_FILE).write_text(json.dumps(records))
    monkeypatch.setenv("RAYRAG_DATA_DIR", str(tmp_path))
    docs, source = redaction.load_documents(3)
    assert source == str(tmp_path / redaction.PII_FILE)
    # Four records a document; a small file is reused rather than the bench shrunk.
    assert docs == [
        " ".join(f"Record {i} of Maria Garcia." for i in range(4)),
        " ".join(f"Record {i} of Maria Garcia." for i in range(4, 6)),
        " ".join(f"Record {i} of Maria Garcia." for i in range(4)),
    ]


def test_a_data_folder_without_the_labelled_set_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYRAG_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as error:
        redaction.load_documents(3)
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)


def test_generated_documents_are_the_same_in_every_checkout(monkeypatch):
    monkeypatch.delenv("RAYRAG_DATA_DIR", raising=False)
    docs, _ = redaction.load_documents(5)
    assert len(docs) == 5 and docs == redaction.load_documents(5)[0] and len(set(docs)) == 5
