"""tracking against a real `mlflow server`: what rayrag logs is there over the REST API.

The SQLite tests prove the logic; this one proves the deployment shape the README's cluster section
names (a tracking server with proxied artifacts), where every call crosses HTTP and an artifact
URI is `mlflow-artifacts:/...` rather than a local path.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from rayrag.config import GeneratorConfig, TrackingConfig, resolve_config
from rayrag.generator.checkpoint import save_checkpoint
from rayrag.generator.model import MoETransformer
from rayrag.generator.reader import weights_digest
from rayrag.tracking.model_registry import ModelRegistry, resolve_model
from rayrag.tracking.tracker import Tracker, source_git_commit

pytestmark = [pytest.mark.slow, pytest.mark.integration]
STARTUP_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and its workers (its own process group), harder if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "wb")
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {STARTUP_SECONDS}s")
            time.sleep(0.5)
        yield url, root
    finally:
        _stop(process)
        log.close()


def _checkpoint(root: Path, seed: int) -> Path:
    cfg = GeneratorConfig(
        vocab_size=64,
        d_model=16,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        ffn_dim=24,
        n_experts=2,
        experts_per_token=1,
        max_seq_len=32,
        adaptive_softmax_cutoffs=(),
    )
    torch.manual_seed(seed)
    path = root / f"gen-{seed}"
    save_checkpoint(MoETransformer(cfg), path)
    return path


def _kv(items: list[dict]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in items}


def test_runs_models_and_aliases_are_visible_over_rest(server, tmp_path):
    url, _ = server
    cfg = resolve_config("demo")
    config = TrackingConfig(tracking_uri=url, model_cache=str(tmp_path / "cache"))
    tracker = Tracker(config)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"doc_id": "d1", "text": "SECRET-PLANTED-42"}\n', encoding="utf-8")
    with tracker.start_run("eval", cfg, tags={"split": "dev"}) as run:
        run.log_metrics({"recall_at_5": 0.75})
        run.log_table([{"slice": "short", "recall_at_5": 0.8}], "tables/slices.json")
        corpus_sha = run.log_dataset(corpus, "corpus", "eval")
        run_id = run.run_id

    registry = ModelRegistry(tracker)
    first, second = (registry.register(_checkpoint(tmp_path, seed)) for seed in (0, 1))
    registry.promote(second.version, who="ana", why="better")
    registry.rollback(who="bo", why="regression")

    api = httpx.Client(base_url=f"{url}/api/2.0/mlflow", timeout=30)
    experiment = api.get(
        "/experiments/get-by-name", params={"experiment_name": "rayrag-eval"}
    ).json()
    found = api.post(
        "/runs/search",
        json={
            "experiment_ids": [experiment["experiment"]["experiment_id"]],
            "filter": f"tags.config_hash = '{cfg.config_hash}'",
        },
    ).json()["runs"]
    assert [r["info"]["run_id"] for r in found] == [run_id]
    data = found[0]["data"]
    params, tags, metrics = _kv(data["params"]), _kv(data["tags"]), _kv(data["metrics"])
    assert params["chunking.chunk_size"] == str(cfg.chunking.chunk_size)
    assert tags["config_hash"] == cfg.config_hash and tags["split"] == "dev"
    assert tags["dataset.eval.digest"] == corpus_sha
    if source_git_commit() is not None:
        assert tags["mlflow.source.git.commit"] == source_git_commit()
    assert metrics["recall_at_5"] == 0.75
    datasets = found[0]["inputs"]["dataset_inputs"]
    assert [d["dataset"]["name"] for d in datasets] == ["corpus"]
    assert "SECRET-PLANTED-42" not in json.dumps(found)

    listed = api.get("/artifacts/list", params={"run_id": run_id}).json()["files"]
    assert {"config.yaml", "tables"} <= {f["path"] for f in listed}

    model = api.get("/registered-models/get", params={"name": "rayrag-generator"}).json()[
        "registered_model"
    ]
    assert {a["alias"]: a["version"] for a in model["aliases"]} == {"champion": "1"}
    model_tags = _kv(model["tags"])
    assert model_tags["champion_history"] == ""
    assert json.loads(model_tags["last_rollback"])["to"] == 1
    champion = api.get(
        "/registered-models/alias", params={"name": "rayrag-generator", "alias": "champion"}
    ).json()["model_version"]
    assert champion["version"] == "1"
    assert _kv(champion["tags"])["model_digest"] == first.model_digest
    assert _kv(champion["tags"])["rolled_back_by"] == "bo"
    versions = api.get(
        "/model-versions/search", params={"filter": "name='rayrag-generator'"}
    ).json()
    assert sorted(v["version"] for v in versions["model_versions"]) == ["1", "2"]
    assert (
        _kv(next(v for v in versions["model_versions"] if v["version"] == "2")["tags"])[
            "promoted_by"
        ]
        == "ana"
    )

    local = resolve_model("models:/rayrag-generator@champion", config)
    assert weights_digest(local) == first.model_digest.rsplit("@", 1)[1]
