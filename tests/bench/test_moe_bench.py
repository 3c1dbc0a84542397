"""The moe bench's pieces at toy sizes: output shape and fields only (no timing assertions)."""

from __future__ import annotations

import json
import math

import torch

from rayrag.bench import moe
from rayrag.generator.moe import MoELayer

COMPETITORS = {"ours", "hf_loop", "hf_grouped_mm", "dense"}
HF = {"hf_loop", "hf_grouped_mm"}


def test_bench_config_reports_every_competitor_and_agrees_with_the_hf_loop():
    result = moe.bench_config(n_experts=4, d_model=32, ffn_dim=64, tokens=64, rounds=1)
    assert (
        set(result["tokens_per_s"])
        == set(result["median_s"])
        == set(result["cpu_tokens_per_s"])
        == COMPETITORS
    )
    assert all(v > 0 for v in result["tokens_per_s"].values())
    assert result["dispatch"] in ("grouped_mm", "loop")
    assert result["outputs_match"] == result["input_grads_match"] == {name: True for name in HF}
    assert set(result["max_abs_diff"]) == HF and all(
        v < 1e-4 for v in result["max_abs_diff"].values()
    )
    # HF's own eager MixtralExperts, same weights and routing
    assert result["max_abs_diff_hf_mixtral_eager"] < 1e-4


def test_the_match_check_fails_when_the_hf_loop_computes_something_else(monkeypatch):
    class Perturbed(moe.HFLoopExperts):
        def __init__(self, experts):
            super().__init__(experts)
            with torch.no_grad():
                self.down[0].add_(0.1)

    monkeypatch.setattr(moe, "HFLoopExperts", Perturbed)
    result = moe.bench_config(n_experts=2, d_model=16, ffn_dim=32, tokens=64, rounds=1)
    assert result["outputs_match"] == {"hf_loop": False, "hf_grouped_mm": True}
    assert result["max_abs_diff"]["hf_loop"] > 1e-3


def test_hf_loop_equals_hf_mixtral_experts_and_trains_its_own_per_expert_weights():
    torch.manual_seed(3)
    layer = MoELayer(16, 32, n_experts=6, top_k=2).eval()
    x = torch.randn(5, 16)  # few tokens: some of the 6 experts may go unused
    weights, indices, _ = layer.gate(x)
    loop = moe.HFLoopExperts(layer.experts)
    y = loop(x, weights, indices)
    torch.testing.assert_close(y, moe.hf_experts(layer)(x, indices, weights), atol=1e-6, rtol=1e-5)
    y.sum().backward()
    hit = set(indices.unique().tolist())
    assert [loop.gate_up[e].grad is not None for e in range(6)] == [e in hit for e in range(6)]
    assert layer.experts.w1.grad is None  # its own copies, not views of the layer's stack


def test_run_returns_the_documented_ratios(monkeypatch):
    monkeypatch.setattr(moe, "QUICK", {"d_model": 32, "ffn_dim": 64, "tokens": 128, "rounds": 1})
    monkeypatch.setenv("RAYRAG_BENCH_THREADS", "1")
    threads = torch.get_num_threads()
    result = json.loads(json.dumps(moe.run(quick=True)))
    assert torch.get_num_threads() == threads  # restored
    assert result["bench"] == "moe" and result["quick"] is True and result["torch_threads"] == 1
    assert set(result["configs"]) == {"e8", "e64"}
    assert all(
        all(c["outputs_match"].values()) and all(c["input_grads_match"].values())
        for c in result["configs"].values()
    )
    assert set(result["ratios"]) == {
        f"ours_vs_{other}_{e}{cpu}"
        for other in ("hf_loop", "hf_grouped_mm", "dense")
        for e in ("e8", "e64")
        for cpu in ("", "_cpu")
    }
    assert all(math.isfinite(v) and v > 0 for v in result["ratios"].values())
