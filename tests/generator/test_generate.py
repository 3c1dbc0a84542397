"""Decoding: KV cache vs recompute, batching with left padding, stopping, sampling, streaming."""

from __future__ import annotations

import pytest
import torch

from rayrag.config import DecodingConfig, GeneratorConfig
from rayrag.errors import ConfigError, DataError
from rayrag.generator.generate import DecodeOptions, generate, recompute_generate, stream
from rayrag.generator.model import MoETransformer

VOCAB = 200
PROMPTS = [[5, 17, 42, 9, 88, 3, 61], [120, 7], [33, 150, 2, 19]]
GREEDY = dict(eos_id=None, pad_id=0)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matmuls: on a shared 2-core box, intra-op thread handoff costs more than the math.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(head: str = "adaptive", seed: int = 0) -> MoETransformer:
    torch.manual_seed(seed)
    adaptive = head == "adaptive"
    cfg = GeneratorConfig(
        vocab_size=VOCAB,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=48,
        n_experts=4,
        experts_per_token=2,
        max_seq_len=64,
        adaptive_softmax_cutoffs=(40, 120) if adaptive else (),
    )
    return MoETransformer(cfg, token_order=torch.randperm(VOCAB) if adaptive else None).eval()


@pytest.fixture(scope="module")
def model() -> MoETransformer:
    return tiny_model()


def last_hidden(model: MoETransformer, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([ids]), compute_logits=False).hidden_states[:, -1]  # (1, d)


def tokens(generations) -> list[list[int]]:
    return [g.tokens for g in generations]


# -- greedy and the cache ------------------------------------------------------------------


def test_greedy_is_deterministic_and_runs_to_length(model):
    first = generate(model, PROMPTS, max_new_tokens=12, **GREEDY)
    assert tokens(first) == tokens(generate(model, PROMPTS, max_new_tokens=12, **GREEDY))
    assert all(g.finish_reason == "length" and len(g.tokens) == 12 for g in first)
    assert [g.prompt_tokens for g in first] == [7, 2, 4]
    shares = first[0].expert_share
    assert len(shares) == 2 and all(
        abs(sum(layer) - 1) < 1e-4 and len(layer) == 4 for layer in shares
    )


@pytest.mark.parametrize("head", ["adaptive", "full"])
def test_kv_cache_greedy_equals_recomputing_the_sequence(head):
    model = tiny_model(head, seed=1)
    cached = generate(model, PROMPTS, max_new_tokens=16, **GREEDY)
    assert tokens(cached) == tokens(recompute_generate(model, PROMPTS, max_new_tokens=16, **GREEDY))
    # And each step's token is the argmax of the full distribution on the recomputed sequence.
    seq = list(PROMPTS[0])
    for token in cached[0].tokens[:6]:
        with torch.inference_mode():
            assert token == int(model.head.log_prob(last_hidden(model, seq)).argmax(-1))
        seq.append(token)


def test_batched_prompts_of_different_lengths_equal_each_prompt_alone(model):
    batched = generate(model, PROMPTS, max_new_tokens=12, **GREEDY)
    alone = [generate(model, [p], max_new_tokens=12, **GREEDY)[0] for p in PROMPTS]
    assert tokens(batched) == tokens(alone)


@pytest.mark.parametrize("row", [0, 1])  # row 0 is the longest: dropping it trims leading padding
def test_rows_finishing_at_different_steps_are_dropped_without_changing_the_others(model, row):
    free = tokens(generate(model, PROMPTS, max_new_tokens=12, **GREEDY))
    eos = free[row][3]  # `row` ends by step 4; the others end whenever (if ever) they make it
    batched = generate(model, PROMPTS, max_new_tokens=12, eos_id=eos, pad_id=0)
    alone = [generate(model, [p], max_new_tokens=12, eos_id=eos, pad_id=0)[0] for p in PROMPTS]
    assert tokens(batched) == tokens(alone)
    assert [g.finish_reason for g in batched] == [g.finish_reason for g in alone]
    assert batched[row].finish_reason == "eos" and len(batched[row].tokens) <= 3
    assert any(g.finish_reason == "length" for g in batched)  # somebody outlived the dropped row
    assert tokens(
        recompute_generate(model, PROMPTS, max_new_tokens=12, eos_id=eos, pad_id=0)
    ) == tokens(batched)


