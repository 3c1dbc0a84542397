"""Copying from the context: a pointer-generator output layer for the reader (See et al. 2017).

A reader's answer is nearly always a span of its context. Through the vocabulary softmax
alone a small model learns such copying slowly: it first has to grow induction heads
(Olsson et al. 2022), which minutes of CPU training do not buy. The pointer makes copying one
attention. At each position t the model's next-token distribution becomes the mixture

    p(w) = g_t * p_vocab(w) + (1 - g_t) * sum over slots s proposing w of a_ts

with p_vocab the model's own head (adaptive or full softmax), g_t = sigmoid(w_g . h_t + b)
and a_t = softmax_s(q_t . k_s / sqrt(c)), q = W_q h_t, over two slots per earlier real
position j, keyed from the final hidden state h_j:

    self slot  k = W_self h_j, proposes x_j       (j <= t)  where an answer STARTS: the
               causal state at "Hollowell" knows the token, not the words after it, so the
               query has to carry the answer's identity and the pointer snaps it to the text;
    next slot  k = W_next h_j, proposes x_{j+1}   (j < t)   how a span CONTINUES: the
               induction pattern; the state at "Hollowell" in the answer matches the state at
               "Hollowell" in the passage, which proposes " Power".

A look-ahead for the self keys was tried and not kept: it scored worse on the demo
(docs/DECISIONS.md).

With `until_token` set (the reader's `<sep>`, which closes the retrieved context) the pointer
sees only the positions before that token's first occurrence: answers are copied from the
passages and facts, never from the question. Without this a fresh pointer learns the easy
wrong habit: "Which company acquired Tarrow Power?" -> "Tarrow Power" (measured on the demo).

Decoding stays exact and lazy (`CopyMixture`): greedy and top-k score the tokens the context
proposes plus the head's own best k. A token the context does not propose has probability
g * p_vocab, so the head's k best bound every such token; the vocabulary is scored in full
only when sampling needs the whole distribution.

Optional (`generator.copy_head`); without it the model is a plain Mixtral. Checkpoints keep
its weights under `rayrag.copy_head.*` (checkpoint.py), which HF loaders ignore.

    >>> ctx = model.copy_head.context(hidden, input_ids, keep)   # slots: keys and proposals
    >>> attn = model.copy_head.attention(hidden, ctx, first_query=0)
    >>> logp = mix_log_prob(vocab_logp, model.copy_head.gate_logit(hidden, attn),
    ...                     copy_dense(attn, ctx.proposals, vocab_size))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TINY = 1e-30  # floor for log p_copy where the context proposes nothing (exp underflows anyway)


@dataclass
class CopyContext:
    """What the pointer can point at: every position j of the sequence so far.

    self_keys, next_keys (B, S_total, c); ids (B, S_total) the tokens x_j; next_ids
    (B, S_total) x_{j+1}, with 0 at the last position, whose successor is not known yet (its
    next slot is never allowed: j < t); keep (B, S_total) bool: real (not padding) positions;
    open (B, S_total) bool: before the first `until_token` of the row (all True without one)."""

    self_keys: Tensor
    next_keys: Tensor
    ids: Tensor
    next_ids: Tensor
    keep: Tensor
    open: Tensor

    @property
    def proposals(self) -> Tensor:
        """(B, 2 * S_total): the token each slot proposes, self slots first."""
        return torch.cat([self.ids, self.next_ids], dim=1)

    def select(self, rows: Tensor) -> CopyContext:
        return CopyContext(*(t.index_select(0, rows) for t in self._fields()))

    def drop_leading(self, n: int) -> CopyContext:
        return CopyContext(*(t[:, n:] for t in self._fields()))

    def _fields(self) -> tuple[Tensor, ...]:
        return self.self_keys, self.next_keys, self.ids, self.next_ids, self.keep, self.open


class CopyHead(nn.Module):
    """Query, key and gate projections of the pointer (see the module docstring)."""

    def __init__(self, d_model: int, copy_dim: int, until_token: int | None = None) -> None:
        super().__init__()
        self.copy_dim = copy_dim
        self.until_token = until_token
        self.query = nn.Linear(d_model, copy_dim, bias=False)
        self.key = nn.Linear(d_model, copy_dim, bias=False)  # self slots
        self.next_key = nn.Linear(d_model, copy_dim, bias=False)  # next slots
        self.gate = nn.Linear(d_model, 1)  # logit of g, the vocabulary's share
        for proj in (self.query, self.key, self.next_key):
            nn.init.normal_(proj.weight, std=0.02)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)  # g = 0.5 at the start

    def context(
        self, hidden: Tensor, input_ids: Tensor, keep: Tensor, past: CopyContext | None = None
    ) -> CopyContext:
        """`past` extended by the new positions: hidden (B, S, d), input_ids (B, S), keep
        (B, S_past + S) bool. The old last position's successor is the first new token."""
        # (B, S, c) each
        self_keys, next_keys = (
            self.key(hidden).float(),
            self.next_key(hidden).float(),
        )
        last = input_ids.new_zeros(input_ids.shape[0], 1)  # the new last position: no successor yet
        if self.until_token is None:
            open_ = torch.ones_like(input_ids, dtype=torch.bool)  # (B, S)
        else:
            closed = (input_ids == self.until_token).long().cumsum(
                dim=1
            ) > 0  # (B, S) at or after the first
            if past is not None:
                closed = closed | ~past.open[:, -1:]
            open_ = ~closed
        if past is None:
            return CopyContext(
                self_keys,
                next_keys,
                input_ids,
                torch.cat([input_ids[:, 1:], last], dim=1),
                keep,
                open_,
            )
        return CopyContext(
            torch.cat([past.self_keys, self_keys], dim=1),  # (B, S_past + S, c)
            torch.cat([past.next_keys, next_keys], dim=1),
            torch.cat([past.ids, input_ids], dim=1),  # (B, S_past + S)
            torch.cat([past.next_ids[:, :-1], input_ids, last], dim=1),
            keep,
            torch.cat([past.open, open_], dim=1),
        )

    def attention(self, hidden: Tensor, ctx: CopyContext, first_query: int) -> Tensor:
        """a (B, S, 2 * S_total) float32 over `ctx.proposals`: query i (absolute position
        first_query + i) over the self slots j <= t and next slots j < t of real positions; a
        row with nothing allowed is all zeros."""
        q = self.query(hidden).float()  # (B, S, c)
        keys = torch.cat([ctx.self_keys, ctx.next_keys], dim=1)  # (B, 2 * S_total, c)
        # (B, S, 2 * S_total)
        scores = torch.matmul(q, keys.transpose(1, 2)) / math.sqrt(self.copy_dim)
        # (S,)
        q_pos = torch.arange(first_query, first_query + hidden.shape[1], device=hidden.device)
        k_pos = torch.arange(ctx.ids.shape[1], device=hidden.device)  # (S_total,)
        # (S, 2S_t)
        allowed = torch.cat(
            [k_pos[None, :] <= q_pos[:, None], k_pos[None, :] < q_pos[:, None]], dim=1
        )
        # (B, S, 2 * S_total)
        allowed = allowed[None] & (ctx.keep & ctx.open).repeat(1, 2)[:, None, :]
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        return F.softmax(scores, dim=-1) * allowed  # rows with nothing allowed: all zeros

    def gate_logit(self, hidden: Tensor, attn: Tensor) -> Tensor:
        """Logit of g (...,) for hidden (..., d) and its pointer attention (..., 2 * S_total):
        +inf (all vocabulary) where there is nothing to point at, so the mixture sums to 1."""
        logit = self.gate(hidden).float().squeeze(-1)  # (...,)
        return logit.masked_fill(attn.sum(-1) == 0, float("inf"))


