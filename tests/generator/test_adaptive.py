"""AdaptiveSoftmaxHead and FullSoftmaxHead: a normalised distribution, NLL and gradients that
agree with it, exact lazy greedy / top-k, the token-order permutation, and input validation."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from rayrag.generator.adaptive import AdaptiveSoftmaxHead, FullSoftmaxHead

D, V, CUTOFFS = 16, 300, (20, 60, 150)  # a shortlist of 20 and tail clusters of 40, 90, 150


def _order(seed: int = 0) -> torch.Tensor:
    return torch.randperm(V, generator=torch.Generator().manual_seed(seed))


def _head(
    seed: int = 0, order: torch.Tensor | None = None, scale: float = 1.0
) -> AdaptiveSoftmaxHead:
    torch.manual_seed(seed)
    head = AdaptiveSoftmaxHead(D, V, CUTOFFS, div_value=2.0, token_order=order)
    with torch.no_grad():
        for p in head.parameters():
            p.mul_(scale)
    return head


def _hidden(n: int, seed: int = 1, scale: float = 3.0) -> torch.Tensor:
    return scale * torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


@functools.cache
def _trained_state() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Weights of a head trained a little on Zipf targets whose hidden states carry a token
    signature, and fresh hidden states from the same data: confident on frequent tokens,
    unsure on rare ones. Trained once per session."""
    gen = torch.Generator().manual_seed(3)
    probs = 1.0 / torch.arange(1, V + 1, dtype=torch.float32)  # (V,) by rank
    order = _order(4)
    signature = torch.randn(V, D, generator=gen)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        ranks = torch.multinomial(probs, n, replacement=True, generator=gen)
        return signature[ranks] + torch.randn(n, D, generator=gen), order[ranks]

    head = _head(5, order)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-2)
    for _ in range(60):
        hidden, targets = sample(128)
        optimizer.zero_grad()
        head(hidden, targets).mean().backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in head.state_dict().items()}, sample(400)[0]


def _trained_head() -> tuple[AdaptiveSoftmaxHead, torch.Tensor]:
    state, hidden = _trained_state()
    head = _head()
    head.load_state_dict(state)
    return head, hidden.clone()


def _tail_winner_rows(head: AdaptiveSoftmaxHead) -> torch.Tensor:
    """One row per tail cluster whose cluster logit dominates: its winner lies in that cluster."""
    directions = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(6)))[0]
    with torch.no_grad():
        for c in range(head.n_clusters):
            head.head.weight[head.shortlist_size + c] += 8.0 * directions[c]
    return 2.0 * directions[: head.n_clusters] + 0.05 * _hidden(head.n_clusters, seed=7, scale=1.0)


# -- distribution and NLL ------------------------------------------------------------------------


def test_log_prob_rows_are_normalised_and_keep_leading_dims():
    head = _head(order=_order())
    hidden = _hidden(24)
    log_prob = head.log_prob(hidden)
    assert log_prob.shape == (24, V) and log_prob.dtype == torch.float32
    torch.testing.assert_close(log_prob.logsumexp(-1), torch.zeros(24), atol=1e-5, rtol=0)
    torch.testing.assert_close(head.log_prob(hidden.reshape(4, 6, D)), log_prob.reshape(4, 6, V))


def test_forward_nll_equals_minus_log_prob_at_targets_in_every_cluster():
    head = _head(order=_order())
    ranks = torch.cat([torch.arange(0, V, 7), torch.tensor([0, 19, 20, 59, 60, 149, 150, V - 1])])
    targets = head.token_of_rank[ranks]
    hidden = _hidden(len(targets))
    nll = head(hidden, targets)
    assert nll.shape == targets.shape and nll.dtype == torch.float32
    expected = -head.log_prob(hidden).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(nll, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        head(hidden.reshape(3, -1, D), targets.reshape(3, -1)), nll.reshape(3, -1)
    )


@pytest.mark.parametrize("kind", ["adaptive", "full"])
def test_log_prob_of_some_ids_equals_the_full_distribution_there(kind):
    head = _head(order=_order()) if kind == "adaptive" else FullSoftmaxHead(D, V)
    hidden = _hidden(6)
    ids = torch.randint(0, V, (6, 9), generator=torch.Generator().manual_seed(4))
    ids[0] = (
        head.token_of_rank[torch.tensor([0, 19, 20, 59, 60, 149, 150, V - 1, 5])]
        if kind == "adaptive"
        else ids[0]
    )
    torch.testing.assert_close(
        head.log_prob_of(hidden, ids), head.log_prob(hidden).gather(1, ids), atol=1e-5, rtol=0
    )