# -- stopping ------------------------------------------------------------------------------


def test_eos_ends_a_row_and_is_not_in_the_output(model):
    free = generate(model, [PROMPTS[0]], max_new_tokens=12, **GREEDY)[0].tokens
    eos = free[4]
    out = generate(model, [PROMPTS[0]], max_new_tokens=12, eos_id=eos, pad_id=0)[0]
    assert out.finish_reason == "eos" and out.tokens == free[: free.index(eos)]


def test_stop_sequence_ends_a_row_and_is_cut_from_the_output(model):
    free = generate(model, [PROMPTS[2]], max_new_tokens=12, **GREEDY)[0].tokens
    seq = free[5:7]
    first = next(i for i in range(len(free)) if free[i : i + 2] == seq)
    out = generate(
        model, [PROMPTS[2]], max_new_tokens=12, stop=[[VOCAB - 1, VOCAB - 2], seq], **GREEDY
    )[0]
    assert out.finish_reason == "stop" and out.tokens == free[:first]
    # A stop sequence that never appears leaves the row to run to length.
    out = generate(model, [PROMPTS[2]], max_new_tokens=12, stop=[[VOCAB - 1, VOCAB - 2]], **GREEDY)[
        0
    ]
    assert out.finish_reason == "length" and out.tokens == free


# -- sampling ------------------------------------------------------------------------------


def test_seeded_sampling_is_reproducible_and_seeds_differ(model):
    with torch.inference_mode():
        probs = model.head.log_prob(last_hidden(model, PROMPTS[0])).exp()
    assert float(probs.max()) < 0.5  # not peaked: sampling has room to differ
    kwargs = dict(max_new_tokens=16, temperature=1.0, **GREEDY)
    a = tokens(generate(model, PROMPTS, seed=7, **kwargs))
    assert a == tokens(generate(model, PROMPTS, seed=7, **kwargs))
    assert a != tokens(generate(model, PROMPTS, seed=8, **kwargs))
    assert a != tokens(generate(model, PROMPTS, **{**kwargs, "temperature": 0.0}))


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_top_k_sampling_only_picks_from_the_heads_top_k(model, top_p):
    k = 3
    for seed in range(3):
        out = generate(
            model,
            [PROMPTS[0]],
            max_new_tokens=10,
            temperature=1.5,
            top_k=k,
            top_p=top_p,
            seed=seed,
            **GREEDY,
        )[0].tokens
        seq = list(PROMPTS[0])
        for token in out:
            with torch.inference_mode():
                _, ids = model.head.topk(last_hidden(model, seq), k)
            assert token in ids[0].tolist()
            seq.append(token)


def test_tiny_top_p_equals_greedy(model):
    greedy = tokens(generate(model, PROMPTS, max_new_tokens=12, **GREEDY))
    nucleus = generate(
        model, PROMPTS, max_new_tokens=12, temperature=1.0, top_p=1e-6, seed=3, **GREEDY
    )
    assert tokens(nucleus) == greedy


def test_each_rule_asks_the_head_only_for_what_it_needs(model, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("full distribution computed")

    expected_greedy = tokens(generate(model, PROMPTS, max_new_tokens=4, **GREEDY))
    monkeypatch.setattr(model.head, "log_prob", refuse)
    assert tokens(generate(model, PROMPTS, max_new_tokens=4, **GREEDY)) == expected_greedy
    generate(model, PROMPTS, max_new_tokens=4, temperature=0.8, top_k=5, seed=0, **GREEDY)
    with pytest.raises(AssertionError, match="full distribution"):
        generate(model, PROMPTS, max_new_tokens=4, temperature=0.8, top_p=0.9, seed=0, **GREEDY)


# -- streaming -----------------------------------------------------------------------------


@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "top_k": 20, "seed": 5}])
def test_stream_yields_the_tokens_generate_returns(model, sampling):
    expected = generate(model, [PROMPTS[1]], max_new_tokens=12, **sampling, **GREEDY)[0].tokens
    assert list(stream(model, PROMPTS[1], max_new_tokens=12, **sampling, **GREEDY)) == expected


