"""RAGConfig: shipped YAMLs validate, overrides apply, errors name key, value and flag."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rayrag.config import RAGConfig, configs_dir, load_config, resolve_config
from rayrag.errors import ConfigError

SHIPPED = [
    p
    for p in sorted(configs_dir().glob("*.yaml"))
    if p.name not in ("serve_config.yaml", "serve_llm_config.yaml", "tune.yaml")
]  # Serve deploy files (tests/serve/test_app.py, tests/test_deploy.py), the search space


def test_configs_dir_has_default_and_demo():
    names = {p.stem for p in SHIPPED}
    assert {"default", "demo"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_yaml_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, RAGConfig)
    assert len(cfg.config_hash) == 64


def test_override_applies_and_changes_hash():
    base = resolve_config("demo")
    changed = resolve_config("demo", ["chunking.chunk_size=100", "retrieval.fusion=weighted"])
    assert changed.chunking.chunk_size == 100
    assert changed.retrieval.fusion == "weighted"
    assert changed.config_hash != base.config_hash
    assert base.with_overrides(["chunking.chunk_size=100", "retrieval.fusion=weighted"]) == changed


def test_hash_is_stable_and_canonical():
    assert load_config(None).config_hash == RAGConfig().config_hash
    assert resolve_config("demo").config_hash == resolve_config("demo").config_hash


def test_config_is_frozen():
    cfg = RAGConfig()
    with pytest.raises(ValidationError):
        cfg.chunking.chunk_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "override, needle",
    [
        (
            "chunking.chunk_size=0",
            (
                "chunking.chunk_size: Input should be greater "
                "than 0, got 0 (--set chunking.chunk_size=0)"
            ),
        ),
        ("retrieval.top_k=-1", "retrieval.top_k"),
        ("retrieval.fusion=maybe", "got 'maybe'"),
        ("chunking.chunk_overlap=999", "chunk_overlap must be < chunk_size"),
        ("generator.n_heads=3", "divisible by n_heads"),
        ("chunking.nope=1", "unknown config key 'chunking.nope'"),
        ("nope.x=1", "unknown config section 'nope'"),
        ("chunking.chunk_size", "override must look like section.key=value"),
    ],
)
def test_bad_values_name_key_value_and_flag(override, needle):
    with pytest.raises(ConfigError) as info:
        resolve_config("demo", [override])
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_prepare_actor_pool_range_defaults_and_checks():
    ingest = resolve_config("demo").ingest
    assert (ingest.prepare_actors_min, ingest.prepare_actors_max) == (1, None)  # None: sized
    grown = resolve_config(
        "demo", ["ingest.prepare_actors_min=2", "ingest.prepare_actors_max=8"]
    ).ingest
    assert (grown.prepare_actors_min, grown.prepare_actors_max) == (2, 8)
    with pytest.raises(ConfigError) as info:
        resolve_config("demo", ["ingest.prepare_actors_min=3", "ingest.prepare_actors_max=2"])
    assert str(info.value) == (
        "ingest: prepare_actors_max must be >= prepare_actors_min, got 2 < 3 "
        "(--set ingest.prepare_actors_min=3)"
    )
    with pytest.raises(
        ConfigError,
        match=r"prepare_actors_min: .*greater than or equal to 1, "
        r"got 0 \(--set ingest.prepare_actors_min=0\)",
    ):
        resolve_config("demo", ["ingest.prepare_actors_min=0"])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("chunking: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("chunking:\n  chunk_sise: 10\n")
    with pytest.raises(ConfigError, match="unknown config key 'chunking.chunk_sise'"):
        load_config(unknown)


def test_flat_params_are_short_strings():
    params = RAGConfig().flat_params()
    assert params["chunking.chunk_size"] == "200"
    assert "governance.redaction.operators" in params
    assert all(isinstance(v, str) for v in params.values())


def test_training_hash_ignores_serving_and_retrieval_but_not_the_model():
    from rayrag.config import resolve_config

    base = resolve_config("demo")
    served = base.with_overrides(
        ["serve.port=9000", "retrieval.top_k=3", "decoding.max_new_tokens=5"]
    )
    assert served.config_hash != base.config_hash and served.training_hash == base.training_hash
    assert base.with_overrides(["generator.d_model=64"]).training_hash != base.training_hash


def test_chunk_size_beyond_what_the_embedder_reads_needs_max_seq_length():
    with pytest.raises(ConfigError) as info:
        resolve_config("demo", ["chunking.chunk_size=512"])
    assert str(info.value) == (
        "chunking.chunk_size 512 is longer than the embedder reads (256 tokens); "
        "set embedding.max_seq_length: 512 to embed whole chunks (--set chunking.chunk_size=512)"
    )
    long_chunks = resolve_config(
        "demo", ["chunking.chunk_size=512", "embedding.max_seq_length=512"]
    )
    assert long_chunks.chunking.chunk_size == long_chunks.embedding.max_seq_length == 512
    assert resolve_config("demo", ["chunking.chunk_size=256"]).embedding.max_seq_length is None
    with pytest.raises(
        ConfigError, match=r"embedding.max_seq_length: Input should be less than or equal to 512"
    ):
        resolve_config("demo", ["embedding.max_seq_length=1024"])


def test_max_seq_length_enters_the_ingest_fingerprint_only_when_set():
    from rayrag.pipelines.ingest import ingest_fingerprint

    base = resolve_config("demo")
    assert ingest_fingerprint(
        base.with_overrides(["embedding.num_threads=1"])
    ) == ingest_fingerprint(base)
    assert ingest_fingerprint(
        base.with_overrides(["embedding.max_seq_length=256"])
    ) != ingest_fingerprint(base)
