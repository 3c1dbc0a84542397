"""compare: backend specs, the extractive rule, the dense twin's size, and moe/dense/extractive
end to end on a tiny bundle and two tiny trained readers, logged to a real SQLite MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from rayrag.config import resolve_config
from rayrag.errors import ConfigError
from rayrag.evaluation.compare import (
    TABLE_COLUMNS,
    Backend,
    active_parameters,
    compare_backends,
    dense_baseline_overrides,
    extractive_answer,
    format_table,
    parse_backends,
)
from rayrag.types import Evidence, Passage, Principal
from tests.tiny import TINY_MODEL, demo_slice

# As tests/serve/test_app.py's stack: a reader small enough to train in seconds.
ADMIN = Principal("admin", frozenset({"public", "hr", "finance", "legal"}))


def test_parse_backends_good_specs():
    assert parse_backends("moe,dense,extractive") == [
        Backend("moe"),
        Backend("dense"),
        Backend("extractive"),
    ]
    assert parse_backends(" extractive , openai=http://127.0.0.1:8000/ ") == [
        Backend("extractive"),
        Backend("openai", "http://127.0.0.1:8000"),
    ]
    assert parse_backends(["openai=https://api.example.com/v1"]) == [
        Backend("openai", "https://api.example.com/v1")
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "at least one backend"),
        ("moe,gpt", "unknown backend 'gpt'"),
        ("openai", "needs an http"),
        ("openai=ftp://x", "needs an http"),
        ("moe=ckpt", "takes no =value"),
        ("moe,moe", "once"),
    ],
)
def test_parse_backends_bad_specs_name_the_flag(spec, message):
    with pytest.raises(ConfigError, match=message) as raised:
        parse_backends(spec)
    assert "--backends" in str(raised.value)


def passage(i: int, text: str, doc: str | None = None) -> Passage:
    return Passage(chunk_id=f"d{i}#0", doc_id=doc or f"d{i}", text=text, score=1.0 / i)


def test_extractive_picks_the_best_overlapping_sentence_and_cites_it():
    evidence = Evidence(
        passages=(
            passage(1, "Helix Corp makes sensors. It was founded in Oslo."),
            passage(
                2,
                (
                    "Brightwater Labs builds batteries.  Helix Corp "
                    "acquired Brightwater Labs in 2019! Nobody else did."
                ),
            ),
            passage(3, "Helix Corp acquired Brightwater Labs, reports say."),
        )
    )
    found = extractive_answer("Who acquired Brightwater Labs?", evidence)
    # "acquired", "brightwater", "labs": three shared words; passage 3 ties but ranks lower.
    assert found.sentence == "Helix Corp acquired Brightwater Labs in 2019!"
    assert found.marker == 2 and found.passage.doc_id == "d2" and found.overlap == 3
    assert found.text.endswith("[2]")
    # Question and stop words never count: "What is the ..." matches nothing, so the top passage's
    # first sentence.
    none = extractive_answer("What is the?", evidence)
    assert none.marker == 1 and none.sentence == "Helix Corp makes sensors." and none.overlap == 0
    assert extractive_answer("Who?", Evidence(passages=())) is None


def test_dense_twin_has_the_same_active_parameters_per_token():
    from rayrag.generator.model import MoETransformer

    moe_cfg = resolve_config(
        "demo", [*TINY_MODEL, "generator.experts_per_token=2", "generator.shared_expert_dim=8"]
    )
    overrides = dense_baseline_overrides(moe_cfg)
    assert overrides == [
        "generator.n_experts=1",
        "generator.experts_per_token=1",
        "generator.ffn_dim=96",
    ]
    dense_cfg = moe_cfg.with_overrides(overrides)
    assert dense_cfg.generator.shared_expert_dim == 8
    moe, dense = MoETransformer(moe_cfg.generator), MoETransformer(dense_cfg.generator)

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    for moe_layer, dense_layer in zip(moe.model.layers, dense.model.layers, strict=True):
        assert count(moe_layer.self_attn) == count(dense_layer.self_attn)
        experts = moe_layer.block_sparse_moe.experts
        one_expert = sum(w[0].numel() for w in (experts.w1, experts.w2, experts.w3))
        k = moe_cfg.generator.experts_per_token
        assert k * one_expert == count(dense_layer.block_sparse_moe.experts)
        assert count(moe_layer.block_sparse_moe.shared_expert) == count(
            dense_layer.block_sparse_moe.shared_expert
        )
    g = moe_cfg.generator  # all that differs on a token's path: the router's extra columns
    assert active_parameters(moe) - active_parameters(dense) == g.n_layers * g.d_model * (
        g.n_experts - 1
    )


def test_moe_and_dense_need_their_checkpoints(tmp_path):
    (tmp_path / "qa.jsonl").write_text("")
    cfg = resolve_config("demo")
    with pytest.raises(ConfigError, match="--dense-model CKPT is required when dense"):
        compare_backends(
            ["extractive", "dense"],
            tmp_path / "qa.jsonl",
            cfg,
            bundle=tmp_path,
            model=None,
            dense_model=None,
            principal=ADMIN,
        )
    with pytest.raises(ConfigError, match="--model CKPT is required when moe"):
        compare_backends(
            ["moe"],
            tmp_path / "qa.jsonl",
            cfg,
            bundle=tmp_path,
            model=None,
            dense_model=None,
            principal=ADMIN,
        )
    with pytest.raises(ConfigError, match="--limit"):
        compare_backends(
            ["extractive"],
            tmp_path / "qa.jsonl",
            cfg,
            bundle=tmp_path,
            model=None,
            dense_model=None,
            principal=ADMIN,
            limit=0,
        )


def test_format_table_aligns_and_dashes_undefined():
    row = {
        "backend": "extractive",
        **{c: 0.5 for c in TABLE_COLUMNS},
        "citation_precision": None,
        "tokens_per_s": None,
        "questions": 3.0,
        "latency_p99_ms": 1234.567,
    }
    header, line = format_table([row]).splitlines()
    assert header.split()[0] == "backend" and header.split()[1:] == list(TABLE_COLUMNS)
    assert line.split() == [
        "extractive",
        "0.5000",
        "0.5000",
        "-",
        "0.5000",
        "0.5000",
        "1234.6",
        "-",
        "0.5000",
        "3",
        "0.5000",
    ]
    assert len(header) == len(line)


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def world(ray_local, demo_corpus, tmp_path_factory):
    from rayrag.pipelines.ingest import ingest
    from rayrag.pipelines.train import train

    root = tmp_path_factory.mktemp("compare")
    public_q = demo_slice(demo_corpus, root, n_questions=3).questions
    (root / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in public_q))
    config = resolve_config("demo", ["tracking.enabled=false", *TINY_MODEL])
    ingest(root / "corpus.jsonl", root / "bundle", config, progress=lambda *_: None)
    train(config, root / "moe", bundle=root / "bundle", progress=False)
    train(
        config.with_overrides(dense_baseline_overrides(config)),
        root / "dense",
        bundle=root / "bundle",
        progress=False,
    )
    return SimpleNamespace(root=root, config=config, questions=public_q)


@pytest.mark.slow
@pytest.mark.integration
def test_compare_moe_dense_extractive_end_to_end(world, tmp_path):
    import mlflow

    from rayrag.config import TrackingConfig
    from rayrag.tracking.tracker import Tracker

    config = world.config.with_overrides(["tracking.enabled=true"])
    tracker = Tracker(
        TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
        artifact_root=tmp_path / "artifacts",
    )
    seen: list[tuple[int, int]] = []
    result = compare_backends(
        ["moe", "dense", "extractive"],
        world.root / "qa.jsonl",
        config,
        bundle=world.root / "bundle",
        model=world.root / "moe",
        dense_model=world.root / "dense",
        principal=ADMIN,
        tracker=tracker,
        progress=lambda done, total: seen.append((done, total)),
    )
    n = len(world.questions)
    assert result["questions"] == n and seen[-1] == (n, n)
    assert [row["backend"] for row in result["table"]] == ["moe", "dense", "extractive"]
    for row in result["table"]:
        assert set(row) == {"backend", *TABLE_COLUMNS} and row["questions"] == n
        for metric in ("answer_em", "answer_f1", "citation_precision"):
            assert row[metric] is None or 0.0 <= row[metric] <= 1.0, (row["backend"], metric)
        assert 0 < row["ttft_p50_ms"] <= row["latency_p50_ms"] <= row["latency_p99_ms"]
    by_name = {row["backend"]: row for row in result["table"]}
    assert by_name["extractive"]["ttft_p50_ms"] == by_name["extractive"]["latency_p50_ms"]
    assert (
        by_name["extractive"]["cost_per_request"] == 0
        and by_name["extractive"]["tokens_per_s"] is None
    )
    assert by_name["extractive"]["citation_precision"] is not None  # it always cites its passage
    for name in ("moe", "dense"):
        assert by_name[name]["cost_per_request"] > 0 and by_name[name]["tokens_per_s"] > 0
    assert result["backends"]["moe"]["experts"] == 4 and result["backends"]["dense"]["experts"] == 1
    g = config.generator
    assert result["backends"]["moe"]["active_params"] - result["backends"]["dense"][
        "active_params"
    ] == g.n_layers * g.d_model * (g.n_experts - 1)

    (run,) = tracker.find_runs("compare")
    assert run["run_id"] == result["run_id"]
    assert run["params.compare.backends"] == "moe,dense,extractive"
    for name in ("moe", "dense", "extractive"):
        assert run[f"metrics.{name}/answer_f1"] == pytest.approx(by_name[name]["answer_f1"])
        assert run[f"metrics.{name}/latency_p50_ms"] == pytest.approx(
            by_name[name]["latency_p50_ms"]
        )
    client = mlflow.MlflowClient(tracker.tracking_uri)
    assert [a.path for a in client.list_artifacts(run["run_id"], "compare")] == [
        "compare/table.json"
    ]
    table = json.loads(
        Path(
            client.download_artifacts(run["run_id"], "compare/table.json", str(tmp_path))
        ).read_text()
    )
    assert [row["backend"] for row in table["rows"]] == ["moe", "dense", "extractive"]
    logged = json.dumps(table) + json.dumps({k: str(v) for k, v in run.items()})
    for question in world.questions:
        assert question["question"] not in logged
        assert all(answer not in logged for answer in question["answers"] if len(answer) > 6)


@pytest.mark.slow
@pytest.mark.integration
def test_cli_compare_prints_a_table_then_one_json_line(world, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from rayrag.cli.compare import compare_command

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root (./mlruns) lands here
    app = typer.Typer()
    app.command()(compare_command)
    args = [
        "--backends",
        "extractive",
        "--dataset",
        str(world.root / "qa.jsonl"),
        "--bundle",
        str(world.root / "bundle"),
        "--limit",
        "2",
        "--config",
        "demo",
        "--set",
        "tracking.enabled=true",
        "--set",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'cli.db'}",
        "--set",
        "decoding.max_new_tokens=8",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["backend", "answer_em"] and lines[1].split()[0] == "extractive"
    last = json.loads(lines[-1])
    assert last["questions"] == 2 and last["run_id"] and set(last["backends"]) == {"extractive"}
    assert (tmp_path / "cli.db").is_file()
    missing = CliRunner().invoke(
        app,
        [
            "--backends",
            "dense",
            "--dataset",
            str(world.root / "qa.jsonl"),
            "--bundle",
            str(world.root / "bundle"),
        ],
    )
    assert isinstance(missing.exception, ConfigError) and "--dense-model" in str(missing.exception)


@pytest.mark.slow
@pytest.mark.integration
def test_a_refused_question_is_counted_and_a_down_endpoint_stops_the_run(world):
    """An endpoint's 4xx on one question is that backend's miss (scored as no answer, not
    timed); three failures in a row stop the run with a one-line error."""
    from rayrag.errors import GeneratorUnavailable
    from tests.generator.test_openai_backend import Backend as Endpoint

    endpoint = Endpoint()
    try:
        # the untimed warm-up, then question 1 refused, questions 2 and 3 answered
        endpoint.script = [("ok", "x"), ("status", 400), ("ok", "Velora Systems [1].")]
        result = compare_backends(
            ["extractive", f"openai={endpoint.url}"],
            world.root / "qa.jsonl",
            world.config,
            bundle=world.root / "bundle",
            model=None,
            dense_model=None,
            principal=ADMIN,
        )
        n = len(world.questions)
        assert len(endpoint.received) == n + 1
        row = {r["backend"]: r for r in result["table"]}["openai"]
        assert row["failed"] == 1 and row["questions"] == n
        assert result["backends"]["openai"]["answered"] == n - 1
        assert result["backends"]["extractive"]["failed"] == 0
        # a backend that keeps failing is down: the run stops, naming it, on one line
        endpoint.script = [("ok", "x"), ("status", 503)]
        endpoint.received.clear()
        with pytest.raises(GeneratorUnavailable, match="backend openai failed 3 questions") as e:
            compare_backends(
                [f"openai={endpoint.url}"],
                world.root / "qa.jsonl",
                world.config.with_overrides(
                    ["generator.openai.max_retries=0", "generator.openai.backoff_s=0"]
                ),
                bundle=world.root / "bundle",
                model=None,
                dense_model=None,
                principal=ADMIN,
            )
        assert "\n" not in str(e.value)
    finally:
        endpoint.close()
