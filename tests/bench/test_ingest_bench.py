"""Bench ingest on a small slice of the demo corpus: the output's shape and sanity (real Ray
Data ingest on the session's 2-CPU Ray; no timing assertions)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch


@pytest.mark.slow
def test_ingest_bench_reports_every_competitor_and_ratio(ray_local, tmp_path, monkeypatch):
    from rayrag.bench import ingest

    monkeypatch.chdir(tmp_path)  # anything written to the working directory would land here
    threads = torch.get_num_threads()
    result = json.loads(json.dumps(ingest.run(quick=True, documents=12)))  # JSON-able end to end
    assert torch.get_num_threads() == threads  # restored
    assert result["bench"] == "ingest" and result["quick"] is True
    assert result["documents"] == 12 and result["chunks"] >= 12
    competitors = {"pipeline", "raw_encode", "sequential_stages"}
    assert set(result["chunks_per_s"]) == set(result["seconds"]) == competitors
    assert all(
        len(s) == result["rounds"] and all(v > 0 for v in s) for s in result["seconds"].values()
    )
    assert all(v > 0 for v in result["chunks_per_s"].values())
    assert result["last_pipeline_stage_seconds"]  # the pipeline's own per-stage report
    assert set(result["ratios"]) == {"pipeline_vs_raw_encode", "pipeline_vs_sequential_stages"}
    assert all(math.isfinite(v) and v > 0 for v in result["ratios"].values())
    assert list(Path(tmp_path).iterdir()) == []
    assert ray_local.is_initialized()  # the session's Ray was reused
