"""Output heads: the adaptive softmax of Grave et al. 2017 and a (tied) full softmax.

Grave, Joulin, Cissé, Grangier, Jégou, "Efficient softmax approximation for GPUs" (ICML 2017).
Words follow Zipf's law, so a vocabulary sorted by frequency splits into a short *shortlist*
that covers most of the text and a long tail that is rarely needed. The head scores the
shortlist plus one logit per tail cluster; tail cluster i scores its own tokens through a
projection d -> d / div_value^(i+1) (rarer clusters get narrower projections) and then
-> cluster size. A token's log-prob is

    shortlist token t:   log p(t) = head_logp[t]
    token t in tail c:   log p(t) = head_logp[cluster c] + log_softmax(tail_c(h))[t]

Training computes a tail only for the rows whose targets fall into it, which is where the
speed comes from: most targets are shortlist tokens.

Decoding is exact but lazy. Because log_softmax(tail_c(h)) <= 0, the cluster's head log-prob
is an upper bound on every one of its tokens' log-probs. `greedy` computes the head first; the
best shortlist log-prob is a lower bound on the winner, so tail c is expanded only for the
rows where head_logp[cluster c] > best so far (a tie cannot beat the incumbent). Clusters are
visited most frequent first and each expansion can only raise the bound for the next ones.
`topk` does the same against each row's current k-th best. The bound also holds in floating
point: adding a value <= 0 never rounds up.

The vocabulary is permuted into frequency order by `token_order` (token ids, most frequent
first): buffers `token_of_rank` and `rank_of_token`. Weights live in rank space; every public
method takes and returns token ids.

    head = AdaptiveSoftmaxHead(d_model=256, vocab_size=8192, cutoffs=(2000, 6000),
                               token_order=torch.as_tensor(tokenizer.token_order(texts)))
    loss = head(hidden, targets).mean()      # hidden (N, d), targets (N,) token ids
    next_ids = head.greedy(hidden[-1:])      # == head.log_prob(hidden[-1:]).argmax(-1)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100  # a target the loss skips (NLL 0), as in F.cross_entropy and HF labels


def _check_k(k: int, vocab_size: int) -> None:
    if not 1 <= k <= vocab_size:
        raise ValueError(f"k must be in [1, vocab_size={vocab_size}], got {k}")


def _check_targets(targets: Tensor, vocab_size: int) -> Tensor:
    """Mask of the targets that count; refuses ids outside the vocabulary (one device sync)."""
    valid = targets != IGNORE_INDEX
    if bool((valid & ((targets < 0) | (targets >= vocab_size))).any()):
        raise ValueError(
            f"targets must be token ids in [0, {vocab_size}) or {IGNORE_INDEX} (ignored), "
            f"got values from {int(targets.min())} to {int(targets.max())}"
        )
    return valid


class AdaptiveSoftmaxHead(nn.Module):
    """Adaptive softmax over a frequency-sorted vocabulary (Grave et al. 2017).

    `cutoffs` are ranks: (2000, 6000) puts the 2000 most frequent tokens in the head, ranks
    2000-5999 in tail cluster 0 and 6000..V-1 in tail cluster 1. Hidden states may carry
    any leading shape (..., d); outputs keep it.
    """

    def __init__(
        self,
        d_model: int,
        vocab_size: int,
        cutoffs: tuple[int, ...],
        div_value: float = 4.0,
        token_order: Tensor | None = None,
    ) -> None:
        super().__init__()
        cutoffs = tuple(int(c) for c in cutoffs)
        if not cutoffs:
            raise ValueError(
                "cutoffs must name at least one cutoff, got (); use FullSoftmaxHead for none "
                "(--generator.adaptive-softmax-cutoffs)"
            )
        if cutoffs[0] <= 0 or any(b <= a for a, b in zip(cutoffs, cutoffs[1:], strict=False)):
            raise ValueError(
                f"cutoffs must be positive and strictly increasing, got {cutoffs} "
                "(--generator.adaptive-softmax-cutoffs)"
            )
        if cutoffs[-1] >= vocab_size:
            raise ValueError(
                f"cutoffs must all be < vocab_size={vocab_size}, got {cutoffs} "
                "(--generator.adaptive-softmax-cutoffs)"
            )
        if div_value <= 1:
            raise ValueError(
                f"div_value must be > 1, got {div_value} (--generator.adaptive-div-value)"
            )
        self.d_model = d_model
        self.vocab_size = vocab_size
        self.cutoffs = cutoffs
        self.div_value = div_value
        self.shortlist_size = cutoffs[0]
        self.n_clusters = len(cutoffs)
        # Rank boundaries of the tail clusters: cluster i holds ranks [bounds[i], bounds[i + 1]).
        self.bounds = (*cutoffs, vocab_size)
        self.head = nn.Linear(d_model, self.shortlist_size + self.n_clusters, bias=False)
        self.tail = nn.ModuleList()
        for i in range(self.n_clusters):
            width = max(1, int(d_model // div_value ** (i + 1)))
            size = self.bounds[i + 1] - self.bounds[i]
            self.tail.append(
                nn.Sequential(
                    nn.Linear(d_model, width, bias=False), nn.Linear(width, size, bias=False)
                )
            )
        self.register_buffer("token_of_rank", torch.arange(vocab_size))
        self.register_buffer("rank_of_token", torch.arange(vocab_size))
        if token_order is not None:
            self.set_token_order(token_order)

    def set_token_order(self, token_order: Tensor) -> None:
        """Install a frequency order: `token_order[r]` is the token id of rank r.

        Set it before training: the weights are indexed by rank, so a new order re-labels them."""
        order = torch.as_tensor(token_order, dtype=torch.int64).flatten().cpu()
        if order.numel() != self.vocab_size or not torch.equal(
            order.sort().values, torch.arange(self.vocab_size)
        ):
            raise ValueError(
                f"token_order must be a permutation of 0..{self.vocab_size - 1}, got "
                f"{order.numel()} ids"
            )
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(self.vocab_size)
        self.token_of_rank.copy_(order)
        self.rank_of_token.copy_(inverse)

    # -- pieces ------------------------------------------------------------------------------

    def _flat(self, hidden: Tensor) -> Tensor:
        assert hidden.shape[-1] == self.d_model, (
            f"hidden width {hidden.shape[-1]} != d_model {self.d_model}"
        )
        return hidden.reshape(-1, self.d_model)  # (N, d)

    def _head_logp(self, hidden: Tensor) -> Tensor:
        return F.log_softmax(self.head(hidden).float(), dim=-1)  # (N, shortlist + clusters)

    def _tail_logp(self, cluster: int, hidden: Tensor, cluster_logp: Tensor) -> Tensor:
        """Log-probs of cluster `cluster`'s tokens for the given rows: (R, cluster size)."""
        within = F.log_softmax(self.tail[cluster](hidden).float(), dim=-1)  # (R, size)
        return cluster_logp.unsqueeze(-1) + within

    # -- training ----------------------------------------------------------------------------

    def forward(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """NLL of each target token id: hidden (..., d), targets (...) -> (...) float32.

        A tail cluster runs only on the rows whose targets fall into it. Targets equal to -100
        get NLL 0 and no gradient, as with F.cross_entropy."""
        flat = self._flat(hidden)  # (N, d)
        valid = _check_targets(targets, self.vocab_size).reshape(-1)  # (N,)
        # Ignored rows read shortlist rank 0 and are zeroed at the end: they open no cluster.
        ranks = torch.where(valid, self.rank_of_token[targets.reshape(-1).clamp(min=0)], 0)  # (N,)
        assert ranks.shape[0] == flat.shape[0], "hidden and targets disagree on the number of rows"
        head_logp = self._head_logp(flat)
        # Column of head_logp each row reads: its own rank in the shortlist, else its cluster's
        # logit.
        head_column = ranks.clone()
        within_logp = torch.zeros(flat.shape[0], dtype=torch.float32, device=flat.device)
        for i in range(self.n_clusters):
            lo, hi = self.bounds[i], self.bounds[i + 1]
            rows = ((ranks >= lo) & (ranks < hi)).nonzero().squeeze(-1)  # (R,)
            if rows.numel() == 0:
                continue
            head_column[rows] = self.shortlist_size + i
            within = F.log_softmax(self.tail[i](flat[rows]).float(), dim=-1)  # (R, size)
            within_logp = within_logp.index_copy(
                0, rows, within.gather(1, (ranks[rows] - lo).unsqueeze(1)).squeeze(1)
            )
        nll = -(head_logp.gather(1, head_column.unsqueeze(1)).squeeze(1) + within_logp)  # (N,)
        return torch.where(valid, nll, 0.0).reshape(targets.shape)

    # -- inference ---------------------------------------------------------------------------

    def log_prob(self, hidden: Tensor) -> Tensor:
        """Full distribution in token-id order: hidden (..., d) -> (..., V) float32 log-probs."""
        flat = self._flat(hidden)  # (N, d)
        head_logp = self._head_logp(flat)
        pieces = [head_logp[:, : self.shortlist_size]]
        for i in range(self.n_clusters):
            pieces.append(self._tail_logp(i, flat, head_logp[:, self.shortlist_size + i]))
        by_rank = torch.cat(pieces, dim=1)  # (N, V) columns in rank order
        by_token = by_rank.index_select(1, self.rank_of_token)  # (N, V) column t = rank_of_token[t]
        return by_token.reshape(*hidden.shape[:-1], self.vocab_size)

    def log_prob_of(self, hidden: Tensor, ids: Tensor) -> Tensor:
        """Log-probs of some token ids per row: hidden (N, d), ids (N, M) -> (N, M) float32.

        A tail cluster runs only on the rows that ask for one of its tokens."""
        flat = self._flat(hidden)  # (N, d)
        head_logp = self._head_logp(flat)
        ranks = self.rank_of_token[ids]  # (N, M)
        # right for shortlist ranks
        out = head_logp.gather(1, ranks.clamp(max=self.shortlist_size - 1))
        for i in range(self.n_clusters):
            lo, hi = self.bounds[i], self.bounds[i + 1]
            inside = (ranks >= lo) & (ranks < hi)  # (N, M)
            rows = inside.any(dim=1).nonzero().squeeze(-1)  # (R,)
            if rows.numel() == 0:
                continue
            # (R, size)
            tail = self._tail_logp(i, flat[rows], head_logp[rows, self.shortlist_size + i])
            values = tail.gather(1, (ranks[rows] - lo).clamp(0, hi - lo - 1))  # (R, M)
            out[rows] = torch.where(inside[rows], values, out[rows])
        return out

    def greedy(self, hidden: Tensor) -> Tensor:
        """Argmax token id of each row, exact: hidden (..., d) -> (...) int64."""
        return self.greedy_expanded(hidden)[0]

    def greedy_expanded(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """`greedy` plus which (row, cluster) pairs it had to expand:
        ((...), (..., clusters) bool)."""
        flat = self._flat(hidden)  # (N, d)
        head_logp = self._head_logp(flat)
        best_logp, best_rank = head_logp[:, : self.shortlist_size].max(dim=-1)  # (N,), (N,)
        expanded = torch.zeros(flat.shape[0], self.n_clusters, dtype=torch.bool, device=flat.device)
        for i in range(self.n_clusters):
            cluster_logp = head_logp[:, self.shortlist_size + i]  # (N,) upper bound on its tokens
            can_win = cluster_logp > best_logp
            rows = can_win.nonzero().squeeze(-1)  # (R,)
            if rows.numel() == 0:
                continue
            expanded[:, i] = can_win
            # (R,), (R,)
            logp, within_rank = self._tail_logp(i, flat[rows], cluster_logp[rows]).max(dim=-1)
            better = logp > best_logp[rows]
            best_logp[rows] = torch.where(better, logp, best_logp[rows])
            best_rank[rows] = torch.where(better, within_rank + self.bounds[i], best_rank[rows])
        ids = self.token_of_rank[best_rank]
        lead = hidden.shape[:-1]
        return ids.reshape(lead), expanded.reshape(*lead, self.n_clusters)

    def topk(self, hidden: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The k most likely token ids per row, exact: ((..., k) float32 log-probs, (..., k) ids),
        best first."""
        _check_k(k, self.vocab_size)
        flat = self._flat(hidden)  # (N, d)
        n = flat.shape[0]
        head_logp = self._head_logp(flat)
        first = min(k, self.shortlist_size)
        top_logp, top_rank = head_logp[:, : self.shortlist_size].topk(first, dim=-1)  # (N, first)
        if first < k:  # too few shortlist tokens: pad with -inf, which every cluster beats
            pad = k - first
            # (N, k)
            top_logp = torch.cat([top_logp, top_logp.new_full((n, pad), float("-inf"))], dim=1)
            top_rank = torch.cat([top_rank, top_rank.new_zeros((n, pad))], dim=1)  # (N, k)
        for i in range(self.n_clusters):
            cluster_logp = head_logp[:, self.shortlist_size + i]  # (N,)
            rows = (cluster_logp > top_logp[:, -1]).nonzero().squeeze(-1)  # (R,) k-th best can fall
            if rows.numel() == 0:
                continue
            tail_logp = self._tail_logp(i, flat[rows], cluster_logp[rows])  # (R, size)
            cand_logp, cand_rank = tail_logp.topk(min(k, tail_logp.shape[1]), dim=-1)  # (R, k')
            merged_logp = torch.cat([top_logp[rows], cand_logp], dim=1)  # (R, k + k')
            # (R, k + k')
            merged_rank = torch.cat([top_rank[rows], cand_rank + self.bounds[i]], dim=1)
            keep_logp, keep = merged_logp.topk(k, dim=-1)  # (R, k)
            top_logp[rows] = keep_logp
            top_rank[rows] = merged_rank.gather(1, keep)
        ids = self.token_of_rank[top_rank]
        lead = hidden.shape[:-1]
        return top_logp.reshape(*lead, k), ids.reshape(*lead, k)


class FullSoftmaxHead(nn.Module):
    """A plain softmax over the whole vocabulary, optionally tied to the input embedding.

    head = FullSoftmaxHead(256, 8192, tied_weight=model.embed_tokens.weight)
    """

    def __init__(
        self, d_model: int, vocab_size: int, tied_weight: nn.Parameter | None = None
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.vocab_size = vocab_size
        if tied_weight is not None:
            if tuple(tied_weight.shape) != (vocab_size, d_model):
                raise ValueError(
                    f"tied_weight must have shape (vocab_size, d_model) = ({vocab_size}, "
                    f"{d_model}), got {tuple(tied_weight.shape)}"
                )
            self.weight = tied_weight  # the same Parameter: one storage, one gradient
        else:
            # (V, d), HF `lm_head.weight`
            self.weight = nn.Parameter(torch.empty(vocab_size, d_model))
            nn.init.normal_(self.weight, std=0.02)

    def logits(self, hidden: Tensor) -> Tensor:
        """Raw scores: hidden (..., d) -> (..., V) in hidden's dtype."""
        return F.linear(hidden, self.weight)

    def forward(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """NLL of each target token id:
        hidden (..., d), targets (...) -> (...) float32; -100 -> 0."""
        _check_targets(targets, self.vocab_size)
        flat_logits = self.logits(hidden).reshape(-1, self.vocab_size).float()  # (N, V)
        # (N,)
        nll = F.cross_entropy(
            flat_logits, targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
        )
        return nll.reshape(targets.shape)

    def log_prob(self, hidden: Tensor) -> Tensor:
        return F.log_softmax(self.logits(hidden).float(), dim=-1)  # (..., V)

    def log_prob_of(self, hidden: Tensor, ids: Tensor) -> Tensor:
        """Log-probs of some token ids per row: hidden (N, d), ids (N, M) -> (N, M) float32."""
        return self.log_prob(hidden).gather(-1, ids)

    def greedy(self, hidden: Tensor) -> Tensor:
        return self.logits(hidden).argmax(dim=-1)  # softmax is monotone: argmax of the logits

    def topk(self, hidden: Tensor, k: int) -> tuple[Tensor, Tensor]:
        _check_k(k, self.vocab_size)
        return self.log_prob(hidden).topk(k, dim=-1)  # (..., k) each
