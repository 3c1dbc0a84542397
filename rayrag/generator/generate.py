"""Decoding over `MoETransformer`: greedy, top-k, top-p sampling with the KV cache, and streaming.

Follows HF `generate` in its choices: prompts of different lengths are LEFT-padded with an
attention mask, so every row's next token sits in the last column and RoPE positions come
from the mask (the model counts real tokens); the sampling filters apply in HF's order,
temperature, then top-k, then top-p (Holtzman et al. 2020, nucleus sampling).

Each step asks the output head only for what the rule needs, so the adaptive softmax
(Grave et al. 2017) stays lazy: temperature 0 calls `head.greedy` (a tail cluster is
expanded only for rows where it can still win), top-k alone calls `head.topk` and samples
among those k, and only top-p needs the full distribution `head.log_prob`.

Finished rows are DROPPED from the batch (`KVCache.select` on the cache, the same rows of
the mask), not kept masked: a finished row would otherwise still pay for attention over its
whole past and a trip through every MoE layer each step, and its router choices would skew
the routing statistics of the rows still decoding. Leading columns that are padding in every
remaining row are trimmed too (positions come from the mask, so nothing moves).

    >>> options = DecodeOptions.from_config(cfg.decoding, eos_id=tok.eos_id, pad_id=tok.pad_id)
    >>> [g.tokens for g in generate(model, [tok.encode("Q: ..."), tok.encode("Q: ...")],
    ...                             **options.kwargs())]
    >>> for token in stream(model, tok.encode("Q: ..."), **options.kwargs()): ...
"""

from __future__ import annotations

import copy
import math
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rayrag.config import DecodingConfig
from rayrag.errors import ConfigError, DataError
from rayrag.generator.model import KVCache, ModelOutput, MoETransformer


@dataclass
class Generation:
    """One prompt's answer: generated token ids (no eos, no stop sequence) and why it ended."""

    tokens: list[int]
    finish_reason: str  # "eos" | "stop" | "length"
    prompt_tokens: int
    # Sum of the model's log-probabilities of every token it emitted (the eos or stop
    # sequence included): the answer's own likelihood, which the Guard's confidence reads.
    logprob: float = 0.0
    # Per MoE layer, share of the token-slots routed to each expert over this call (prefill and
    # every decode step). Batch-level: rows decoded together share one summary.
    expert_share: list[list[float]] = field(default_factory=list)
    # With `branches` > 1: the prompt's other candidate answers, most likely first (this one
    # is the most likely of all).
    alternatives: list[Generation] = field(default_factory=list)


@dataclass(frozen=True)
class DecodeOptions:
    """Everything `generate` / `stream` take besides the model and the prompts."""

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = no top-k truncation
    top_p: float = 1.0  # 1 = no nucleus truncation
    stop: tuple[tuple[int, ...], ...] = ()
    eos_id: int | None = None
    pad_id: int = 0
    seed: int | None = None
    # Extractive decoding: the answer is a span of the prompt before the first `span_until`
    # token (the reader's <sep>: the retrieved context), then eos. None = free decoding.
    span_until: int | None = None
    # Candidate answers per prompt: greedy continuations of its `branches` most likely first
    # tokens (greedy, extractive decoding only). 1 = one greedy answer.
    branches: int = 1

    @classmethod
    def from_config(
        cls,
        cfg: DecodingConfig,
        *,
        eos_id: int | None,
        pad_id: int,
        stop: Sequence[Sequence[int]] | None = None,
        seed: int | None = None,
        span_until: int | None = None,
    ) -> DecodeOptions:
        # sampling: one answer
        return cls(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            stop=tuple(tuple(s) for s in stop or ()),
            eos_id=eos_id,
            pad_id=pad_id,
            seed=seed,
            span_until=span_until if cfg.extractive else None,
            branches=cfg.candidates if cfg.temperature == 0 else 1,
        )

    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of `generate` / `stream`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# -- validation ----------------------------------------------------------------------------