def mix_log_prob(vocab_logp: Tensor, gate_logit: Tensor, p_copy: Tensor) -> Tensor:
    """log(g * p_vocab + (1 - g) * p_copy), elementwise; gate_logit broadcasts over the last dim
    when it has one fewer. Where p_copy is 0 it is exactly log g + log p_vocab."""
    if gate_logit.dim() < vocab_logp.dim():
        gate_logit = gate_logit.unsqueeze(-1)
    from_vocab = F.logsigmoid(gate_logit) + vocab_logp
    from_copy = F.logsigmoid(-gate_logit) + p_copy.clamp_min(TINY).log()
    return torch.where(p_copy > 0, torch.logaddexp(from_vocab, from_copy), from_vocab)


def copy_dense(attn: Tensor, proposals: Tensor, vocab_size: int) -> Tensor:
    """p_copy over the vocabulary: attn (B, S, M), proposals (B, M) -> (B, S, V)."""
    b, s, m = attn.shape
    return attn.new_zeros(b, s, vocab_size).scatter_add_(
        2, proposals[:, None, :].expand(b, s, m), attn
    )


class CopyMixture:
    """The next-token rule's view of head + pointer at the LAST position of a forward: the
    same `greedy` / `topk` / `log_prob` as the heads, exact (see the module docstring)."""

    def __init__(
        self, head: nn.Module, copy_head: CopyHead, hidden: Tensor, ctx: CopyContext
    ) -> None:
        self.head = head
        self.vocab_size = head.vocab_size
        s_total = ctx.ids.shape[1]
        attn = copy_head.attention(hidden[:, None], ctx, first_query=s_total - 1)[
            :, 0
        ]  # (B, 2 * S_total)
        self.gate = copy_head.gate_logit(hidden, attn)  # (B,)
        self.proposed = ctx.proposals  # (B, 2 * S_total) a superset of what the pointer proposes
        # (B, V)
        self.p_copy = attn.new_zeros(attn.shape[0], self.vocab_size).scatter_add_(
            1, self.proposed, attn
        )

    def _score(self, ids: Tensor, vocab_logp: Tensor) -> Tensor:
        return mix_log_prob(vocab_logp, self.gate[:, None], self.p_copy.gather(1, ids))  # (B, M)

    def _candidates(self, hidden: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The proposed tokens and the head's k best, scored by the mixture; duplicates -inf."""
        top_logp, top_ids = self.head.topk(hidden, k)  # (B, k) each
        ids = torch.cat([self.proposed, top_ids], dim=1)  # (B, M + k)
        vocab_logp = torch.cat([self.head.log_prob_of(hidden, self.proposed), top_logp], dim=1)
        scores = self._score(ids, vocab_logp)  # (B, M + k)
        sorted_ids, order = ids.sort(dim=1)
        dup_sorted = torch.zeros_like(sorted_ids, dtype=torch.bool)
        dup_sorted[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
        dup = torch.zeros_like(dup_sorted).scatter(1, order, dup_sorted)
        return scores.masked_fill(dup, float("-inf")), ids

    def greedy(self, hidden: Tensor) -> Tensor:
        scores, ids = self._candidates(hidden, 1)
        return ids.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)  # (B,)

    def topk(self, hidden: Tensor, k: int) -> tuple[Tensor, Tensor]:
        scores, ids = self._candidates(hidden, k)
        logp, pick = scores.topk(k, dim=1)  # (B, k)
        return logp, ids.gather(1, pick)

    def log_prob(self, hidden: Tensor) -> Tensor:
        return mix_log_prob(self.head.log_prob(hidden), self.gate, self.p_copy)  # (B, V)

    def log_prob_of(self, hidden: Tensor, ids: Tensor) -> Tensor:
        """The mixture's log-probs of some token ids per row: ids (B, M) -> (B, M) float32."""
        return self._score(ids, self.head.log_prob_of(hidden, ids))
