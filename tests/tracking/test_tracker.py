"""tracking: the one door to MLflow logs the config three ways, on a real SQLite store."""

from __future__ import annotations

from rayrag.config import TrackingConfig, resolve_config
from rayrag.tracking.tracker import Tracker


def test_run_logs_params_yaml_and_hash(tmp_path):
    cfg = resolve_config("demo")
    tracker = Tracker(
        TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
        artifact_root=tmp_path / "artifacts",
    )
    with tracker.start_run("ingest", cfg, tags={"bundle_id": "b-1"}) as run:
        run.log_metrics({"chunks": 12, "documents": 3})
        run_id = run.run_id
    runs = tracker.find_runs("ingest")
    assert len(runs) == 1 and runs[0]["run_id"] == run_id
    row = runs[0]
    assert row["tags.config_hash"] == cfg.config_hash
    assert row["tags.bundle_id"] == "b-1"
    assert row["params.chunking.chunk_size"] == str(cfg.chunking.chunk_size)
    assert row["metrics.chunks"] == 12
    import mlflow

    files = [a.path for a in mlflow.MlflowClient(tracker.tracking_uri).list_artifacts(run_id)]
    assert "config.yaml" in files


def test_artifacts_default_beside_the_sqlite_store_not_in_the_working_folder(tmp_path, monkeypatch):
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # MLflow's own default would be ./mlruns here
    tracker = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{store / 'mlflow.db'}"))
    with tracker.start_run("readiness", resolve_config("demo")) as run:
        run.log_text("no content", "report.md")
    assert list(elsewhere.iterdir()) == []
    logged = sorted(p.name for p in (store / "mlartifacts").rglob("*") if p.is_file())
    assert "report.md" in logged and "config.yaml" in logged


def test_disabled_tracking_writes_nothing(tmp_path):
    tracker = Tracker(TrackingConfig(enabled=False, tracking_uri=f"sqlite:///{tmp_path / 'x.db'}"))
    with tracker.start_run("ingest", resolve_config("demo")) as run:
        run.log_metrics({"chunks": 1})
        assert run.run_id is None
    assert not (tmp_path / "x.db").exists()


def test_a_tracker_does_not_leak_its_store_into_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'a.db'}"))
    first.warm_up()
    assert "MLFLOW_TRACKING_URI" not in __import__("os").environ
    second = Tracker(TrackingConfig(), workdir=tmp_path / "elsewhere")
    assert second.tracking_uri == f"sqlite:///{(tmp_path / 'elsewhere').resolve() / 'mlflow.db'}"


def test_run_names_say_what_the_run_is():
    from rayrag.tracking.tracker import compose_run_name

    demo = resolve_config("demo")
    assert compose_run_name("eval", demo, "hybrid", "rayrag-generator", 1) == (
        "eval demo hybrid rayrag-generator v1"
    )
    assert compose_run_name("eval", demo, "hybrid", "rayrag-generator", "v3") == (
        "eval demo hybrid rayrag-generator v3"
    )
    assert compose_run_name("readiness") == "readiness - - - v-"
    # identifiers only: spaces and anything else a text could carry are dropped, parts are cut
    assert compose_run_name("eval", demo, "Who acquired it?", "a b'c", None) == (
        "eval demo Whoacquiredit abc v-"
    )
    long_name = compose_run_name("eval", demo, "x" * 200)
    assert long_name.split()[2] == "x" * 48


def test_a_run_without_a_name_is_named_for_its_activity_and_config(tmp_path):
    config = resolve_config("demo", [f"tracking.tracking_uri=sqlite:///{tmp_path / 'm.db'}"])
    tracker = Tracker(config.tracking)
    with tracker.start_run("ingest", config) as run:
        pass
    with tracker.start_run("eval", config, run_name="eval demo bm25 - v-") as named:
        pass
    client = tracker.client()
    assert client.get_run(run.run_id).info.run_name == "ingest demo - - v-"
    assert client.get_run(named.run_id).info.run_name == "eval demo bm25 - v-"
    made = tracker.create_run("registry")
    assert client.get_run(made).info.run_name == "registry - - - v-"