def test_stream_never_emits_part_of_a_stop_sequence_and_returns_the_generation(model):
    free = generate(model, [PROMPTS[0]], max_new_tokens=12, **GREEDY)[0].tokens
    stop = [free[6:9], [free[2], VOCAB - 1]]  # the second starts matching at step 3 and then fails
    it = stream(model, PROMPTS[0], max_new_tokens=12, stop=stop, **GREEDY)
    seen = []
    try:
        while True:
            seen.append(next(it))
            assert not torch.is_inference_mode_enabled()  # grad mode does not leak to the consumer
    except StopIteration as done:
        result = done.value
    expected = generate(model, [PROMPTS[0]], max_new_tokens=12, stop=stop, **GREEDY)[0]
    assert (
        seen == result.tokens == expected.tokens
        and result.finish_reason == expected.finish_reason == "stop"
    )


def test_training_mode_is_restored_after_decoding():
    model = tiny_model().train()
    generate(model, PROMPTS, max_new_tokens=2, **GREEDY)
    assert model.training
    it = stream(model, PROMPTS[0], max_new_tokens=5, **GREEDY)
    next(it)
    it.close()  # a client that hangs up
    assert model.training


def test_decode_options_from_config(model):
    opts = DecodeOptions.from_config(
        DecodingConfig(max_new_tokens=6, temperature=0.7, top_k=4),
        eos_id=2,
        pad_id=0,
        stop=[[9, 9]],
        seed=1,
    )
    assert opts.stop == ((9, 9),) and not opts.greedy
    out = generate(model, PROMPTS, **opts.kwargs())
    assert tokens(out) == tokens(generate(model, PROMPTS, **opts.kwargs()))
    assert all(len(g.tokens) <= 6 for g in out)


# -- bad inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompts", "kwargs", "error", "message"),
    [
        ([], {}, DataError, "at least one prompt, got an empty list"),
        ([[1, 2], []], {}, DataError, "prompt 1 is empty"),
        ([1, 2, 3], {}, DataError, "flat list of ints"),
        (
            [[1, VOCAB]],
            {},
            DataError,
            f"outside the vocabulary [0, {VOCAB}), first {VOCAB} at position 1",
        ),
        ([[-1, 4]], {}, DataError, "first -1 at position 0"),
        (
            [[1] * 60],
            {},
            DataError,
            "prompt 0 has 60 tokens + max_new_tokens 5 = 65 > max_seq_len 64",
        ),
        ([[1]], {"max_new_tokens": 0}, ConfigError, "max_new_tokens must be an int > 0, got 0"),
        (
            [[1]],
            {"temperature": -0.5},
            ConfigError,
            "temperature must be a finite number >= 0 (0 = greedy), got -0.5",
        ),
        ([[1]], {"temperature": float("nan")}, ConfigError, "temperature must be"),
        ([[1]], {"top_p": 0.0}, ConfigError, "top_p must be in (0, 1], got 0.0"),
        ([[1]], {"top_p": 1.5}, ConfigError, "top_p must be in (0, 1], got 1.5"),
        ([[1]], {"top_k": -1}, ConfigError, "top_k must be an int >= 0 (0 = off), got -1"),
        (
            [[1]],
            {"pad_id": VOCAB},
            ConfigError,
            f"pad_id must be a token id in [0, {VOCAB}), got {VOCAB}",
        ),
        ([[1]], {"eos_id": -3}, ConfigError, "eos_id must be a token id"),
        ([[1]], {"stop": [[4], []]}, DataError, "stop sequence 1 is empty"),
        ([[1]], {"stop": [[4, 999]]}, DataError, "stop sequence 0 has token ids outside"),
    ],
)
def test_bad_inputs_raise_clear_errors(model, prompts, kwargs, error, message):
    call = {"max_new_tokens": 5, **GREEDY, **kwargs}
    with pytest.raises(error) as excinfo:
        generate(model, prompts, **call)
    assert message in str(excinfo.value)


def test_stream_checks_its_prompt_too(model):
    with pytest.raises(DataError, match="stream takes one prompt"):
        stream(model, [[1, 2]], max_new_tokens=3, **GREEDY)
    with pytest.raises(DataError, match="prompt 0 is empty"):
        stream(model, [], max_new_tokens=3, **GREEDY)
    with pytest.raises(DataError, match="> max_seq_len 64"):
        recompute_generate(model, [[1] * 64], max_new_tokens=1, **GREEDY)


