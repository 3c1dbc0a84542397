"""The moe bench's pieces at toy sizes: output shape and fields only (no timing assertions)."""

from __future__ import annotations

import json

from rayrag.bench import moe


def test_bench_config_reports_every_competitor_and_agrees_with_naive():
    result = moe.bench_config(n_experts=4, d_model=32, ffn_dim=64, tokens=64, rounds=1)
    assert set(result["tokens_per_s"]) == set(result["median_s"]) == set(result["cpu_tokens_per_s"]) \
        == {"ours", "naive", "dense", "hf"}
    assert all(v > 0 for v in result["tokens_per_s"].values())
    assert result["dispatch"] in ("grouped_mm", "loop")
    assert result["max_abs_diff_ours_naive"] < 1e-4
    assert result["max_abs_diff_ours_hf"] < 1e-4  # HF's own MixtralExperts, same weights and routing


def test_run_returns_the_documented_ratios(monkeypatch):
    monkeypatch.setattr(moe, "QUICK", {"d_model": 32, "ffn_dim": 64, "tokens": 128, "rounds": 1})
    monkeypatch.setenv("RAYRAG_BENCH_THREADS", "1")
    result = json.loads(json.dumps(moe.run(quick=True)))
    assert result["bench"] == "moe" and result["quick"] is True and result["torch_threads"] == 1
    assert set(result["configs"]) == {"e8", "e64"}
    assert {"ours_vs_naive_e64", "ours_vs_naive_e8", "ours_vs_dense_e8", "ours_vs_dense_e8_cpu",
            "ours_vs_hf_e64"} <= set(result["ratios"])
    assert all(v > 0 for v in result["ratios"].values())

