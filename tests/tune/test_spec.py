"""The search-space file, the trial's config and the objective: pure, no Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayrag.config import resolve_config
from rayrag.errors import ConfigError, DataError
from rayrag.tune.spec import ObjectiveSpec, load_tune_spec, tune_configs_path
from rayrag.tune.sweep import default_params
from rayrag.tune.trial import SweepPlan, TrialRunner, objective


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("smoke", [False, True])
def test_shipped_space_validates_and_its_keys_exist(smoke):
    spec = load_tune_spec(tune_configs_path(), smoke=smoke)
    assert spec.knob_names == ["chunk_size", "top_k", "lora_rank"]
    base = spec.base()
    spec.check_keys(base)
    for values in spec.bundle_variants():  # every chunking of the space is a valid config
        base.with_overrides(spec.overrides(values))
    if smoke:
        assert spec.search.num_samples >= 8
        assert spec.knobs["chunk_size"].values == (32, 128)
        assert spec.knobs["top_k"].values == (2, 4, 8)  # kept from the full space
    else:
        assert spec.knobs["chunk_size"].values == (128, 256, 512)
        assert spec.knobs["lora_rank"].values == (0, 4, 8, 16)
    assert spec.bundle_knobs() == ["chunk_size"]


def test_num_samples_flag_wins(tmp_path):
    assert load_tune_spec(tune_configs_path(), smoke=True, num_samples=3).search.num_samples == 3
    with pytest.raises(ConfigError, match="num_samples must be > 0"):
        load_tune_spec(tune_configs_path(), num_samples=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("knobs: {mystery: {values: [1]}}", "knob 'mystery' needs a key"),
        ("knobs: {top_k: {values: []}}", "knobs.top_k.values"),
        (
            "knobs: {top_k: {values: [2]}}\nobjective: {weights: {bleu: 1.0}}",
            "unknown objective metric 'bleu'",
        ),
        (
            "knobs: {top_k: {values: [2]}}\ntrial: {lora_steps: 4, report_every: 8}",
            "report_every must be <= lora_steps",
        ),
        ("knobs: {top_k: {values: [2]}}\nsearch: {algorithm: random}", "search.algorithm"),
        ("- a list", "must be a mapping"),
    ],
)
def test_bad_space_is_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_tune_spec(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_smoke_without_a_smoke_section(tmp_path):
    with pytest.raises(ConfigError, match="--smoke needs a `smoke:` section"):
        load_tune_spec(write(tmp_path, "knobs: {top_k: {values: [2]}}"), smoke=True)
    with pytest.raises(ConfigError, match="search space file not found"):
        load_tune_spec(tmp_path / "missing.yaml")


def test_unknown_key_is_caught_before_any_work(tmp_path):
    spec = load_tune_spec(write(tmp_path, "knobs: {x: {key: retrieval.topk, values: [2]}}"))
    with pytest.raises(ConfigError, match="unknown config key 'retrieval.topk'"):
        spec.check_keys(spec.base())


def test_overrides_and_default_params(tmp_path):
    spec = load_tune_spec(
        write(
            tmp_path,
            "knobs: {chunk_size: {values: [64]}, top_k: {values: [3]}, "
            "lora_rank: {values: [4]}, temperature: {values: [0.7]}, "
            "retrieval_mode: {values: [dense]}}",
        )
    )
    params = {
        "chunk_size": 64,
        "top_k": 3,
        "lora_rank": 4,
        "temperature": 0.7,
        "retrieval_mode": "dense",
    }
    config = spec.base().with_overrides(spec.overrides(params))
    assert (
        config.chunking.chunk_size,
        config.retrieval.top_k,
        config.lora.rank,
        config.decoding.temperature,
        config.retrieval.mode,
    ) == (64, 3, 4, 0.7, "dense")
    base = spec.base()
    assert default_params(spec, base) == {
        "chunk_size": base.chunking.chunk_size,
        "top_k": base.retrieval.top_k,
        "lora_rank": 0,
        "temperature": base.decoding.temperature,
        "retrieval_mode": base.retrieval.mode,
    }


def test_a_bad_combination_fails_the_trial_with_the_key_named(tmp_path):
    spec = load_tune_spec(
        write(tmp_path, "knobs: {chunk_size: {values: [32]}, chunk_overlap: {values: [40]}}")
    )
    plan = SweepPlan(
        spec=spec,
        base_config=resolve_config("demo").model_dump(mode="json"),
        corpus_digest="x",
        bundles={},
        dev=str(tmp_path / "qa.jsonl"),
        base_model=str(tmp_path),
        out=str(tmp_path),
        groups=("public",),
    )
    runner = TrialRunner(plan, {"chunk_size": 32, "chunk_overlap": 40}, "t0")
    with pytest.raises(ConfigError) as info:
        runner.config()
    assert str(info.value).startswith(
        "trial config is invalid: chunking: chunk_overlap must be < chunk_size, got 40 >= 32"
    )
    ok = TrialRunner(plan, {"chunk_size": 32, "chunk_overlap": 8}, "t1").config()
    with pytest.raises(DataError, match="no pre-built bundle"):  # never built inside a trial
        TrialRunner(plan, {"chunk_size": 32, "chunk_overlap": 8}, "t1").bundle(ok)
    # the plan round-trips through its file
    assert SweepPlan.load(plan.save(tmp_path / "plan.json")) == plan


def test_objective_by_hand():
    spec = ObjectiveSpec(
        weights={"recall_at_5": 0.3, "answer_f1": 0.6, "answer_em": 0.1}, latency_penalty_per_s=0.05
    )
    metrics = {"recall_at_5": 0.8, "answer_f1": 0.5, "answer_em": 0.25, "p50_ms": 400.0}
    assert objective(metrics, spec) == pytest.approx(
        0.3 * 0.8 + 0.6 * 0.5 + 0.1 * 0.25 - 0.05 * 0.4
    )
    assert objective({"recall_at_5": 1.0, "answer_f1": None}, spec) == pytest.approx(0.3)
