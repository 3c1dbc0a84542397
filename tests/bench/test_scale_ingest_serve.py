"""The ingest and serve scale curves: their arithmetic, their corpora, their errors, and the
ingest curve for real at two tiny sizes (real Ray Data ingest on the session's 2-CPU Ray)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from rayrag.bench import scale_ingest, scale_serve
from rayrag.errors import ConfigError


def test_linear_fit_recovers_intercept_and_slope():
    intercept, slope = scale_ingest.linear_fit([100, 200, 400, 800], [12.0, 14.0, 18.0, 26.0])
    assert intercept == pytest.approx(10.0) and slope == pytest.approx(0.02)
    with pytest.raises(ValueError):
        scale_ingest.linear_fit([1], [1.0])


def test_corpus_draws_distinct_documents_from_several_worlds(tmp_path):
    path = scale_ingest.build_corpus(tmp_path, 450)  # more than one demo world (300 documents)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 450
    assert len({r["id"] for r in rows}) == 450 and len({r["text"] for r in rows}) > 440
    assert {r["id"].split("-")[0] for r in rows} == {"s0", "s1"}
    # Shuffled: the first rows are not all of the demo's first document type.
    assert len({r["metadata"]["doc_type"] for r in rows[:30]}) > 2


def test_fitted_cpus_fit_the_replicas_on_the_cores():
    assert scale_serve.fitted_cpus(0.25, 0.5, 1, 2.0) == (0.25, 0.5)
    stage, generator = scale_serve.fitted_cpus(0.25, 0.5, 2, 2.0)
    assert 2 * (5 * stage + generator) <= 2.0 and generator > stage > 0.1


def test_serve_curve_without_a_bundle_is_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        scale_serve.curve(
            quick=True,
            bundle=tmp_path / "no-bundle",
            model=tmp_path / "no-model",
            demo_dir=tmp_path,
        )
    message = str(error.value)
    assert "\n" not in message and "make demo" in message and "no-bundle" in message


@pytest.mark.slow
def test_ingest_curve_at_two_tiny_sizes(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written to the working directory would land here
    before = set(Path(tempfile.gettempdir()).glob("rayrag-scale-ingest-*"))
    result = scale_ingest.curve(quick=True, sizes=(3, 7))
    assert (
        result["name"] == "ingest" and result["x"] == "corpus_tokens" and result["y"] == "seconds"
    )
    assert set(result["series"]) == {"pipeline", "embed_only"}
    for points in result["series"].values():
        xs = [x for x, _ in points]
        assert len(points) == 2 and xs == sorted(xs) and xs[0] < xs[1]
        assert all(y > 0 for _, y in points)
    assert [p["documents"] for p in result["meta"]["points"]] == [3, 7]
    assert all(p["chunks"] >= p["documents"] for p in result["meta"]["points"])
    assert {"ingest_fixed_s", "ingest_s_per_1k_tokens", "ingest_s_per_doc"} <= set(
        result["per_unit"]
    )
    assert all(isinstance(v, float) for v in result["per_unit"].values())
    json.dumps(result)  # the CLI prints it
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no bundles in the working directory
    assert set(Path(tempfile.gettempdir()).glob("rayrag-scale-ingest-*")) == before
    assert ray_local.is_initialized()  # the session's Ray was reused, not shut down
