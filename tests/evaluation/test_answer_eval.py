"""Answer evaluation: scores on hand records, the gate on planted numbers, and one tracked run
end to end on a tiny bundle and model (in process), with the champion gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from rayrag.config import resolve_config
from rayrag.data.readers import QAPair
from rayrag.errors import ConfigError
from rayrag.evaluation.answer_eval import TABLE_FILE, evaluate_answers, load_canaries
from rayrag.evaluation.answer_scoring import (
    Outcome,
    aggregate_scores,
    gate_check,
    outcome_from_response,
    score_example,
)
from rayrag.evaluation.answerers import InProcessAnswerer
from rayrag.types import Principal
from tests.tiny import TINY_MODEL as TINY
from tests.tiny import demo_slice

ALL_GROUPS = ("public", "hr", "finance", "legal")
TINY_MODEL = [*TINY, "evaluation.bootstrap_samples=20", "evaluation.min_slice_size=2"]

# ---------------------------------------------------------------- pure scoring


def outcome(**changes) -> Outcome:
    base = dict(
        ranked_doc_ids=["d1", "x", "d2"],
        cited_doc_ids=["d1", "x"],
        answer="Helix Corp [1].",
        groundedness=0.75,
        validation={"checked": True, "supported": 1, "contradicted": 0, "unknown": 0},
        prompt_tokens=100,
        completion_tokens=10,
        cost=0.002,
        latency_ms=40.0,
    )
    return Outcome(**{**base, **changes})


def test_score_example_by_hand():
    qa = QAPair("q1", "Who?", ["Helix Corp", "Helix"], ["d1", "d2"], {"hops": 2})
    scores = score_example(qa, outcome(), canaries=["555-0100"])
    assert scores["recall_at_2"] == 0.5 and scores["recall_at_5"] == 1.0 and scores["mrr"] == 1.0
    assert scores["answer_em"] == 1.0 and scores["answer_f1"] == 1.0  # the [1] marker is not scored
    assert scores["citation_precision"] == 0.5 and scores["groundedness"] == 0.75
    assert scores["kg_validation_rate"] == 1.0 and scores["kg_supported_rate"] == 1.0
    assert scores["pii_leak_rate"] == 0.0
    leaky = score_example(
        qa,
        outcome(answer="call 555-0100", validation={"checked": True, "contradicted": 2}),
        canaries=["555-0100"],
    )
    assert (
        leaky["pii_leak_rate"] == 1.0
        and leaky["kg_validation_rate"] == 0.0
        and leaky["answer_f1"] == 0.0
    )
    repeats = score_example(
        qa,
        outcome(validation={"checked": True, "supported": 0, "contradicted": 0, "unknown": 1}),
        [],
    )
    assert repeats["kg_validation_rate"] == 1.0 and repeats["kg_supported_rate"] == 0.0
    unchecked = score_example(
        QAPair("q2", "?", [], [], {}), outcome(validation={"checked": False}), []
    )
    assert (
        unchecked["kg_validation_rate"] is None
        and unchecked["kg_supported_rate"] is None
        and unchecked["recall_at_5"] is None
    )
    assert unchecked["answer_em"] is None and unchecked["citation_precision"] is None
    assert unchecked["context_recall"] is None
    # context_recall: gold documents among the reader's passages (top_k), not the deep ranking
    assert score_example(qa, outcome(context_doc_ids=["d2", "x"]), [])["context_recall"] == 0.5
    assert score_example(qa, outcome(context_doc_ids=["d2", "d1"]), [])["context_recall"] == 1.0
    assert score_example(qa, outcome(), [])["context_recall"] == 0.0
    # reader_em: the reader's own first answer, when the answerer reports one (in process).
    assert scores["reader_em"] is None
    chosen = score_example(qa, outcome(extra={"reader_answer": "Brightwater Labs"}), [])
    assert chosen["reader_em"] == 0.0 and chosen["answer_em"] == 1.0


def test_aggregate_scores_by_hand():
    qa = QAPair("q1", "Who?", ["Helix Corp"], ["d1", "d2"], {})
    rows = [
        score_example(qa, outcome(latency_ms=10.0), []),
        score_example(
            qa,
            outcome(
                answer="nobody",
                latency_ms=30.0,
                completion_tokens=20,
                cost=0.004,
                validation={"checked": False},
            ),
            [],
        ),
        score_example(
            QAPair("q3", "?", ["x"], [], {}), outcome(latency_ms=20.0, answer="x"), ["x"]
        ),
    ]
    agg = aggregate_scores(rows)
    assert agg["answer_em"] == pytest.approx(2 / 3, abs=1e-6)
    assert agg["recall_at_2"] == 0.5  # the question without gold documents is left out
    assert agg["kg_validation_rate"] == 1.0  # only checked answers count
    assert agg["pii_leak_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert agg["p50_ms"] == 20.0 and agg["p99_ms"] == pytest.approx(29.8)
    assert agg["tokens_per_request"] == pytest.approx(100 + 40 / 3, abs=1e-3)
    assert agg["cost_per_request"] == pytest.approx(0.008 / 3) and agg["questions"] == 3


def test_outcome_from_the_ask_response_json():
    body = {
        "answer": "Velora [2]",
        "cited_markers": [2],
        "groundedness": 0.5,
        "citations": [
            {"marker": 1, "chunk_id": "a#0", "doc_id": "a"},
            {"marker": 2, "chunk_id": "b#1", "doc_id": "b"},
            {"marker": 3, "chunk_id": "a#1", "doc_id": "a"},
        ],
        "truncated": {"chunk_ids": ["c#4", "b#0", "d#0"], "facts_dropped": 0},
        "validation": {"checked": True, "contradicted": 0},
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "cost": 0.1},
        "model_version": "m@1",
    }
    got = outcome_from_response(body, 12.0)
    assert got.ranked_doc_ids == ["a", "b", "c", "d"] and got.cited_doc_ids == ["b"]
    assert got.cost == 0.1 and got.model_version == "m@1" and got.extra["explicit_citations"]
    no_markers = outcome_from_response({**body, "cited_markers": []}, 1.0, ranked_doc_ids=["z"])
    assert no_markers.cited_doc_ids == ["a", "b", "a"] and no_markers.ranked_doc_ids == ["z"]
    # prompt + cut passages
    assert got.context_doc_ids == no_markers.context_doc_ids == ["a", "b", "c", "d"]


def test_gate_check_on_planted_regressions():
    metrics = ("recall_at_5", "answer_f1", "pii_leak_rate", "citation_precision")
    baseline = {
        "recall_at_5": 0.80,
        "answer_f1": 0.50,
        "pii_leak_rate": 0.00,
        "citation_precision": 0.7,
    }
    same = {
        "recall_at_5": 0.79,
        "answer_f1": 0.52,
        "pii_leak_rate": 0.01,
        "citation_precision": None,
    }
    # within tolerance; None not compared
    assert gate_check(same, baseline, metrics, 0.02) == (
        True,
        [],
    )
    worse = {
        "recall_at_5": 0.70,
        "answer_f1": 0.50,
        "pii_leak_rate": 0.05,
        "citation_precision": 0.9,
    }
    passed, regressions = gate_check(worse, baseline, metrics, 0.02)
    assert not passed
    assert [r["metric"] for r in regressions] == ["recall_at_5", "pii_leak_rate"]
    assert regressions[0] == {
        "metric": "recall_at_5",
        "baseline": 0.8,
        "current": 0.7,
        "delta": pytest.approx(-0.1),
    }
    assert regressions[1]["delta"] == pytest.approx(0.05)  # leaks: higher is worse
    # A baseline without a gated metric cannot vouch for it: the gate fails and names it.
    passed, regressions = gate_check(
        {"recall_at_5": 0.1},
        {"answer_f1": 0.5, "pii_leak_rate": 0.0, "citation_precision": 0.7},
        metrics,
        0.0,
    )
    assert not passed and regressions == [
        {
            "metric": "recall_at_5",
            "baseline": None,
            "current": 0.1,
            "delta": None,
            "reason": "missing from the baseline",
        }
    ]


def test_canaries_from_planted_pii_or_list(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"PHONE": ["555-0100"], "EMAIL": ["a@b.c", ""]}))
    (tmp_path / "l.json").write_text(json.dumps(["x1"]))
    assert load_canaries(tmp_path / "p.json") == ["555-0100", "a@b.c"]
    assert load_canaries(tmp_path / "l.json") == ["x1"] and load_canaries(None) == []
    with pytest.raises(ConfigError, match="--canaries"):
        load_canaries(tmp_path / "missing.json")


def test_user_errors_are_one_line(tmp_path):
    cfg = resolve_config("demo", ["tracking.enabled=false"])
    admin = Principal("admin", frozenset(ALL_GROUPS))
    with pytest.raises(ConfigError, match="--dataset"):
        evaluate_answers(
            tmp_path / "nope.jsonl", cfg, bundle=None, model=None, principal=admin, canaries=None
        )
    (tmp_path / "qa.jsonl").write_text(
        json.dumps({"id": "q", "question": "?", "answers": ["a"], "supporting_ids": ["d"]}) + "\n"
    )
    with pytest.raises(ConfigError, match="--bundle and --model"):
        evaluate_answers(
            tmp_path / "qa.jsonl", cfg, bundle=None, model=None, principal=admin, canaries=None
        )
    with pytest.raises(ConfigError, match="--gate"):
        evaluate_answers(
            tmp_path / "qa.jsonl",
            cfg,
            bundle=tmp_path,
            model=tmp_path,
            principal=admin,
            canaries=None,
            gate="best",
        )


def test_ask_responses_are_scored_by_hand(tmp_path, monkeypatch):
    """The /v1/ask JSON a server returns, scored: canned responses through the same
    `outcome_from_response` the HTTP answerer uses (tests/serve/test_app.py drives the real
    HttpAnswerer against a running graph)."""
    from rayrag.evaluation.answer_scoring import outcome_from_response
    from rayrag.evaluation.answerers import HttpAnswerer

    rows = [
        {
            "id": f"q{i}",
            "question": f"Who acquired company {i}?",
            "answers": ["Helix Corp"],
            "supporting_ids": ["press-1", "product-1"],
            "metadata": {"hops": 1 + i % 2},
        }
        for i in range(4)
    ]
    dataset = tmp_path / "qa.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "planted_pii.json").write_text(json.dumps({"PHONE": ["555-0100"]}))

    class CannedServer:  # what HttpAnswerer returns per question: an Outcome, or None for a 5xx
        model_version = "srv@abc"

        def warm_up(self) -> None:
            pass

        def __call__(self, qa, principal=None):
            if qa.id == "q3":
                return None
            leak = " 555-0100" if qa.id == "q2" else ""
            return outcome_from_response(
                {
                    "answer": f"Helix Corp [1]{leak}",
                    "cited_markers": [1],
                    "groundedness": 0.5,
                    "citations": [
                        {"marker": 1, "chunk_id": "press-1#0", "doc_id": "press-1"},
                        {"marker": 2, "chunk_id": "misc-9#0", "doc_id": "misc-9"},
                    ],
                    "truncated": {"chunk_ids": ["product-1#2"], "facts_dropped": 0},
                    "validation": {
                        "checked": True,
                        "contradicted": 0,
                        "supported": 1,
                        "unknown": 0,
                    },
                    "usage": {"prompt_tokens": 50, "completion_tokens": 5, "cost": 0.001},
                    "model_version": "srv@abc",
                },
                10.0,
            )

    cfg = resolve_config("demo", ["tracking.enabled=false", "evaluation.bootstrap_samples=10"])
    result = evaluate_answers(
        dataset,
        cfg,
        bundle=None,
        model=None,
        url="http://eval.test",
        principal=Principal("ignored", frozenset()),
        canaries=None,
        answerer=CannedServer(),
    )
    assert result["source"] == "http" and result["model_version"] == "srv@abc"
    assert result["counts"]["server_errors"] == 1 and result["questions"] == 3
    # press-1, misc-9, product-1
    assert result["recall_at_2"] == 0.5 and result["recall_at_5"] == 1.0
    assert result["answer_em"] == pytest.approx(2 / 3, abs=1e-6) and result[
        "answer_f1"
    ] == pytest.approx((1 + 1 + 0.8) / 3, abs=1e-6)
    assert result["reader_em"] is None  # the server reports only the answer it chose
    assert result["citation_precision"] == 1.0 and result["pii_leak_rate"] == pytest.approx(
        1 / 3, abs=1e-6
    )
    assert result["cost_per_request"] == pytest.approx(0.001) and result["tokens_per_request"] == 55
    assert result["slices"]["hops=1"]["n"] == 2 and result["run_id"] is None
    monkeypatch.delenv("RAYRAG_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="RAYRAG_API_KEY"):
        HttpAnswerer("http://eval.test", None, None)


def test_cli_exit_codes(monkeypatch, tmp_path):
    import typer
    from typer.testing import CliRunner

    import rayrag.evaluation.answer_eval as answer_eval
    from rayrag.cli import eval as cli_eval

    dataset = tmp_path / "qa.jsonl"
    dataset.write_text("{}\n")
    fake = {
        "questions": 1,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "tokens_per_request": 3.0,
        "cost_per_request": 0.0,
        "recall_at_5": 0.5,
        "slices": {"hops=2": {"recall_at_5": 0.2, "n": 5.0}},
        "disaggregation": {
            "flags": [
                {
                    "metric": "recall_at_5",
                    "key": "hops",
                    "group": "2",
                    "n": 5,
                    "metric_value": 0.2,
                    "overall": 0.5,
                    "difference": -0.3,
                }
            ]
        },
        "gate": {
            "baseline_run_id": "r0",
            "champion_version": "1",
            "passed": False,
            "regressions": [
                {"metric": "recall_at_5", "baseline": 0.8, "current": 0.5, "delta": -0.3}
            ],
        },
    }
    monkeypatch.setattr(answer_eval, "evaluate_answers", lambda *a, **k: fake)
    app = typer.Typer()
    app.command()(cli_eval.eval_command)
    args = [
        "--dataset",
        str(dataset),
        "--url",
        "http://127.0.0.1:1",
        "--set",
        "tracking.enabled=false",
    ]
    failed = CliRunner().invoke(app, [*args, "--gate", "champion"])
    assert failed.exit_code == 1
    lines = failed.stdout.strip().splitlines()
    assert json.loads(lines[-1])["gate"]["passed"] is False
    # flagged gap marked
    assert any("0.2000!" in line and line.startswith("hops=2") for line in lines)
    assert any("FAILED" in line for line in lines)
    fake["gate"]["passed"] = True
    assert CliRunner().invoke(app, [*args, "--json"]).exit_code == 0
    bad = CliRunner().invoke(app, ["--dataset", str(dataset), "--set", "tracking.enabled=false"])
    assert isinstance(bad.exception, ConfigError)  # rayrag.cli.main.main turns it into exit 2


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def stack(ray_local, demo_corpus, tmp_path_factory):
    from rayrag.pipelines.ingest import ingest
    from rayrag.pipelines.train import train

    root = tmp_path_factory.mktemp("answer-eval")
    corpus = demo_slice(demo_corpus, root, n_questions=4)
    docs, public_q, keep = corpus.docs, corpus.questions, corpus.kept
    data = root / "data"
    data.mkdir()
    (data / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in public_q))
    shutil.copy(demo_corpus.planted_pii_path, data / "planted_pii.json")
    build = resolve_config("demo", ["tracking.enabled=false", *TINY_MODEL])
    ingest(root / "corpus.jsonl", root / "bundle", build, progress=lambda *_: None)
    train(build, root / "model", bundle=root / "bundle", progress=False)
    config = resolve_config(
        "demo", [f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}", *TINY_MODEL]
    )
    from rayrag.tracking.tracker import Tracker

    tracker = Tracker(config.tracking, artifact_root=root / "artifacts")
    answerer = InProcessAnswerer(root / "bundle", root / "model", config, config.retrieval.mode)
    return SimpleNamespace(
        root=root,
        dataset=data / "qa.jsonl",
        config=config,
        tracker=tracker,
        answerer=answerer,
        docs=[docs[d] for d in sorted(keep)],
        questions=public_q,
        admin=Principal("admin", frozenset(ALL_GROUPS)),
    )


def run_eval(stack, **kwargs):
    return evaluate_answers(
        stack.dataset,
        stack.config,
        bundle=stack.root / "bundle",
        model=stack.root / "model",
        principal=stack.admin,
        canaries=None,
        tracker=stack.tracker,
        answerer=stack.answerer,
        **kwargs,
    )


@pytest.mark.slow
@pytest.mark.integration
def test_end_to_end_in_process_run_is_tracked_without_text(stack):
    result = run_eval(stack)
    for key in (
        "recall_at_5",
        "mrr",
        "answer_em",
        "answer_f1",
        "groundedness",
        "citation_precision",
        "kg_validation_rate",
        "pii_leak_rate",
        "p50_ms",
        "p99_ms",
        "tokens_per_request",
        "cost_per_request",
        "questions",
        "run_id",
        "slices",
        "disaggregation",
    ):
        assert key in result, key
    json.dumps(result)
    assert result["questions"] == len(stack.questions) and result["source"] == "in_process"
    assert result["counts"]["canaries"] > 0  # planted_pii.json beside the dataset
    assert 0 <= result["recall_at_5"] <= 1 and result["p99_ms"] >= result["p50_ms"] > 0
    assert result["tokens_per_request"] > 0 and result["cost_per_request"] > 0
    assert 0 <= result["reader_em"] <= 1  # in process the reader's own first answer is scored too

    client = stack.tracker.client()
    run = client.get_run(result["run_id"])
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["model_version"] == stack.answerer.model_version and tags["source"] == "in_process"
    # versioned with the prompt
    assert tags["prompt_version"] == result["prompt_version"] == "rayrag-reader/1"
    assert (
        tags["dataset_digest"] == result["dataset_digest"]
        and tags["bundle_id"] == result["bundle_id"]
    )
    assert tags["dataset.eval.digest"] == result["dataset_digest"]  # log_dataset
    assert metrics["answer_f1"] == pytest.approx(result["answer_f1"])
    hops = stack.questions[0]["metadata"]["hops"]
    assert f"recall_at_5/hops/{hops}" in metrics and "pii_leak_rate/access/public" in metrics
    assert all("=" not in name for name in metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert TABLE_FILE in artifacts and "disaggregation" in artifacts
    local = Path(client.download_artifacts(run.info.run_id, "", str(stack.root / "download")))
    table = json.loads((local / TABLE_FILE).read_text())
    assert sorted(row["id"] for row in table) == sorted(q["id"] for q in stack.questions)
    assert {"slice.hops", "answer_f1", "recall_at_5", "pii_leak_rate"} <= set(table[0])
    assert sorted(p.name for p in (local / "disaggregation").iterdir())[:2] == [
        "answer_em.png",
        "answer_f1.png",
    ]

    # No question, gold answer or document text anywhere in what MLflow holds.
    logged = "\n".join(
        [
            *params,
            *params.values(),
            *tags,
            *tags.values(),
            *metrics,
            (local / TABLE_FILE).read_text(),
            (local / "disaggregation" / "report.json").read_text(),
        ]
    )
    texts = [q["question"] for q in stack.questions] + [
        a for q in stack.questions for a in q["answers"]
    ]
    texts += [" ".join(d["text"].split()[:6]) for d in stack.docs]
    for text in texts:
        assert text not in logged, text


def _row_traces(stack, run_id):
    run = stack.tracker.client().get_run(run_id)
    return stack.tracker.mlflow.search_traces(
        locations=[run.info.experiment_id], run_id=run_id, return_type="list"
    )


@pytest.mark.slow
@pytest.mark.integration
def test_each_question_is_a_row_of_mlflows_evaluations_tab(stack):
    from rayrag.evaluation.answer_eval import ROW_SCORERS

    result = run_eval(stack)
    run = stack.tracker.client().get_run(result["run_id"])
    assert run.info.run_name.startswith("eval demo hybrid ")  # `eval demo hybrid <model> v<N>`
    traces = _row_traces(stack, result["run_id"])
    by_id = {json.loads(t.data.request)["question_id"]: t for t in traces}
    assert sorted(by_id) == sorted(q["id"] for q in stack.questions)
    for qa in stack.questions:
        trace = by_id[qa["id"]]
        request, response = json.loads(trace.data.request), json.loads(trace.data.response)
        assert request["question"] == qa["question"] and "answer" in response  # log_text: true
        scores = {a.name: a.value for a in trace.info.assessments if a.name in ROW_SCORERS}
        assert {"answer_em", "answer_f1", "guard_groundedness", "confidence", "refused"} <= set(
            scores
        )
        expected = {a.name: a.value for a in trace.info.assessments if a.name not in ROW_SCORERS}
        assert expected["supporting_ids"] == qa["supporting_ids"]
    # the rows' scores are the ones the aggregates were computed from
    metrics = run.data.metrics
    for scorer in ("answer_f1", "guard_groundedness", "mrr", "pii_leak_rate"):
        metric = ROW_SCORERS[scorer]
        assert metrics[f"{scorer}/mean"] == pytest.approx(result[metric], abs=1e-6)
    assert metrics["answer_f1"] == pytest.approx(result["answer_f1"])  # the run's own, kept

    private = stack.config.with_overrides(["evaluation.log_text=false"])
    quiet = evaluate_answers(
        stack.dataset,
        private,
        bundle=stack.root / "bundle",
        model=stack.root / "model",
        principal=stack.admin,
        canaries=None,
        tracker=stack.tracker,
        answerer=stack.answerer,
    )
    rows = _row_traces(stack, quiet["run_id"])
    assert len(rows) == len(stack.questions)
    held = "\n".join(
        [t.data.request + t.data.response for t in rows]
        + [json.dumps(a.value) for t in rows for a in t.info.assessments]
    )
    assert all(q["id"] in held for q in stack.questions)
    texts = [q["question"] for q in stack.questions]
    texts += [a for q in stack.questions for a in q["answers"]]
    for text in texts:
        assert text not in held, text


@pytest.mark.slow
@pytest.mark.integration
def test_champion_gate_end_to_end(stack):
    from rayrag.evaluation.answer_eval import weights_of
    from rayrag.tracking.model_registry import ModelRegistry

    registry = ModelRegistry(stack.tracker)
    if registry.version_for_alias("champion") is None:
        registry.register(stack.root / "model")  # the first version is the champion
    dataset = stack.dataset.with_name("qa_gate.jsonl")  # a digest no run has evaluated yet
    dataset.write_text("".join(json.dumps(q) + "\n" for q in stack.questions[:2]))
    gated = dict(
        dataset=dataset,
        config=stack.config,
        bundle=stack.root / "bundle",
        model=stack.root / "model",
        principal=stack.admin,
        canaries=None,
        tracker=stack.tracker,
        answerer=stack.answerer,
    )
    with pytest.raises(ConfigError, match="no evaluation of the champion on this dataset"):
        evaluate_answers(**gated, gate="champion")

    baseline = evaluate_answers(**gated)
    again = evaluate_answers(**gated, gate="champion")
    assert again["gate"]["baseline_run_id"] == baseline["run_id"] and again["gate"]["passed"], (
        again["gate"]
    )
    with pytest.raises(ConfigError, match="no evaluation of the champion on this dataset"):
        # a slice never meets the whole file's baseline
        evaluate_answers(**gated, gate="champion", limit=1)

    # A planted champion evaluation that scored better: the same model now regresses.
    better = {
        **{
            m: baseline[m]
            for m in stack.config.evaluation.gate_metrics
            if baseline.get(m) is not None
        },
        "recall_at_5": min(baseline["recall_at_5"] + 0.5, 1.5),
        "pii_leak_rate": 0.0,
        "answer_f1": (baseline["answer_f1"] or 0) + 0.3,
    }
    tags = {
        "weights_digest": weights_of(stack.answerer.model_version),
        "dataset_digest": baseline["dataset_digest"],
        "evaluation": "answers",
        "model_version": stack.answerer.model_version,
    }
    with stack.tracker.start_run("eval", stack.config, tags=tags) as planted:
        planted.log_metrics(better)
    failed = evaluate_answers(**gated, gate="champion")
    gate = failed["gate"]
    assert gate["baseline_run_id"] == planted.run_id and not gate["passed"]
    assert {r["metric"] for r in gate["regressions"]} == {"recall_at_5", "answer_f1"}
    run = stack.tracker.client().get_run(failed["run_id"])
    assert (
        run.data.tags["gate"] == "failed"
        and run.data.tags["gate_baseline_run_id"] == planted.run_id
    )

    # The same gate through the real command line: exit code 1, the verdict on the last line.
    # (The gated run above is now the champion's latest evaluation: plant the better one again.)
    import subprocess
    import sys

    with stack.tracker.start_run("eval", stack.config, tags=tags) as planted:
        planted.log_metrics(better)

    sets = [
        f"--set={o}"
        for o in (f"tracking.tracking_uri={stack.config.tracking.tracking_uri}", *TINY_MODEL)
    ]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rayrag.cli",
            "eval",
            "--dataset",
            str(dataset),
            "--bundle",
            str(stack.root / "bundle"),
            "--model",
            str(stack.root / "model"),
            "--gate",
            "champion",
            "--json",
            "--config",
            "demo",
            *sets,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["gate"]["passed"] is False


def test_auroc_is_the_mann_whitney_probability_with_ties_halved():
    from rayrag.evaluation.answer_scoring import auroc

    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.5, 0.9], [0.5, 0.1]) == pytest.approx(0.875)  # (1 + 1 + 1 + 0.5) / 4
    assert auroc([], [0.3]) is None


def test_calibration_reports_how_confidence_and_escalation_split_right_from_wrong():
    from rayrag.evaluation.answer_scoring import calibration

    rows = [
        {"answer_em": 1.0, "confidence": 0.9, "escalated": 0.0, "groundedness": 1.0},
        {"answer_em": 1.0, "confidence": 0.4, "escalated": 1.0, "groundedness": 0.5},
        {"answer_em": 0.0, "confidence": 0.2, "escalated": 1.0, "groundedness": 0.0},
        {"answer_em": None, "confidence": 0.7, "escalated": 0.0, "groundedness": 1.0},
    ]
    out = calibration(rows)
    assert out["confidence_auroc"] == 1.0
    assert out["escalation_rate_correct"] == 0.5 and out["escalation_rate_incorrect"] == 1.0
    assert out["groundedness_correct"] == 0.75 and out["groundedness_incorrect"] == 0.0
