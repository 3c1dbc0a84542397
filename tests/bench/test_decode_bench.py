"""The decode bench at a toy size: the shape of its output and the cache/recompute agreement."""

from __future__ import annotations

import torch

from rayrag.bench import decode

TINY_SHAPE = dict(
    vocab_size=300,
    d_model=32,
    n_layers=1,
    n_heads=4,
    n_kv_heads=2,
    ffn_dim=48,
    n_experts=4,
    experts_per_token=2,
    adaptive_softmax_cutoffs=(50, 150),
)


def test_bench_reports_both_batches_ratios_and_identical_tokens(monkeypatch):
    monkeypatch.setattr(decode, "DEMO_SHAPE", TINY_SHAPE)
    monkeypatch.setattr(decode, "QUICK", {"new_tokens": 4, "rounds": 1})
    monkeypatch.setenv("RAYRAG_BENCH_THREADS", "1")
    threads = torch.get_num_threads()
    result = decode.run(quick=True)
    assert torch.get_num_threads() == threads  # restored
    assert result["bench"] == "decode" and result["quick"] is True and result["new_tokens"] == 4
    assert result["identical"] is True and result["torch_threads"] == 1
    assert set(result["batches"]) == {"b1", "b4"}
    assert result["batches"]["b4"]["prompt_tokens"] == [64, 60, 56, 52]
    for batch in result["batches"].values():
        assert (
            set(batch["tokens_per_s"]) == {"kv_cache", "recompute"} and batch["identical"] is True
        )
        assert all(v > 0 for v in batch["cpu_median_s"].values())
    assert set(result["ratios"]) == {
        "kv_cache_vs_recompute",
        "kv_cache_vs_recompute_b1",
        "kv_cache_vs_recompute_b4",
        "kv_cache_vs_recompute_cpu_b1",
        "kv_cache_vs_recompute_cpu_b4",
    }
    assert result["ratios"]["kv_cache_vs_recompute"] == result["ratios"]["kv_cache_vs_recompute_b1"]
    assert all(isinstance(v, float) and v > 0 for v in result["ratios"].values())