def test_gradients_flow_only_into_touched_clusters_and_match_the_full_distribution():
    head = _head(order=_order())
    targets = head.token_of_rank[torch.tensor([0, 3, 19, 25, 40, 59, 7])]  # shortlist + cluster 0
    hidden = _hidden(len(targets)).requires_grad_(True)
    head(hidden, targets).sum().backward()
    assert hidden.grad is not None and head.head.weight.grad is not None
    assert all(p.grad is not None for p in head.tail[0].parameters())
    assert all(p.grad is None for c in (1, 2) for p in head.tail[c].parameters())
    grads = {name: p.grad.clone() for name, p in head.named_parameters() if p.grad is not None}
    head.zero_grad()
    (-head.log_prob(hidden).gather(1, targets[:, None])).sum().backward()
    for name, grad in grads.items():
        torch.testing.assert_close(
            grad, dict(head.named_parameters())[name].grad, atol=1e-5, rtol=1e-4
        )


def test_ignored_targets_score_zero_and_out_of_range_targets_are_refused():
    order = _order()
    hidden = _hidden(5).requires_grad_(True)
    targets = torch.tensor([order[0], -100, order[100], -100, order[V - 1]])
    for head in (_head(order=order), FullSoftmaxHead(D, V)):
        nll = head(hidden, targets)
        assert nll[1] == 0 and nll[3] == 0 and bool((nll[[0, 2, 4]] > 0).all())
        hidden.grad = None
        nll.sum().backward()
        assert hidden.grad[[1, 3]].abs().sum() == 0
        for bad in (V, -1):
            with pytest.raises(
                ValueError, match=rf"targets must be token ids in \[0, {V}\) or -100"
            ):
                head(hidden, torch.full((5,), bad))


# -- exact lazy decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_greedy_equals_argmax_on_random_heads(scale):
    head = _head(seed=2, order=_order(), scale=scale)
    hidden = _hidden(200, seed=8)
    torch.testing.assert_close(
        head.greedy(hidden), head.log_prob(hidden).argmax(-1), rtol=0, atol=0
    )


def test_greedy_equals_argmax_on_a_trained_head_and_prunes():
    head, hidden = _trained_head()
    ids, expanded = head.greedy_expanded(hidden)
    assert torch.equal(ids, head.log_prob(hidden).argmax(-1))
    assert expanded.shape == (400, head.n_clusters)
    assert 0.0 < expanded.float().mean().item() < 1.0  # some pairs skipped, some opened


def test_greedy_finds_winners_inside_tail_clusters():
    head = _head(seed=9, order=_order())
    rows = _tail_winner_rows(head)
    ids, expanded = head.greedy_expanded(rows)
    assert torch.equal(ids, head.log_prob(rows).argmax(-1))
    winner_ranks = head.rank_of_token[ids]
    for c in range(head.n_clusters):
        assert head.bounds[c] <= winner_ranks[c] < head.bounds[c + 1]
        assert expanded[c, c]


@pytest.mark.parametrize("k", [1, 5, CUTOFFS[0] + 10, V])
def test_topk_equals_torch_topk_of_log_prob(k):
    head, hidden = _trained_head()
    hidden = torch.cat([hidden[:60], _tail_winner_rows(head)])
    values, ids = head.topk(hidden, k)
    expected_values, expected_ids = head.log_prob(hidden).topk(k, dim=-1)
    torch.testing.assert_close(values, expected_values, atol=1e-6, rtol=0)
    assert torch.equal(ids, expected_ids)