def _check_options(opts: DecodeOptions, vocab_size: int) -> None:
    if (
        isinstance(opts.max_new_tokens, bool)
        or not isinstance(opts.max_new_tokens, int)
        or opts.max_new_tokens <= 0
    ):
        raise ConfigError(
            f"max_new_tokens must be an int > 0, got {opts.max_new_tokens!r} "
            "(--decoding.max-new-tokens)"
        )
    if not math.isfinite(opts.temperature) or opts.temperature < 0:
        raise ConfigError(
            f"temperature must be a finite number >= 0 (0 = greedy), got {opts.temperature!r} "
            "(--decoding.temperature)"
        )
    if not 0 < opts.top_p <= 1:  # also refuses NaN
        raise ConfigError(f"top_p must be in (0, 1], got {opts.top_p!r} (--decoding.top-p)")
    if isinstance(opts.top_k, bool) or not isinstance(opts.top_k, int) or opts.top_k < 0:
        raise ConfigError(
            f"top_k must be an int >= 0 (0 = off), got {opts.top_k!r} (--decoding.top-k)"
        )
    if isinstance(opts.branches, bool) or not isinstance(opts.branches, int) or opts.branches < 1:
        raise ConfigError(
            f"branches must be an int >= 1, got {opts.branches!r} (decoding.candidates)"
        )
    if opts.branches > 1 and (not opts.greedy or opts.span_until is None):
        raise ConfigError(
            "branches > 1 needs greedy, extractive decoding (decoding.candidates, "
            "decoding.extractive, decoding.temperature 0)"
        )
    for name in ("eos_id", "pad_id"):
        value = getattr(opts, name)
        if value is None and name == "eos_id":
            continue
        if not isinstance(value, int) or not 0 <= value < vocab_size:
            raise ConfigError(f"{name} must be a token id in [0, {vocab_size}), got {value!r}")
    for i, seq in enumerate(opts.stop):
        if not seq:
            raise DataError(
                f"stop sequence {i} is empty; each stop sequence needs at least one token id"
            )
        bad = [t for t in seq if not 0 <= t < vocab_size]
        if bad:
            raise DataError(f"stop sequence {i} has token ids outside [0, {vocab_size}): {bad[:5]}")


def _check_prompts(
    prompts: Sequence[Sequence[int]], max_new_tokens: int, vocab_size: int, max_seq_len: int
) -> list[list[int]]:
    if isinstance(prompts, torch.Tensor):
        raise DataError("prompts must be a list of token-id lists, got a tensor; pass ids.tolist()")
    if len(prompts) == 0:
        raise DataError("prompts must hold at least one prompt, got an empty list")
    if not hasattr(prompts[0], "__iter__"):
        raise DataError(
            "prompts must be a list of token-id lists, got a flat list of ints; "
            "wrap a single prompt as [prompt]"
        )
    checked = []
    for i, prompt in enumerate(prompts):
        ids = [int(t) for t in prompt]
        if not ids:
            raise DataError(f"prompt {i} is empty; every prompt needs at least one token id")
        bad = [(pos, t) for pos, t in enumerate(ids) if not 0 <= t < vocab_size]
        if bad:
            pos, t = bad[0]
            raise DataError(
                f"prompt {i} has {len(bad)} token id(s) outside the vocabulary [0, {vocab_size}), "
                f"first {t} at position {pos}"
            )
        if len(ids) + max_new_tokens > max_seq_len:
            raise DataError(
                f"prompt {i} has {len(ids)} tokens + max_new_tokens {max_new_tokens} = "
                f"{len(ids) + max_new_tokens} > max_seq_len {max_seq_len} (generator.max_seq_len); "
                "shorten the prompt or lower --decoding.max-new-tokens"
            )
        checked.append(ids)
    return checked


# -- choosing the next token ---------------------------------------------------------------


