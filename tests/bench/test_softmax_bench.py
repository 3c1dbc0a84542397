"""The softmax bench at toy sizes: its Zipf data and the shape of its output (no timings)."""

from __future__ import annotations

import torch

from rayrag.bench import softmax


def test_zipf_tokens_follow_the_rank_frequencies_through_a_permutation():
    data = softmax.ZipfTokens(vocab_size=500, d_model=8, seed=1)
    assert torch.equal(data.token_of_rank.sort().values, torch.arange(500))
    hidden, targets = data.sample(4000)
    assert hidden.shape == (4000, 8) and targets.shape == (4000,)
    counts = torch.bincount(targets, minlength=500)[data.token_of_rank]  # by rank
    assert counts[0] > counts[1] > counts[10:20].float().mean() > counts[400:].float().mean()
    shares = data.cluster_shares((50, 200))
    assert len(shares) == 3 and abs(sum(shares) - 1.0) < 1e-2 and shares[0] > shares[1]


def test_bench_reports_ratios_and_expansions_at_a_toy_size():
    result = softmax.bench(
        vocab_size=600,
        d_model=32,
        cutoffs=(50, 200, 400),
        train_tokens=64,
        train_rounds=1,
        decode_batch=4,
        decode_rounds=2,
        warm_steps=5,
        warm_batch=32,
    )
    assert set(result["ratios"]) == {"train_step", "greedy_decode_step"}
    assert all(isinstance(v, float) for v in result["ratios"].values())
    assert set(result["p50_ms"]) == {"train_step", "greedy_decode_step"}
    assert (
        len(result["expanded_fraction_by_cluster"]) == 3
        and 0 <= result["expanded_pair_fraction"] <= 1
    )
    assert 0 <= result["tail_winner_fraction"] <= 1 and result["greedy_equals_argmax"] is True
    assert result["tail_widths"] == [8, 2, 1] and len(result["token_share_by_cluster"]) == 4
    assert result["warm_up"]["steps"] == 5 and result["warm_up"]["final_nll"] > 0
    assert result["untimed_calls"] == {
        head: {"train_step": softmax.WARM_CALLS, "greedy_decode_step": softmax.WARM_CALLS}
        for head in ("full", "adaptive")
    }


def test_warm_up_runs_every_head_the_same_number_of_times():
    calls: list[str] = []
    train = {
        name: (lambda name=name: calls.append(f"train:{name}")) for name in ("full", "adaptive")
    }
    decode = {
        name: (lambda name=name: calls.append(f"decode:{name}")) for name in ("full", "adaptive")
    }
    softmax.warm_up_calls(train, decode, calls=2)
    assert sorted(calls) == sorted(
        2 * ["train:full", "train:adaptive", "decode:full", "decode:adaptive"]
    )
