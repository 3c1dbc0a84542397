"""registry: checkpoints, aliases, promotion/rollback,
prompts and datasets on a real SQLite store."""

from __future__ import annotations

import json

import pytest
import torch

from rayrag.config import GeneratorConfig, TrackingConfig, resolve_config
from rayrag.errors import ConfigError, ModelError
from rayrag.generator.checkpoint import save_checkpoint
from rayrag.generator.model import MoETransformer
from rayrag.generator.prompt import PROMPT_TEMPLATE
from rayrag.generator.reader import weights_digest
from rayrag.tracking.model_registry import ModelRegistry, resolve_model
from rayrag.tracking.tracker import Tracker, source_git_commit

TEMPLATE = "<bos>context:{passages}\nquestion: {question}\nanswer:"
PLANTED = "ZEBRA-PLANTED-7731"  # a string only the dataset file holds


def _config(root, **overrides) -> TrackingConfig:
    return TrackingConfig(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}", model_cache=str(root / "cache"), **overrides
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module: creating its schema costs seconds, so tests share it
    and keep apart by model name, activity and tags."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def tracker(store):
    return Tracker(_config(store), artifact_root=store / "artifacts")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny MoE checkpoints with different weights."""
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
    root = tmp_path_factory.mktemp("ckpts")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(
            save_checkpoint(MoETransformer(cfg), root / f"gen-{seed}") or root / f"gen-{seed}"
        )
    return paths


def test_register_promote_rollback_lifecycle(tracker, checkpoints):
    registry = ModelRegistry(tracker, "lifecycle")
    first = registry.register(checkpoints[0], tags={"trained_on": "demo"})
    with tracker.start_run("train") as train_run:  # registering inside an active run works
        second = registry.register(checkpoints[1], run_id=train_run.run_id, description="seed 1")
        third = registry.register(checkpoints[1])
    assert second.run_id == train_run.run_id and third.run_id not in (None, train_run.run_id)
    assert tracker.client().get_run(third.run_id).data.tags["activity"] == "registry"
    assert (first.version, second.version) == (1, 2)
    assert first.aliases == ["champion"] and second.aliases == []
    assert first.model_digest == f"gen-0@{weights_digest(checkpoints[0])}"
    assert (
        first.tags["trained_on"] == "demo" and first.run_id and first.source.endswith("/checkpoint")
    )
    # pinned to the version
    assert first.tags["prompt_version"] == tracker.prompt_version(PROMPT_TEMPLATE)
    assert [v.version for v in registry.versions()] == [3, 2, 1]

    assert registry.set_challenger(2).aliases == ["challenger"]
    with pytest.raises(ConfigError, match="is the champion"):
        registry.set_challenger(1)

    promoted = registry.promote(2, who="ana", why="better recall")
    assert promoted.aliases == ["champion"]  # the challenger alias went with the promotion
    assert (
        promoted.tags["promoted_by"] == "ana" and promoted.tags["promoted_why"] == "better recall"
    )
    assert promoted.tags["promoted_at"].endswith("+00:00")
    assert registry.version_for_alias("challenger") is None
    assert registry._history() == [1]

    back = registry.rollback(who="bo", why="latency regression")
    assert back.version == 1 and back.aliases == ["champion"]
    assert back.tags["rolled_back_by"] == "bo" and back.tags["rolled_back_from"] == "2"
    model = tracker.client().get_registered_model(registry.name)
    record = json.loads(model.tags["last_rollback"])
    assert (record["from"], record["to"], record["who"], record["why"]) == (
        2,
        1,
        "bo",
        "latency regression",
    )
    with pytest.raises(ConfigError, match="no previous champion to roll back to"):
        registry.rollback(who="bo", why="again")
    with pytest.raises(ConfigError, match="no version 9"):
        registry.get(9)


def test_register_rejects_a_directory_without_config(tracker, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        ModelRegistry(tracker).register(tmp_path / "empty")
    with pytest.raises(ConfigError, match="tracking is disabled"):
        ModelRegistry(Tracker(TrackingConfig(enabled=False))).versions()
    with pytest.raises(ConfigError, match="bad model URI"):
        resolve_model("models:/rayrag-generator", tracker.config)


def test_resolve_model_downloads_the_champion_once(tracker, checkpoints):
    ModelRegistry(tracker).register(checkpoints[0])
    config = tracker.config
    local = resolve_model("models:/rayrag-generator@champion", config)
    assert (local / "config.json").is_file() and local.parent.name == "v1"
    # the Reader's model_version equals the registered digest
    assert local.name == checkpoints[0].name
    assert weights_digest(local) == weights_digest(checkpoints[0])
    assert f"{local.name}@{weights_digest(local)}" == ModelRegistry(tracker).get(1).model_digest
    assert resolve_model("models:/rayrag-generator/1", config) == local  # cached, same dir
    assert not [p for p in local.parent.iterdir() if p.name.startswith(".")]  # no staging left
    assert resolve_model(str(checkpoints[1]), config) == checkpoints[1]
    with pytest.raises(ConfigError, match="models:/rayrag-generator@nope"):
        resolve_model("models:/rayrag-generator@nope", config)
    with pytest.raises(ConfigError, match="models:/no-such-model/3"):
        resolve_model("models:/no-such-model/3", config)


def test_prompt_registration_is_idempotent_and_a_pin_must_exist(store):
    tracker = Tracker(_config(store))
    # registering models above registered the reader's prompt
    first = tracker.register_prompt(TEMPLATE)
    assert tracker.register_prompt(TEMPLATE) == first
    assert tracker.prompt_version(TEMPLATE) == f"rayrag-reader/{first}"
    assert tracker.register_prompt(TEMPLATE + " ") == first + 1
    assert tracker.load_prompt(first) == TEMPLATE
    pinned = Tracker(_config(store, prompt_version=first))
    assert pinned.prompt_version(TEMPLATE) == f"rayrag-reader/{first}"
    # a pinned version is served as the registry holds it, whatever this build's template
    assert pinned.prompt_version("another template") == f"rayrag-reader/{first}"
    missing = Tracker(_config(store, prompt_version=first + 50))
    with pytest.raises(ConfigError, match=f"prompt rayrag-reader has no version {first + 50}"):
        missing.prompt_version(TEMPLATE)
    disabled = Tracker(TrackingConfig(enabled=False))
    assert disabled.prompt_version(TEMPLATE) == "rayrag-reader/unregistered"


def test_last_run_filters_by_tags(tracker):
    for split, score in (("dev", 0.5), ("test", 0.7), ("dev", 0.6)):
        with tracker.start_run("gate", tags={"split": split, "model": "it's-v1"}) as run:
            run.log_metrics({"recall_at_5": score})
    newest_dev = tracker.last_run("gate", {"split": "dev", "model": "it's-v1"})
    assert newest_dev["metrics"] == {"recall_at_5": 0.6} and newest_dev["tags"]["split"] == "dev"
    assert isinstance(newest_dev["start_time"], int)
    assert tracker.last_run("gate", {"split": "test"})["metrics"]["recall_at_5"] == 0.7
    assert tracker.last_run("gate", {"split": "train"}) is None
    assert tracker.last_run("never-ran") is None


def test_dataset_is_logged_by_digest_never_content(tracker, store, tmp_path):
    import hashlib

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"doc_id": "d1", "text": PLANTED}) + "\n", encoding="utf-8")
    expected = hashlib.sha256(corpus.read_bytes()).hexdigest()
    with tracker.start_run("ingest", resolve_config("demo")) as run:
        assert run.log_dataset(corpus, "corpus", "ingest") == expected
        run_id = run.run_id
    logged = tracker.client().get_run(run_id)
    assert logged.data.tags["dataset.ingest.digest"] == expected
    [dataset_input] = logged.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert (
        dataset.name == "corpus"
        and expected.startswith(dataset.digest)
        and len(dataset.digest) >= 16
    )
    assert str(corpus.resolve()) in dataset.source
    assert PLANTED not in repr(logged.inputs) and PLANTED not in (dataset.profile or "")
    db = (store / "mlflow.db").read_bytes()
    assert PLANTED.encode() not in db
    disabled = Tracker(TrackingConfig(enabled=False))
    with disabled.start_run("ingest") as off:
        assert off.log_dataset(corpus, "corpus", "ingest") == expected


def test_runs_carry_the_code_version(tracker):
    import rayrag

    with tracker.start_run("ingest") as run:
        run_id = run.run_id
    tags = tracker.client().get_run(run_id).data.tags
    assert tags["rayrag_version"] == rayrag.__version__
    import subprocess
    from pathlib import Path

    package = Path(rayrag.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's clean clone is one): the tag must be its HEAD
        assert source_git_commit() == head.stdout.strip() == tags["mlflow.source.git.commit"]
    else:  # an installed copy: no commit to claim, and no tag
        assert source_git_commit() is None and "mlflow.source.git.commit" not in tags


def test_figures_and_tables_become_artifacts(tracker):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    with tracker.start_run("eval") as run:
        run.log_figure(fig, "plots/curve.png")
        run.log_table([{"slice": "a", "recall": 0.5}], "tables/slices.json")
        run_id = run.run_id
    plt.close(fig)
    client = tracker.client()
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/curve.png"]
    local = client.download_artifacts(run_id, "tables/slices.json")
    assert json.loads(open(local, encoding="utf-8").read()) == [{"slice": "a", "recall": 0.5}]