def test_token_order_relabels_ids_without_changing_the_model():
    order = _order(11)
    plain, permuted = _head(seed=12), _head(seed=12, order=order)
    hidden = _hidden(30)
    # Token order[r] in the permuted head is what token r is in the plain one.
    torch.testing.assert_close(permuted.log_prob(hidden)[:, order], plain.log_prob(hidden))
    assert torch.equal(permuted.greedy(hidden), order[plain.greedy(hidden)])
    assert torch.equal(permuted.topk(hidden, 4)[1], order[plain.topk(hidden, 4)[1]])
    ranks = torch.arange(0, V, 11)
    torch.testing.assert_close(
        permuted(hidden[: len(ranks)], order[ranks]), plain(hidden[: len(ranks)], ranks)
    )
    plain.set_token_order(order)
    assert torch.equal(plain.greedy(hidden), permuted.greedy(hidden))
    assert set(dict(permuted.named_buffers())) == {"token_of_rank", "rank_of_token"}


def test_low_precision_hidden_gives_float32_log_probs():
    head = _head(order=_order()).to(torch.bfloat16)
    hidden = _hidden(8).to(torch.bfloat16)
    assert (
        head.log_prob(hidden).dtype == torch.float32
        and head(hidden, torch.arange(8)).dtype == torch.float32
    )
    assert torch.equal(head.greedy(hidden), head.log_prob(hidden).argmax(-1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_greedy_and_topk_on_cuda():
    head, hidden = _trained_head()
    head, hidden = head.cuda(), hidden.cuda()
    assert torch.equal(head.greedy(hidden), head.log_prob(hidden).argmax(-1))
    assert torch.equal(head.topk(hidden, 5)[1], head.log_prob(hidden).topk(5)[1])


# -- the full softmax ------------------------------------------------------------------------------


def test_full_head_tied_weight_shares_storage_and_gradient():
    embed = nn.Embedding(V, D)
    head = FullSoftmaxHead(D, V, tied_weight=embed.weight)
    assert head.weight is embed.weight and head.weight.data_ptr() == embed.weight.data_ptr()
    hidden = _hidden(6)
    head(hidden, torch.arange(6)).mean().backward()
    assert embed.weight.grad is not None
    untied = FullSoftmaxHead(D, V)
    assert untied.weight.shape == (V, D) and "weight" in dict(untied.named_parameters())


def test_full_head_methods_agree_with_its_log_prob():
    torch.manual_seed(13)
    head = FullSoftmaxHead(D, V)
    hidden, targets = _hidden(32), torch.randint(0, V, (32,))
    log_prob = head.log_prob(hidden)
    torch.testing.assert_close(log_prob.logsumexp(-1), torch.zeros(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        head(hidden, targets), -log_prob.gather(1, targets[:, None]).squeeze(1)
    )
    assert torch.equal(head.greedy(hidden), log_prob.argmax(-1))
    values, ids = head.topk(hidden, 7)
    assert torch.equal(ids, log_prob.topk(7)[1]) and torch.equal(values, log_prob.topk(7)[0])
    assert head.logits(hidden).shape == (32, V)


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cutoffs", "message"),
    [
        ((60, 20), "strictly increasing"),
        ((20, 20), "strictly increasing"),
        ((0, 20), "positive"),
        ((20, V), "< vocab_size"),
        ((20, V + 5), "< vocab_size"),
        ((), "at least one"),
    ],
)
def test_bad_cutoffs_are_refused(cutoffs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveSoftmaxHead(D, V, cutoffs)


def test_bad_div_value_token_order_and_tied_shape_are_refused():
    with pytest.raises(ValueError, match="div_value"):
        AdaptiveSoftmaxHead(D, V, CUTOFFS, div_value=1.0)
    with pytest.raises(ValueError, match="permutation"):
        AdaptiveSoftmaxHead(D, V, CUTOFFS, token_order=torch.zeros(V, dtype=torch.int64))
    with pytest.raises(ValueError, match="permutation"):
        AdaptiveSoftmaxHead(D, V, CUTOFFS, token_order=torch.arange(V - 1))
    with pytest.raises(ValueError, match=r"tied_weight must have shape \(vocab_size, d_model\)"):
        FullSoftmaxHead(D, V, tied_weight=nn.Parameter(torch.zeros(D, V)))


@pytest.mark.parametrize("k", [0, V + 1])
def test_k_outside_the_vocabulary_is_refused(k):
    hidden = _hidden(2)
    for head in (_head(), FullSoftmaxHead(D, V)):
        with pytest.raises(ValueError, match=rf"k must be in \[1, vocab_size={V}\], got {k}"):
            head.topk(hidden, k)
