"""The moe-quality bench at its quick size: output shape, FLOPs and parameter bookkeeping, and
that the Ray run (one process per variant) trains exactly what one process does.

No assertion on which model wins: 12 toy steps say nothing about the claim."""

from __future__ import annotations

import json

import pytest
import torch

from rayrag.bench import moe_quality

MODELS = {"moe", "dense_active", "dense_total"}
TIMINGS = {"train_tokens_per_s", "train_seconds"}


@pytest.fixture(scope="module")
def result() -> dict:
    """In-process (no Ray): the reference the Ray run must reproduce."""
    # JSON-able end to end
    return json.loads(json.dumps(moe_quality.run(quick=True, parallel=False)))


def test_reports_every_model_and_the_ratios(result):
    assert (
        result["bench"] == "moe-quality"
        and result["quick"] is True
        and result["torch_threads"] == 1
    )
    assert set(result["models"]) == MODELS
    assert set(result["ratios"]) == {
        "moe_vs_dense_active_val_loss",
        "moe_vs_dense_total_val_loss",
        "moe_vs_dense_active_flops",
    }
    assert all(v > 0 for v in result["ratios"].values())
    steps, every = result["plan"]["steps"], result["plan"]["eval_every"]
    for report in result["models"].values():
        assert report["val_loss"] > 0 and report["train_loss_last_step"] > 0
        assert report["train_tokens_per_s"] > 0
        assert [step for step, _ in report["val_curve"]] == list(range(every, steps + 1, every))
        assert report["val_curve"][-1][1] == report["val_loss"]
    assert result["corpus"]["documents"]["val"] > 0 and result["corpus"]["train_tokens"] > 0
    assert (
        result["train_tokens_seen"]
        == steps * result["plan"]["batch_size"] * result["plan"]["seq_len"]
    )


def test_flops_match_the_dense_active_model_and_parameters_are_ordered(result):
    models = result["models"]
    assert abs(result["ratios"]["moe_vs_dense_active_flops"] - 1) < 0.1
    flops = {name: m["train_flops_per_token"]["total"] for name, m in models.items()}
    assert flops["dense_total"] > 1.1 * flops["moe"]
    total = {name: m["params"]["total"] for name, m in models.items()}
    active = {name: m["params"]["active"] for name, m in models.items()}
    assert total["dense_active"] < total["moe"]
    assert abs(total["moe"] / total["dense_total"] - 1) < 0.05
    assert abs(active["moe"] / active["dense_active"] - 1) < 0.05
    assert active["moe"] < total["moe"] and active["dense_total"] == total["dense_total"]
    assert models["dense_active"]["ffn_dim"] == 2 * models["moe"]["ffn_dim"]
    assert models["dense_total"]["ffn_dim"] == 8 * models["moe"]["ffn_dim"]


def test_routing_stats_describe_the_moe_layers(result):
    routing = result["routing"]
    assert len(routing["layers"]) == result["plan"]["n_layers"]
    for layer in routing["layers"]:
        assert 0 <= layer["entropy"] <= 1 and layer["max_violation"] >= 0
        assert len(layer["token_share"]) == 8 and abs(sum(layer["token_share"]) - 1) < 1e-3
        assert 0 <= layer["train_drop_rate_last_step"] < 1


def test_shared_parts_start_identical_and_dense_variants_have_one_expert():
    plan = {**moe_quality.QUICK, "n_layers": 1}
    models = moe_quality.build_models(plan, vocab_size=300, seed=0)
    reference = models["moe"].state_dict()
    for name, model in models.items():
        for key, value in model.state_dict().items():
            if ".block_sparse_moe." not in key:
                assert torch.equal(value, reference[key]), (name, key)
    assert models["dense_active"].config.n_experts == models["dense_total"].config.n_experts == 1


def test_documents_split_whole_and_windows_keep_the_stream():
    train, val = moe_quality.split_documents([f"doc {i}" for i in range(20)], 0.1, seed=0)
    assert len(val) == 2 and not set(train) & set(val) and len(train) + len(val) == 20
    windows = moe_quality.pack_windows([[5, 6, 7], [8, 9]], eos_id=2, seq_len=3)
    assert windows.tolist() == [[5, 6, 7], [2, 8, 9]]  # the last <eos> is a short tail, dropped


@pytest.mark.slow
def test_ray_processes_train_exactly_what_one_process_does(ray_local, result):
    threads = torch.get_num_threads()
    on_ray = json.loads(json.dumps(moe_quality.run(quick=True)))
    assert torch.get_num_threads() == threads  # the driver's threads are left alone
    assert on_ray["parallel"]["ray"] and on_ray["parallel"]["processes"] == 3
    assert on_ray["parallel"]["submitted"][0] == "dense_total"  # the longest first
    for name in MODELS:  # one thread each, no randomness: bit-identical curves, not merely close
        strip = {k: v for k, v in on_ray["models"][name].items() if k not in TIMINGS}
        assert strip == {k: v for k, v in result["models"][name].items() if k not in TIMINGS}, name
    assert on_ray["routing"] == result["routing"] and on_ray["ratios"] == result["ratios"]
    assert ray_local.is_initialized()  # a Ray it did not start is left running
