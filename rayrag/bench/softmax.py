"""Bench `softmax`: adaptive softmax (Grave et al. 2017) vs a full softmax head, V = 100k.

Competitors, alternating in one process on the same hidden states and targets:
  * full — `FullSoftmaxHead`: a (V, d) matmul over the whole vocabulary;
  * adaptive — `AdaptiveSoftmaxHead`, cutoffs (2000, 10000, 50000), div_value 4.
Two measurements:
  * train step — forward + backward of the head alone on N target tokens (the hidden states
    require grad, as they would inside a model). `ratios.train_step` = full p50 / adaptive p50.
  * greedy decode step — one next-token choice for a batch of 8 rows: full = logits + argmax,
    adaptive = `greedy()`, which expands a tail cluster only for rows where it can still win.
    `ratios.greedy_decode_step` = full p50 / adaptive p50. Each round decodes a fresh batch.

Data. Token ranks follow Zipf's law, p(rank r) ∝ 1 / r, as word frequencies in text do; the
token ids are a random permutation of the ranks (a BPE's ids are not frequency sorted), handed
to the adaptive head as `token_order`. A hidden state carries its target: h = m + s_t + noise,
with m a shared direction (real final hidden states share one, which plays the role of a bias)
and s_t a fixed random signature of token t, noise as large as the signature.

Cutoffs (2000, 10000, 50000) give a shortlist of 2000 and tail clusters of 8k, 40k and 50k
tokens holding 67%, then 13%, 13% and 6% of the text (harmonic sums of 1/r): as the paper
advises, the shortlist covers most tokens yet stays small enough for the head matmul to be
cheap, and few clusters (here 3), each rarer and larger than the last, whose narrowing
projections (128, 32, 8 with div_value 4) keep each tail, weighted by how often a target
falls in it, at a sixth of the head's multiply-adds or less (full softmax: ~37x the sum).

How many clusters greedy expands depends on how confident the head is, so the adaptive head
is first trained briefly on this data (Adam, lr 3e-2, 300 steps of 256 tokens: about 77k
tokens, so rare tokens are barely seen, as in an early checkpoint); its mean NLL is reported
beside the unigram entropy, what a head that learnt only the frequencies would score. An
untrained head is near uniform, its cluster logits tie with the shortlist, and the expansions
it reports mean nothing. No weight is set by hand. The full head is left at its init: its cost
does not depend on its weights.

Warm-up for timing is the same for both heads: before any timed round, each head runs
`WARM_CALLS` untimed train steps on the timed tokens and greedy decode steps on a decode-sized
batch, alternating (`warm_up_calls`; reported as `untimed_calls`). The adaptive head's brief
training is not that warm-up: it sets weights, at another batch size, and the full head has none.
`expanded_pair_fraction` is the share of (row, tail cluster) pairs greedy expanded, measured
over all decoded rows; `tail_winner_fraction` the share of rows whose argmax is a tail token.

d_model is 512 as asked. N is 1024 rather than a training batch of 4096: on one shared CPU
core the full head's rounds would be too slow at 4096 (measured: docs/DECISIONS.md), which
would also take 5 GB for its (N, V) logits, their log-softmax and gradient; both heads' costs
are linear in N (the adaptive head's per-cluster overhead is fixed, so a larger N only helps
it).
`--quick` (CI) uses V = 20k, d = 256, cutoffs (1000, 4000, 10000) and 100 warm-up steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from rayrag.bench import alternate, median
from rayrag.generator.adaptive import AdaptiveSoftmaxHead, FullSoftmaxHead

FULL_PLAN = {
    "vocab_size": 100_000,
    "d_model": 512,
    "cutoffs": (2000, 10_000, 50_000),
    "train_tokens": 1024,
    "train_rounds": 3,
    "decode_batch": 8,
    "decode_rounds": 24,
    "warm_steps": 300,
    "warm_batch": 256,
}
QUICK_PLAN = {
    "vocab_size": 20_000,
    "d_model": 256,
    "cutoffs": (1000, 4000, 10_000),
    "train_tokens": 512,
    "train_rounds": 3,
    "decode_batch": 8,
    "decode_rounds": 12,
    "warm_steps": 100,
    "warm_batch": 256,
}
DIV_VALUE = 4.0
NOISE = 1.0  # noise norm relative to a token signature's
WARM_LR = 3e-2  # Adam; 1e-2 left the quick head barely past the unigram loss after 100 steps
# One intra-op thread: on these shared machines OpenMP threads spin on contended cores
# (measured: docs/DECISIONS.md). Both heads run under the same setting.
THREADS = 1
WARM_CALLS = 1  # untimed train and decode steps per head before timing (`warm_up_calls`)


class ZipfTokens:
    """Targets with Zipf-distributed ranks and hidden states that carry them (see module doc)."""

    def __init__(self, vocab_size: int, d_model: int, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        weights = 1.0 / torch.arange(1, vocab_size + 1, dtype=torch.float64)
        self.rank_probs = (weights / weights.sum()).float()  # (V,) p(rank r) ∝ 1 / (r + 1)
        self.token_of_rank = torch.randperm(vocab_size, generator=self.generator)
        # (d,) norm ~1
        self.shared = torch.randn(d_model, generator=self.generator) / math.sqrt(d_model)
        self.signature = torch.randn(vocab_size, d_model, generator=self.generator) / math.sqrt(
            d_model
        )

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden (n, d), target token ids (n,))."""
        # (n,)
        ranks = torch.multinomial(self.rank_probs, n, replacement=True, generator=self.generator)
        noise = torch.randn(n, self.shared.shape[0], generator=self.generator) / math.sqrt(
            self.shared.shape[0]
        )
        hidden = self.shared + self.signature[ranks] + NOISE * noise  # (n, d)
        return hidden, self.token_of_rank[ranks]

    def unigram_entropy(self) -> float:
        p = self.rank_probs.double()
        return float(-(p * p.log()).sum())

    def cluster_shares(self, cutoffs: tuple[int, ...]) -> list[float]:
        """Share of tokens in the shortlist and in each tail cluster."""
        bounds = (0, *cutoffs, self.rank_probs.shape[0])
        return [
            round(float(self.rank_probs[a:b].sum()), 3)
            for a, b in zip(bounds, bounds[1:], strict=False)
        ]


