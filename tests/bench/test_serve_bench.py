"""Bench serve on a tiny stack built here (a slice of the demo corpus, a reader trained for a
few steps, as tests/serve/test_app.py builds it): the output's shape and sanity, real Serve."""

from __future__ import annotations

import json
import math

import pytest

from rayrag.bench import serve
from rayrag.errors import ConfigError
from tests.tiny import TINY_MODEL, demo_slice

# six stages beside the session's actors
SMALL_CPUS = (
    "serve.stage_num_cpus=0.1",
    "serve.generator_num_cpus=0.3",
)


def test_percentile_picks_the_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert serve.percentile(values, 50) == 51.0 and serve.percentile(values, 99) == 99.0
    assert serve.percentile([], 50) == 0.0


def test_missing_inputs_are_one_line_naming_what_is_missing(tmp_path):
    with pytest.raises(ConfigError) as error:
        serve.run(
            quick=True,
            bundle=tmp_path / "no-bundle",
            model=tmp_path / "no-model",
            demo_dir=tmp_path,
        )
    message = str(error.value)
    assert (
        "\n" not in message
        and "no-bundle" in message
        and "qa.jsonl" in message
        and "--bundle" in message
    )


@pytest.mark.slow
def test_serve_bench_quick_on_a_tiny_stack(ray_local, demo_corpus, tmp_path):
    from rayrag.config import resolve_config
    from rayrag.pipelines.ingest import ingest
    from rayrag.pipelines.train import train

    corpus = demo_slice(demo_corpus, tmp_path, n_questions=3)
    config = resolve_config("demo", ["tracking.enabled=false", *TINY_MODEL])
    ingest(tmp_path / "corpus.jsonl", tmp_path / "bundle", config, progress=lambda *_: None)
    train(config, tmp_path / "model", bundle=tmp_path / "bundle", progress=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "qa.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in corpus.questions)
    )

    result = json.loads(
        json.dumps(
            serve.run(
                quick=True,
                bundle=tmp_path / "bundle",
                model=tmp_path / "model",
                demo_dir=tmp_path,
                overrides=(*SMALL_CPUS, *TINY_MODEL),
            )
        )
    )
    assert result["bench"] == "serve" and result["quick"] is True
    assert result["bundle"] == str(tmp_path / "bundle") and result["questions"] == str(
        tmp_path / "data" / "qa.jsonl"
    )
    plan = result["plan"]
    assert set(result["competitors"]) == {"inprocess", "serve", "serve_traced"}
    for report in result["competitors"].values():
        assert report["requests"] == plan["requests"] * plan["rounds"]
        assert report["throughput_rps"] > 0 and 0 < report["p50_ms"] <= report["p99_ms"]
    assert result["errors"] == 0  # every request answered 200
    assert set(result["ratios"]) == {
        "serve_vs_inprocess_throughput",
        "p99_over_p50",
        "traced_vs_untraced_throughput",
    }
    tracing = result["tracing"]
    assert tracing["requests_traced"] == plan["requests"] * plan["rounds"] + plan["clients"]
    assert tracing["traces_written"] == tracing["requests_traced"]  # every one, none lost
    assert all(math.isfinite(tracing[k]) for k in ("overhead_ms_p50", "overhead_ms_mean"))
    assert all(math.isfinite(v) and v > 0 for v in result["ratios"].values())
    assert result["ratios"]["p99_over_p50"] >= 1
    assert ray_local.is_initialized()  # the session's Ray was left running