def test_expert_share_counted_once_equals_the_per_step_routing_stats_summed(model):
    # generate keeps each forward's router choices and counts them at the end; replaying
    # the same forwards and summing every step's RoutingStats must give the same shares.
    generations = generate(model, PROMPTS, max_new_tokens=5, **GREEDY)
    width = max(len(p) for p in PROMPTS)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])  # (B, S) left-padded
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in PROMPTS])
    summed = [torch.zeros(4, dtype=torch.float64) for _ in range(2)]
    with torch.inference_mode():
        out = model(ids, attention_mask=mask, use_cache=True, compute_logits=False)
        for step in range(5):
            for i, stats in enumerate(out.routing):
                summed[i] += stats.token_share.double() * stats.tokens
            if step == 4:
                break
            mask = torch.cat([mask, torch.ones(len(PROMPTS), 1, dtype=torch.long)], dim=1)
            step_ids = torch.tensor([[g.tokens[step]] for g in generations])  # (B, 1)
            out = model(
                step_ids,
                attention_mask=mask,
                past_key_values=out.past_key_values,
                use_cache=True,
                compute_logits=False,
            )
    expected = [(c / c.sum()).tolist() for c in summed]
    for got, want in zip(generations[0].expert_share, expected, strict=True):
        assert got == pytest.approx(want, abs=2e-6)


@pytest.mark.parametrize(
    "sampling",
    [
        {},
        {"temperature": 1.0, "top_k": 20, "seed": 5},
        {"temperature": 0.7, "top_p": 0.9, "seed": 2},
    ],
)
def test_logprob_is_the_models_log_probability_of_what_it_emitted(model, sampling):
    (generation,) = generate(model, [PROMPTS[0]], max_new_tokens=6, **GREEDY, **sampling)
    seq, expected = list(PROMPTS[0]), 0.0
    for token in generation.tokens:
        with torch.inference_mode():
            expected += float(model.head.log_prob(last_hidden(model, seq))[0, token])
        seq.append(token)
    assert generation.logprob == pytest.approx(expected, abs=1e-4)
    assert generation.logprob < 0


# -- extractive decoding -------------------------------------------------------------------

SEP = 199  # closes the context, as the reader's <sep> does


def is_span(answer: list[int], context: list[int]) -> bool:
    return any(
        context[i : i + len(answer)] == answer for i in range(len(context) - len(answer) + 1)
    )


def test_span_constraint_follows_every_occurrence_of_the_answer_so_far():
    from rayrag.generator.generate import SpanConstraint

    span = SpanConstraint([5, 6, 7, 5, 8], end_ids=[2])
    assert span.allowed() == [
        5,
        6,
        7,
        8,
    ]  # any context token may start; eos may not end an empty answer
    span.add(5)
    assert span.allowed() == [6, 8, 2]  # both occurrences of 5 continue
    span.add(8)
    assert span.allowed() == [2]  # the context ends: only eos
    span = SpanConstraint([5, 6], end_ids=[2, 2])
    span.add(6)
    assert span.allowed() == [2]