def train_briefly(
    head: torch.nn.Module, data: ZipfTokens, steps: int, batch: int, lr: float = WARM_LR
) -> float:
    """Adam on the head alone; returns the mean NLL over the last tenth of the steps."""
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        hidden, targets = data.sample(batch)
        loss = head(hidden, targets).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    tail = losses[-max(1, steps // 10) :]
    return sum(tail) / len(tail)


def _train_step(
    head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor
) -> Callable[[], None]:
    def step() -> None:
        head.zero_grad(set_to_none=True)
        hidden.grad = None
        head(hidden, targets).mean().backward()

    return step


def _decode_steps(
    full: FullSoftmaxHead, adaptive: AdaptiveSoftmaxHead, rows: torch.Tensor
) -> dict[str, Callable[[], torch.Tensor]]:
    """One greedy next-token choice per head for `rows` (call under inference mode)."""
    return {
        "full": lambda: full.logits(rows).argmax(dim=-1),
        "adaptive": lambda: adaptive.greedy(rows),
    }


def warm_up_calls(
    train_steps: dict[str, Callable[[], None]],
    decode_steps: dict[str, Callable[[], Any]],
    calls: int = WARM_CALLS,
) -> None:
    """The same untimed warm-up for every head: `calls` train steps and decode steps each,
    so no head's first timed round pays its first-call allocations."""
    for _ in range(calls):
        alternate(train_steps, 1)
        with torch.inference_mode():
            alternate(decode_steps, 1)


def bench(
    vocab_size: int,
    d_model: int,
    cutoffs: tuple[int, ...],
    train_tokens: int,
    train_rounds: int,
    decode_batch: int,
    decode_rounds: int,
    warm_steps: int,
    warm_batch: int,
    seed: int = 0,
) -> dict[str, Any]:
    torch.manual_seed(seed)
    data = ZipfTokens(vocab_size, d_model, seed)
    full = FullSoftmaxHead(d_model, vocab_size)
    adaptive = AdaptiveSoftmaxHead(
        d_model, vocab_size, cutoffs, DIV_VALUE, token_order=data.token_of_rank
    )

    started = time.perf_counter()
    warm_nll = train_briefly(adaptive, data, warm_steps, warm_batch)
    warm_seconds = time.perf_counter() - started

    hidden, targets = data.sample(train_tokens)
    hidden.requires_grad_(True)
    train_steps = {
        "full": _train_step(full, hidden, targets),
        "adaptive": _train_step(adaptive, hidden, targets),
    }
    warm_rows, _ = data.sample(decode_batch)
    warm_up_calls(train_steps, _decode_steps(full, adaptive, warm_rows))
    train = alternate(train_steps, train_rounds)

    decode: dict[str, list[float]] = {"full": [], "adaptive": []}
    expanded, tail_wins, agree = [], [], []
    with torch.inference_mode():
        for r in range(decode_rounds):
            rows, _ = data.sample(decode_batch)
            competitors = _decode_steps(full, adaptive, rows)
            if r % 2:  # alternate which head goes first, batch by batch
                competitors = dict(reversed(competitors.items()))
            for name, values in alternate(competitors, 1).items():
                decode[name].extend(values)
            ids, pairs = adaptive.greedy_expanded(rows)  # untimed: which clusters it opened
            expanded.append(pairs)
            tail_wins.append(adaptive.rank_of_token[ids] >= cutoffs[0])
            agree.append(bool(torch.equal(ids, adaptive.log_prob(rows).argmax(dim=-1))))
    pairs = torch.cat(expanded)  # (rounds * batch, clusters)

    train_p50 = {n: median(v) for n, v in train.items()}
    decode_p50 = {n: median(v) for n, v in decode.items()}
    return {
        "vocab_size": vocab_size,
        "d_model": d_model,
        "cutoffs": list(cutoffs),
        "div_value": DIV_VALUE,
        "tail_widths": [block[0].out_features for block in adaptive.tail],
        "token_share_by_cluster": data.cluster_shares(cutoffs),  # shortlist, then each tail cluster
        "parameters": {
            "full": full.weight.numel(),
            "adaptive": sum(p.numel() for p in adaptive.parameters()),
        },
        "train_tokens": train_tokens,
        "decode_batch": decode_batch,
        "warm_up": {
            "steps": warm_steps,
            "batch": warm_batch,
            "seconds": round(warm_seconds, 1),
            "final_nll": round(warm_nll, 3),
            "unigram_entropy": round(data.unigram_entropy(), 3),
        },
        # Untimed calls of the timed steps, per head, before timing: the same for both heads.
        "untimed_calls": {
            name: {"train_step": WARM_CALLS, "greedy_decode_step": WARM_CALLS} for name in train
        },
        "p50_ms": {
            "train_step": {n: round(1000 * v, 2) for n, v in train_p50.items()},
            "greedy_decode_step": {n: round(1000 * v, 3) for n, v in decode_p50.items()},
        },
        "expanded_pair_fraction": round(pairs.float().mean().item(), 4),
        "expanded_fraction_by_cluster": [round(v, 4) for v in pairs.float().mean(dim=0).tolist()],
        "tail_winner_fraction": round(torch.cat(tail_wins).float().mean().item(), 4),
        "greedy_equals_argmax": all(agree),
        "ratios": {
            "train_step": round(train_p50["full"] / train_p50["adaptive"], 2),
            "greedy_decode_step": round(decode_p50["full"] / decode_p50["adaptive"], 2),
        },
    }


def run(quick: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        result = bench(**(QUICK_PLAN if quick else FULL_PLAN))
    finally:
        torch.set_num_threads(threads)
    return {
        "bench": "softmax",
        "quick": quick,
        "threads": THREADS,
        **result,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