def next_tokens(
    head: nn.Module, hidden: torch.Tensor, opts: DecodeOptions, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token id per row from the last hidden states (B, d) -> ids (B,) int64 and their
    log-probabilities under the model (B,) float32, before any temperature or truncation."""
    if opts.greedy:
        logp, ids = head.topk(hidden, 1)  # the argmax and its log-prob, exactly as greedy()
        return ids[:, 0], logp[:, 0].float()
    vocab = head.vocab_size
    top_k = min(opts.top_k, vocab)
    if top_k and opts.top_p >= 1:  # top-k alone: the head scores only the k best (exactly)
        logp, ids = head.topk(hidden, top_k)  # (B, k) each
        probs = F.softmax(logp / opts.temperature, dim=-1)  # renormalised over the k
        choice = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        return ids.gather(1, choice).squeeze(1), logp.gather(1, choice).squeeze(1).float()
    model_logp = head.log_prob(hidden)  # (B, V) float32
    scores = model_logp / opts.temperature
    if top_k:
        kth = scores.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if opts.top_p < 1:
        sorted_scores, order = scores.sort(dim=-1, descending=True)  # (B, V)
        sorted_probs = F.softmax(sorted_scores, dim=-1)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs  # (B, V) mass of the better tokens
        drop_sorted = mass_before >= opts.top_p  # the best token always stays (mass before = 0)
        scores = scores.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    probs = F.softmax(scores, dim=-1)
    chosen = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
    return chosen.squeeze(1), model_logp.gather(1, chosen).squeeze(1).float()


class SpanConstraint:
    """Which tokens keep one row's answer a span of its context (extractive decoding).

    The standard remedy for a pointer that drifts mid-span (a reader asked for "$1,459.0
    million" that copies "$1,459" and then jumps to another number's digits): the first
    token may be any context token, each later one must continue an occurrence of the
    answer so far, and eos (or a stop token) may end it once it is not empty. The model
    still chooses among the allowed tokens by its own scores; only the impossible ones go.
    State is the set of context positions where the answer so far ends."""

    def __init__(self, context: Sequence[int], end_ids: Sequence[int]) -> None:
        self.context = list(context)
        self.end_ids = [t for t in dict.fromkeys(end_ids)]
        self.ends: list[int] | None = None  # None: nothing generated yet

    def allowed(self) -> list[int]:
        if self.ends is None:
            return list(dict.fromkeys(self.context)) or self.end_ids
        follow = [self.context[j + 1] for j in self.ends if j + 1 < len(self.context)]
        return list(dict.fromkeys(follow)) + self.end_ids

    def add(self, token: int) -> None:
        if self.ends is None:
            self.ends = [j for j, t in enumerate(self.context) if t == token]
        else:
            self.ends = [
                j + 1
                for j in self.ends
                if j + 1 < len(self.context) and self.context[j + 1] == token
            ]


def constrained_next_tokens(
    head: nn.Module,
    hidden: torch.Tensor,
    allowed: Sequence[Sequence[int]],
    opts: DecodeOptions,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`next_tokens` restricted to each row's `allowed` ids (B lists, none empty): the head
    scores only those (`log_prob_of`), greedy takes the best, sampling renormalises over them
    (temperature and top-k apply; top-p over so few tokens is not worth a sort)."""
    width = max(len(a) for a in allowed)
    # (B, M)
    ids = torch.tensor([list(a) + [a[0]] * (width - len(a)) for a in allowed], device=hidden.device)
    valid = torch.tensor(
        [[True] * len(a) + [False] * (width - len(a)) for a in allowed], device=hidden.device
    )
    logp = head.log_prob_of(hidden, ids).float().masked_fill(~valid, float("-inf"))  # (B, M)
    if opts.greedy:
        pick = logp.argmax(dim=1, keepdim=True)  # (B, 1)
    else:
        scores = logp / opts.temperature
        if opts.top_k and opts.top_k < width:
            kth = scores.topk(opts.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        pick = torch.multinomial(F.softmax(scores, dim=-1), 1, generator=generator)
    return ids.gather(1, pick).squeeze(1), logp.gather(1, pick).squeeze(1)


def _branch(
    head: nn.Module, hidden: torch.Tensor, allowed: Sequence[Sequence[int]], k: int
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """The first step of an n-best decode: each row's k most likely allowed tokens (fewer when
    fewer are allowed). Returns the source row of each branch and the branches' tokens and
    log-probabilities, rows in order, a row's branches best first."""
    width = max(len(a) for a in allowed)
    # (B, M)
    ids = torch.tensor([list(a) + [a[0]] * (width - len(a)) for a in allowed], device=hidden.device)
    valid = torch.tensor(
        [[True] * len(a) + [False] * (width - len(a)) for a in allowed], device=hidden.device
    )
    logp = head.log_prob_of(hidden, ids).float().masked_fill(~valid, float("-inf"))  # (B, M)
    top = logp.topk(min(k, width), dim=1)  # (B, k) each
    picked, values = ids.gather(1, top.indices).tolist(), top.values.tolist()  # one host copy each
    expand, tokens, logps = [], [], []
    for row, n in enumerate(len(a) for a in allowed):
        for j in range(min(k, n)):
            expand.append(row)
            tokens.append(picked[row][j])
            logps.append(values[row][j])
    return expand, torch.tensor(tokens, device=hidden.device), torch.tensor(logps)


def _span_constraints(prompts: list[list[int]], opts: DecodeOptions) -> list[SpanConstraint] | None:
    if opts.span_until is None:
        return None
    ends = ([opts.eos_id] if opts.eos_id is not None else []) + [
        seq[0] for seq in opts.stop if len(seq) == 1
    ]
    if not ends:
        raise ConfigError(
            "extractive decoding needs an eos_id or a one-token stop sequence to end the span"
        )
    out = []
    for p in prompts:
        cut = p.index(opts.span_until) if opts.span_until in p else len(p)
        out.append(SpanConstraint(p[:cut], ends))
    return out


# -- the decoding loop ---------------------------------------------------------------------


@dataclass
class _Row:
    prompt_tokens: int
    tokens: list[int] = field(default_factory=list)
    steps: int = 0
    finish_reason: str | None = None
    logprob: float = 0.0

    def add(self, token: int, opts: DecodeOptions, logprob: float = 0.0) -> None:
        self.steps += 1
        self.logprob += logprob
        if opts.eos_id is not None and token == opts.eos_id:
            self.finish_reason = "eos"
            return
        self.tokens.append(token)
        for seq in opts.stop:
            if len(self.tokens) >= len(seq) and tuple(self.tokens[-len(seq) :]) == seq:
                del self.tokens[-len(seq) :]
                self.finish_reason = "stop"
                return
        if self.steps >= opts.max_new_tokens:
            self.finish_reason = "length"


def _left_pad(
    prompts: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # (B, S)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)  # (B, S) 1 = real
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


class _ExpertShare:
    """Token-slot counts per layer and expert, summed over the forwards of one call.

    Each forward's router choices are only kept (no op, no host copy per step); they are
    counted once, per layer, when the shares are asked for."""

    def __init__(self) -> None:
        self.choices: list[list[torch.Tensor]] = []  # per layer, each forward's (T, k) expert ids
        self.n_experts = 0

    def add(self, out: ModelOutput) -> None:
        for i, moe in enumerate(out.router):
            if i == len(self.choices):
                self.choices.append([])
            self.choices[i].append(moe.indices)
            self.n_experts = moe.router_logits.shape[-1]

    def shares(self) -> list[list[float]]:
        shares = []
        for choices in self.choices:
            # (E,)
            counts = torch.bincount(
                torch.cat([c.reshape(-1) for c in choices]), minlength=self.n_experts
            )
            counts = counts.double()
            shares.append(
                [round(float(v), 6) for v in (counts / counts.sum().clamp(min=1)).tolist()]
            )
        return shares


def _decode(
    model: MoETransformer, prompts: list[list[int]], opts: DecodeOptions, use_cache: bool
) -> Generator[list[_Row], None, list[Generation]]:
    """Decode every prompt; yields the rows after each step, returns the Generations.

    Grad mode is switched off per forward, not across the yields, so a consumer of `stream`
    does not run its own code under inference mode."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        generator = None
        if opts.seed is not None and not opts.greedy:
            generator = torch.Generator(device=device)
            generator.manual_seed(opts.seed)
        rows = [_Row(prompt_tokens=len(p)) for p in prompts]
        active = list(range(len(rows)))  # batch position -> row index
        ids, mask = _left_pad(prompts, opts.pad_id, device)  # (B, S) each
        # Left padding per batch row, tracked on the host so no step waits on the device for it.
        pads = [ids.shape[1] - len(p) for p in prompts]
        cache = KVCache() if use_cache else None
        share = _ExpertShare()
        # A prefix-LM reads the prompt both ways and the answer causally; without a cache every
        # step re-reads prompt + answer, so the prompt's width (columns) is passed each time.
        prefix_lm = getattr(model.config, "attention", "causal") == "prefix"
        prompt_width = ids.shape[1]

        def forward(input_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
            padded = max(pads) > 0  # no padding: the model's plain causal path
            prefix = torch.tensor(prompt_width) if prefix_lm else None
            with torch.inference_mode():
                out = model(
                    input_ids,
                    attention_mask=mask if padded else None,
                    past_key_values=cache,
                    use_cache=use_cache,
                    compute_logits=False,
                    prefix_lengths=prefix,
                )
                share.add(out)
                # (B, d), the next-token rule's head
                return out.hidden_states[:, -1], model.step_head(out)

        spans = _span_constraints(prompts, opts)
        origin = list(range(len(rows)))  # row -> the prompt it answers
        hidden, head = forward(ids)  # prefill
        while True:
            with torch.inference_mode():
                if spans is None:
                    chosen, chosen_logp = next_tokens(head, hidden, opts, generator)  # (B,) each
                elif opts.branches > 1 and not rows[0].steps:
                    # n-best: each prompt's rows fork here, one per likely first token; the cache
                    # and mask rows are repeated (one prefill), every branch then runs greedily.
                    expand, chosen, chosen_logp = _branch(
                        head, hidden, [s.allowed() for s in spans], opts.branches
                    )
                    expand_t = torch.tensor(expand, device=device)
                    rows = [_Row(prompt_tokens=rows[i].prompt_tokens) for i in expand]
                    spans = [copy.deepcopy(spans[i]) for i in expand]
                    origin, pads, active = (
                        expand,
                        [pads[i] for i in expand],
                        list(range(len(expand))),
                    )
                    ids, mask = ids[expand_t], mask[expand_t]
                    if cache is not None:
                        cache.select(expand_t)
                else:
                    allowed = [spans[row].allowed() for row in active]
                    chosen, chosen_logp = constrained_next_tokens(
                        head, hidden, allowed, opts, generator
                    )
            for row, token, logp in zip(active, chosen.tolist(), chosen_logp.tolist(), strict=True):
                rows[row].add(token, opts, logp)
                if spans is not None:
                    spans[row].add(token)
            yield rows
            keep = [j for j, row in enumerate(active) if rows[row].finish_reason is None]
            if not keep:
                break
            if len(keep) < len(active):
                keep_t = torch.tensor(keep, device=device)
                active = [active[j] for j in keep]
                pads = [pads[j] for j in keep]
                chosen, mask, ids = chosen[keep_t], mask[keep_t], ids[keep_t]
                if cache is not None:
                    cache.select(keep_t)
                # Columns that are padding in every remaining row: drop them from mask and cache.
                lead = min(pads)
                if lead:
                    pads = [p - lead for p in pads]
                    prompt_width -= lead
                    mask, ids = mask[:, lead:], ids[:, lead:]
                    if cache is not None:
                        cache.drop_leading(lead)
            if max(pads) > 0:  # else the mask is never read again: padding only ever shrinks
                mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)  # (B, S_past + 1)
            step_ids = chosen[:, None]  # (B, 1)
            if cache is None:  # recompute: the whole sequence again
                ids = torch.cat([ids, step_ids], dim=1)  # (B, S + 1)
                hidden, head = forward(ids)
            else:
                hidden, head = forward(step_ids)
        shares = share.shares()
        done = [
            Generation(
                tokens=row.tokens,
                finish_reason=row.finish_reason or "length",
                prompt_tokens=row.prompt_tokens,
                expert_share=shares,
                logprob=row.logprob,
            )
            for row in rows
        ]
        if len(done) == len(prompts):
            return done
        grouped: list[list[Generation]] = [[] for _ in prompts]
        for i, generation in zip(origin, done, strict=True):
            grouped[i].append(generation)
        out = []
        for group in grouped:  # the most likely answer first, its rivals after it
            best, *rest = sorted(group, key=lambda g: -g.logprob)
            best.alternatives = rest
            out.append(best)
        return out
    finally:
        model.train(was_training)


def _options(model: MoETransformer, **kwargs: Any) -> DecodeOptions:
    stop = kwargs.pop("stop", None)
    opts = DecodeOptions(stop=tuple(tuple(int(t) for t in s) for s in stop or ()), **kwargs)
    _check_options(opts, model.config.vocab_size)
    return opts


def _run_to_end(loop: Generator[list[_Row], None, list[Generation]]) -> list[Generation]:
    while True:
        try:
            next(loop)
        except StopIteration as done:
            return done.value


def generate(
    model: MoETransformer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop: Sequence[Sequence[int]] | None = None,
    eos_id: int | None,
    pad_id: int,
    seed: int | None = None,
    span_until: int | None = None,
    branches: int = 1,
) -> list[Generation]:
    """Decode a batch of prompts (token-id lists of any lengths) with the KV cache.

    temperature 0 is greedy (top_k / top_p then have no effect); `seed` makes sampling
    deterministic. A row ends at `eos_id` ("eos"), at the end of any `stop` sequence
    ("stop"; the sequence is cut from the output) or after `max_new_tokens` ("length").
    `span_until` set: each answer is a span of its prompt before that token (`SpanConstraint`).
    `branches` > 1 (greedy, extractive): n-best, one Generation per prompt, the most likely of
    its branches, with the others in `alternatives`."""
    opts = _options(
        model,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        stop=stop,
        eos_id=eos_id,
        pad_id=pad_id,
        seed=seed,
        span_until=span_until,
        branches=branches,
    )
    checked = _check_prompts(
        prompts, opts.max_new_tokens, model.config.vocab_size, model.config.max_seq_len
    )
    return _run_to_end(_decode(model, checked, opts, use_cache=True))


def recompute_generate(
    model: MoETransformer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop: Sequence[Sequence[int]] | None = None,
    eos_id: int | None,
    pad_id: int,
) -> list[Generation]:
    """Greedy decoding WITHOUT the KV cache: every step re-runs the whole sequence.

    The bench's baseline and the cache's correctness reference; same stopping rules."""
    opts = _options(model, max_new_tokens=max_new_tokens, stop=stop, eos_id=eos_id, pad_id=pad_id)
    checked = _check_prompts(
        prompts, opts.max_new_tokens, model.config.vocab_size, model.config.max_seq_len
    )
    return _run_to_end(_decode(model, checked, opts, use_cache=False))


def _pending_stop(tokens: list[int], stop: tuple[tuple[int, ...], ...]) -> int:
    """Length of the longest tail of `tokens` that is a proper prefix of a stop sequence."""
    longest = 0
    for seq in stop:
        for n in range(min(len(seq) - 1, len(tokens)), longest, -1):
            if tuple(tokens[-n:]) == seq[:n]:
                longest = n
                break
    return longest


def stream(
    model: MoETransformer,
    prompt: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop: Sequence[Sequence[int]] | None = None,
    eos_id: int | None,
    pad_id: int,
    seed: int | None = None,
    span_until: int | None = None,
    branches: int = 1,
) -> Iterator[int]:
    """Yield one prompt's token ids as they are produced; the same tokens `generate` returns.

    Tokens that could begin a stop sequence are held back until they cannot (and dropped if
    they complete it), so a client never receives part of a stop sequence. The generator's
    return value (`StopIteration.value`, or `result = yield from stream(...)`) is the Generation.
    """
    if branches != 1:
        raise ConfigError(
            f"stream decodes one answer as it goes; branches must be 1, got {branches!r}"
        )
    opts = _options(
        model,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        stop=stop,
        eos_id=eos_id,
        pad_id=pad_id,
        seed=seed,
        span_until=span_until,
    )
    if isinstance(prompt, Sequence) and prompt and isinstance(prompt[0], Sequence):
        raise DataError(
            "stream takes one prompt (a list of token ids), got a list of lists; use generate"
        )
    checked = _check_prompts(
        [prompt], opts.max_new_tokens, model.config.vocab_size, model.config.max_seq_len
    )
    return _stream(_decode(model, checked, opts, use_cache=True), opts)


def _stream(
    loop: Generator[list[_Row], None, list[Generation]], opts: DecodeOptions
) -> Generator[int, None, Generation]:
    sent = 0
    try:
        while True:
            (row,) = next(loop)
            safe = (
                len(row.tokens)
                if row.finish_reason
                else len(row.tokens) - _pending_stop(row.tokens, opts.stop)
            )
            yield from row.tokens[sent:safe]
            sent = max(sent, safe)
    except StopIteration as done:
        return done.value[0]
    finally:
        loop.close()  # a client that stops reading releases the model's train/eval state