@pytest.mark.parametrize("head", ["adaptive", "full"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_extractive_answers_are_spans_of_the_context_before_the_separator(head, temperature):
    model = tiny_model(head, seed=3)
    prompts = [
        [5, 17, 42, 9, 88, SEP, 61, 70],
        [120, 7, 33, 7, 150, SEP, 2, 19, 44],
        [33, 150, 19, SEP, 4],
    ]
    kwargs = dict(max_new_tokens=6, eos_id=3, pad_id=0, temperature=temperature, seed=7)
    free = generate(model, prompts, **kwargs)
    spans = generate(model, prompts, span_until=SEP, **kwargs)
    contexts = [p[: p.index(SEP)] for p in prompts]
    # random weights wander
    assert not all(is_span(g.tokens, c) for g, c in zip(free, contexts, strict=True))
    for g, context in zip(spans, contexts, strict=True):
        assert g.tokens and is_span(g.tokens, context), (g.tokens, context)
        assert g.finish_reason in ("eos", "length")
    if (
        temperature == 0
    ):  # greedy: batched rows equal each row alone; the stream yields the same tokens
        alone = [generate(model, [p], span_until=SEP, **kwargs)[0].tokens for p in prompts]
        assert [g.tokens for g in spans] == alone
        assert list(stream(model, prompts[1], span_until=SEP, **kwargs)) == spans[1].tokens


def test_extractive_greedy_takes_the_models_best_allowed_token():
    model = tiny_model("adaptive", seed=3)
    prompt = [5, 17, 42, 9, 88, SEP, 61, 70]
    (g,) = generate(model, [prompt], max_new_tokens=1, eos_id=3, pad_id=0, span_until=SEP)
    with torch.inference_mode():
        logp = model.lm_head.log_prob(last_hidden(model, prompt))[0]  # (V,)
    allowed = [5, 17, 42, 9, 88]
    assert g.tokens == [max(allowed, key=lambda t: logp[t].item())]
    assert g.logprob == pytest.approx(logp[g.tokens[0]].item(), abs=1e-5)


def test_extractive_decoding_needs_a_way_to_end_the_span(model):
    with pytest.raises(ConfigError, match="extractive decoding needs an eos_id"):
        generate(model, [[5, SEP]], max_new_tokens=2, eos_id=None, pad_id=0, span_until=SEP)
    opts = DecodeOptions.from_config(
        DecodingConfig(extractive=True), eos_id=2, pad_id=0, span_until=SEP
    )
    assert opts.span_until == SEP
    assert (
        DecodeOptions.from_config(DecodingConfig(), eos_id=2, pad_id=0, span_until=SEP).span_until
        is None
    )


@pytest.mark.parametrize("head", ["adaptive", "full"])
def test_n_best_branches_hold_the_greedy_answer_and_are_ranked_by_likelihood(head):
    model = tiny_model(head, seed=3)
    prompts = [
        [5, 17, 42, 9, 88, SEP, 61, 70],
        [120, 7, 33, 7, 150, SEP, 2, 19, 44],
        [33, 150, SEP, 4],
    ]
    kwargs = dict(max_new_tokens=6, eos_id=3, pad_id=0, span_until=SEP)
    greedy = generate(model, prompts, **kwargs)
    best = generate(model, prompts, branches=3, **kwargs)
    assert len(best) == len(prompts)
    for g, nbest, prompt in zip(greedy, best, prompts, strict=True):
        context = prompt[: prompt.index(SEP)]
        candidates = [nbest, *nbest.alternatives]
        # [33, 150]: two tokens can start a span
        assert len(candidates) == min(3, len(set(context)))
        assert all(c.tokens and is_span(c.tokens, context) for c in candidates)
        # one branch per first token
        assert len({c.tokens[0] for c in candidates}) == len(candidates)
        # The greedy answer is the branch of the best first token; the most likely comes first.
        assert any(
            c.tokens == g.tokens and c.logprob == pytest.approx(g.logprob, abs=1e-5)
            for c in candidates
        )
        assert [c.logprob for c in candidates] == sorted(
            (c.logprob for c in candidates), reverse=True
        )
        assert nbest.logprob >= g.logprob - 1e-5
    # Batched rows equal each prompt alone, alternatives too.
    alone = [generate(model, [p], branches=3, **kwargs)[0] for p in prompts]
    assert [[c.tokens for c in (a, *a.alternatives)] for a in alone] == [
        [c.tokens for c in (b, *b.alternatives)] for b in best
    ]


def test_n_best_needs_greedy_extractive_decoding(model):
    with pytest.raises(ConfigError, match="branches > 1 needs greedy, extractive decoding"):
        generate(model, [[5, 6]], max_new_tokens=2, eos_id=3, pad_id=0, branches=2)
    with pytest.raises(ConfigError, match="branches > 1 needs greedy"):
        generate(
            model,
            [[5, SEP]],
            max_new_tokens=2,
            eos_id=3,
            pad_id=0,
            span_until=SEP,
            branches=2,
            temperature=1.0,
            seed=1,
        )
    with pytest.raises(ConfigError, match="branches must be 1"):
        stream(model, [5, SEP], max_new_tokens=2, eos_id=3, pad_id=0, span_until=SEP, branches=2)
    with pytest.raises(ValueError, match="candidates 4 needs extractive: true"):
        DecodingConfig(candidates=4)
    opts = DecodeOptions.from_config(
        DecodingConfig(extractive=True, candidates=4), eos_id=2, pad_id=0, span_until=SEP
    )
    assert opts.branches == 4
    # a sweep's temperature knob
    sampled = DecodingConfig(extractive=True, candidates=4, temperature=0.7)
    assert DecodeOptions.from_config(sampled, eos_id=2, pad_id=0, span_until=SEP).branches == 1
