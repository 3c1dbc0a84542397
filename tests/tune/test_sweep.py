"""`rayrag tune --smoke` end to end on a slice of the demo corpus, with a tiny champion:
real Ray Tune (Optuna TPE, ASHA), real MLflow (one run per trial), real bundles and LoRA."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from rayrag.cli.main import app
from rayrag.config import load_config, resolve_config
from rayrag.tracking.model_registry import ModelRegistry
from rayrag.tracking.tracker import Tracker
from rayrag.tune.spec import load_tune_spec, tune_configs_path
from rayrag.tune.sweep import run_sweep
from tests.tiny import TINY_MODEL, demo_slice

pytestmark = [pytest.mark.slow, pytest.mark.integration]
# A tiny model's training knobs for the trials (the LoRA steps come from the space's smoke section).
TRIAL_SETTINGS = [
    o for o in TINY_MODEL if o.startswith(("train.max_graph_qa", "train.seq_len", "decoding."))
]


@pytest.fixture(scope="module")
def sweep(ray_local, demo_corpus, tmp_path_factory):
    from rayrag.pipelines.ingest import ingest
    from rayrag.pipelines.train import train

    root = tmp_path_factory.mktemp("tune")
    corpus = demo_slice(demo_corpus, root, n_questions=10)
    (root / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in corpus.questions))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    build = resolve_config("demo", [f"tracking.tracking_uri={uri}", *TINY_MODEL])
    tracker = Tracker(build.tracking, artifact_root=root / "artifacts")
    ingest(
        root / "corpus.jsonl",
        root / "champion-bundle",
        build.with_overrides(["tracking.enabled=false"]),
        engine="local",
        progress=lambda *_: None,
    )
    train(
        build, root / "champion", bundle=root / "champion-bundle", tracker=tracker, progress=False
    )
    assert ModelRegistry(tracker).version_for_alias("champion") is not None
    overrides = [f"tracking.tracking_uri={uri}", *TRIAL_SETTINGS]
    # The shipped space, with ASHA's grace period at the last report: no trial is stopped
    # early, so the seeded search's adapter trials all finish and the challenger is always
    # registered (which trials ASHA stops depends on the order trials finish in).
    space = yaml.safe_load(tune_configs_path().read_text())
    space["smoke"]["scheduler"]["grace_period"] = (
        load_tune_spec(tune_configs_path(), smoke=True).trial.reports + 1
    )
    space_path = root / "tune.yaml"
    space_path.write_text(yaml.safe_dump(space, sort_keys=False))
    # Through the command a user runs (in this process: the session's Ray is reused).
    result = CliRunner().invoke(
        app,
        [
            "tune",
            "--space",
            str(space_path),
            "--smoke",
            "--corpus",
            str(root / "corpus.jsonl"),
            "--dev",
            str(root / "qa.jsonl"),
            "--out",
            str(root / "sweep"),
            "--cache",
            str(root / "bundles"),
            *[arg for o in overrides for arg in ("--set", o)],
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # Tune's tables went to stderr: stdout is the summary
    assert "Trial status" not in result.stdout
    return SimpleNamespace(
        root=root,
        summary=summary,
        tracker=tracker,
        overrides=overrides,
        questions=corpus.questions,
        base=load_tune_spec(space_path, smoke=True).base(overrides),
    )


def test_smoke_sweep_runs_at_least_eight_trials_each_an_mlflow_run(sweep):
    summary = sweep.summary
    assert summary["trials"] >= 8
    assert {"trials", "searched", "mlflow_runs", "best_config", "best"} <= set(summary)
    assert summary["searched"] == ["chunk_size", "top_k", "lora_rank"]
    assert summary["completed"] >= 1 and summary["errored"] == 0
    assert summary["completed"] + summary["stopped_early"] == summary["trials"]
    runs = sweep.tracker.child_runs("tune", summary["mlflow_parent_run_id"])
    assert summary["mlflow_runs"] == len(runs) == summary["trials"]
    for run in runs:  # every trial: its knob values as params, its validation loss as a metric
        assert {"chunk_size", "top_k", "lora_rank"} <= set(run["params"])
        assert "val_loss" in run["metrics"]
        assert run["status"] == "FINISHED"
    with_objective = [r for r in runs if "objective" in r["metrics"]]
    assert len(with_objective) == summary["completed"]
    best_runs = [r for r in runs if r["tags"].get("best") == "true"]
    if summary["best"]["trial_id"] == "default":  # no trial beat what is served: no trial is tagged
        assert best_runs == []
    else:
        assert len(best_runs) == 1
        assert best_runs[0]["metrics"]["objective"] == pytest.approx(summary["best"]["objective"])
    # No question text in anything MLflow holds for the trials.
    texts = [q["question"] for q in sweep.questions]
    logged = json.dumps([[r["params"], r["tags"]] for r in runs])
    assert not any(t in logged for t in texts)


def test_best_config_validates_and_differs_from_the_default_where_better(sweep):
    summary = sweep.summary
    best = summary["best"]
    config = load_config(summary["best_config"])  # validated like every config
    assert (config.chunking.chunk_size, config.retrieval.top_k, config.lora.rank) == (
        best["chunk_size"],
        best["top_k"],
        best["lora_rank"],
    )
    default, best_trial = summary["default"], summary["best_trial"]
    assert default["objective"] is not None and best_trial is not None
    assert summary["improvement_over_default"] == pytest.approx(
        best_trial["objective"] - default["objective"]
    )
    if (
        summary["improvement_over_default"] > 0
    ):  # the sweep found better: its config is the recommendation
        assert best == best_trial
        assert any(best[k] != default[k] for k in summary["searched"])
    elif summary["improvement_over_default"] == 0:  # a tie keeps the trial
        assert best == best_trial
    else:  # it did not: the default, as served, stays the recommendation
        assert best["trial_id"] == "default" and best["objective"] == default["objective"]
        assert all(best[k] == default[k] for k in summary["searched"])
    assert best["objective"] == max(best_trial["objective"], default["objective"])
    parent = sweep.tracker.client().get_run(summary["mlflow_parent_run_id"])
    assert parent.data.tags["best"] == best["trial_id"]
    assert parent.data.tags["best_config_hash"] == config.config_hash
    artifacts = {a.path for a in sweep.tracker.client().list_artifacts(parent.info.run_id)}
    assert {"best.yaml", "sensitivity.json", "trials.json", "plots"} <= artifacts
    for png in ("objective_chunk_size_x_top_k.png", "objective_by_lora_rank.png"):
        assert (Path(summary["out"]) / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {row["knob"] for row in summary["sensitivity"]} == set(summary["searched"])
    assert {row["knob"] for row in summary["sensitivity_val_loss"]} == set(summary["searched"])


def test_the_best_adapter_trial_is_registered_as_challenger(sweep):
    summary = sweep.summary
    registry = ModelRegistry(sweep.tracker)
    runs = sweep.tracker.child_runs("tune", summary["mlflow_parent_run_id"])
    adapted = [r for r in runs if int(r["params"]["lora_rank"]) > 0 and "objective" in r["metrics"]]
    assert adapted and summary["stopped_early"] == 0  # the fixture's space stops no trial early
    top = max(r["metrics"]["objective"] for r in adapted)
    challenger = registry.version_for_alias("challenger")
    assert challenger is not None and challenger.version == summary["challenger"]["version"]
    assert challenger.version != registry.version_for_alias("champion").version
    assert float(challenger.tags["objective"]) == pytest.approx(top)
    assert int(challenger.tags["lora_rank"]) > 0
    assert (
        challenger.tags["won_sweep"]
        == str(summary["best"]["trial_id"] == summary["challenger"]["trial_id"]).lower()
    )
    # Its merged checkpoint is kept beside the winner's; every other trial's is cleaned up.
    kept = {p.name for p in (Path(summary["out"]) / "trials").iterdir()}
    assert summary["challenger"]["trial_id"] in kept
    assert kept <= {summary["challenger"]["trial_id"], summary["best"]["trial_id"]}
    local = registry.download("challenger")  # a plain checkpoint: the merged adapters
    from rayrag.generator.checkpoint import load_checkpoint

    assert load_checkpoint(local) is not None


def test_bundles_are_built_once_per_chunking_and_hit_by_every_trial(sweep):
    bundles = sweep.summary["bundles"]
    assert bundles["built"] == 2  # chunk_size 32 and 128; the default's 128 is the same bundle
    assert bundles["failed"] == 0
    assert bundles["trial_hits"] == sweep.summary["trials"]
    assert len(list((sweep.root / "bundles").iterdir())) == 2


def test_a_bad_trial_fails_alone_and_the_cache_is_reused(sweep):
    """A grid where one chunk_overlap is not below the chunk size: that trial errors with the
    config's message, the other completes; the cached bundle is reused, none built."""
    space = sweep.root / "bad.yaml"
    spec_tree = yaml.safe_load(tune_configs_path().read_text())
    spec_tree.pop("smoke")
    spec_tree["knobs"] = {
        "chunk_size": {"values": [32]},
        "chunk_overlap": {"values": [16, 40]},
        "top_k": {"values": [2]},
        "lora_rank": {"values": [0]},
    }
    spec_tree["search"] = {"algorithm": "grid", "num_samples": 1}
    spec_tree["trial"] = {
        "lora_steps": 2,
        "report_every": 2,
        "dev_questions": 4,
        "max_val_batches": 1,
        "batch_size": 2,
    }
    space.write_text(yaml.safe_dump(spec_tree))
    summary = run_sweep(
        load_tune_spec(space),
        out=sweep.root / "sweep-bad",
        cache=sweep.root / "bundles",
        corpus=sweep.root / "corpus.jsonl",
        dev=sweep.root / "qa.jsonl",
        overrides=sweep.overrides,
        tracker=sweep.tracker,
        progress=lambda *_: None,
    )
    assert summary["trials"] == 2 and summary["errored"] == 1 and summary["completed"] == 1
    assert summary["bundles"]["built"] == 0 and summary["bundles"]["reused"] >= 1
    assert summary["bundles"]["invalid_chunkings"] == 1
    assert summary["best_trial"]["chunk_overlap"] == 16
    runs = sweep.tracker.child_runs("tune", summary["mlflow_parent_run_id"])
    assert sorted(r["status"] for r in runs) == ["FAILED", "FINISHED"]
    assert len(summary["errors"]) == 1
    assert summary["errors"][0]["error"].startswith(
        "trial config is invalid: chunking: chunk_overlap must be < chunk_size, got 40 >= 32"
    )
