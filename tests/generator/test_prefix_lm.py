"""Prefix-LM attention and the question-match feature: equivalences to the causal reference."""

from __future__ import annotations

import pytest
import torch

from rayrag.generator.checkpoint import load_checkpoint, save_checkpoint
from rayrag.generator.generate import generate, recompute_generate
from rayrag.generator.model import IGNORE_INDEX, MoETransformer, QuestionMatch
from tests.generator.test_model import _one_thread, left_pad, log_probs, tiny_model  # noqa: F401 (autouse)

SEP = 3


def twin(model: MoETransformer, **overrides) -> MoETransformer:
    """The same weights under another attention / feature setting."""
    other = MoETransformer(model.config.model_copy(update=overrides))
    other.load_state_dict(model.state_dict(), strict=False)
    return other.eval()


def test_prefix_of_zero_is_the_causal_model_exactly():
    causal = tiny_model()
    prefix = twin(causal, attention="prefix")
    ids = torch.randint(4, 128, (2, 12))
    labels = ids.clone()  # every position labelled: language modelling, no prefix
    ref, out = causal(ids, labels=labels), prefix(ids, labels=labels)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=0)
    zero = prefix(ids, prefix_lengths=torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(zero.logits, ref.logits, rtol=0, atol=0)


def test_prefix_positions_see_later_prompt_tokens_and_the_answer_stays_causal():
    model = tiny_model(attention="prefix")
    ids = torch.randint(4, 128, (1, 12))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 8:] = ids[0, 8:]  # prompt = columns 0..7, answer = 8..11
    changed_prompt = ids.clone()
    changed_prompt[0, 6] = (ids[0, 6] + 1) % 124 + 4
    base, edited = model(ids, labels=labels), model(changed_prompt, labels=labels)
    # Position 2 reads position 6 (bidirectional prompt); a causal model could not.
    assert not torch.allclose(base.logits[0, 2], edited.logits[0, 2])
    changed_answer = ids.clone()
    changed_answer[0, 10] = (ids[0, 10] + 1) % 124 + 4
    later = model(changed_answer, labels=labels)
    # Everything before the changed answer token is untouched: the answer is causal (up to
    # float rounding: the MoE groups a different token set).
    torch.testing.assert_close(later.logits[0, :10], base.logits[0, :10], rtol=1e-5, atol=1e-6)


def test_prefix_from_labels_equals_explicit_prefix_lengths_per_row():
    model = tiny_model(attention="prefix")
    ids = torch.randint(4, 128, (2, 10))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 6:] = ids[0, 6:]
    labels[1, 3:] = ids[1, 3:]
    implicit = model(ids, labels=labels)
    explicit = model(ids, labels=labels, prefix_lengths=torch.tensor([6, 3]))
    torch.testing.assert_close(implicit.logits, explicit.logits, rtol=0, atol=0)
    torch.testing.assert_close(implicit.loss, explicit.loss, rtol=0, atol=0)


def test_prefill_then_cached_decode_equals_one_forward_over_prompt_and_answer():
    model = tiny_model(attention="prefix")
    prompt, answer = torch.randint(4, 128, (1, 9)), torch.randint(4, 128, (1, 4))
    full = model(torch.cat([prompt, answer], 1), prefix_lengths=torch.tensor([9]))
    out = model(prompt, use_cache=True)  # a first forward without labels: all of it is the prefix
    steps = [log_probs(out)[:, -1]]
    for t in range(answer.shape[1] - 1):
        out = model(answer[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
        steps.append(log_probs(out)[:, -1])
    torch.testing.assert_close(
        torch.stack(steps, 1), log_probs(full)[:, 8:12], rtol=1e-5, atol=1e-5
    )


def test_left_padded_prefix_rows_equal_each_row_alone():
    model = tiny_model(attention="prefix")
    rows = [torch.randint(4, 128, (n,)) for n in (5, 9)]
    ids, mask = left_pad(rows)
    batch = log_probs(model(ids, attention_mask=mask))
    for i, row in enumerate(rows):
        alone = log_probs(model(row[None]))
        torch.testing.assert_close(batch[i, -len(row) :], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("copy_head", [False, True])
def test_generation_with_cache_equals_recomputation_and_batching(copy_head):
    model = tiny_model(
        attention="prefix", copy_head=copy_head, copy_dim=16, question_match=copy_head
    )
    prompts = [[5, 9, 11, 7, SEP, 9, 12, SEP, 20], [6, 7, 8, SEP, 8, SEP, 21, 22, 23, 24]]
    cached = generate(model, prompts, max_new_tokens=6, eos_id=1, pad_id=0)
    recomputed = recompute_generate(model, prompts, max_new_tokens=6, eos_id=1, pad_id=0)
    alone = [generate(model, [p], max_new_tokens=6, eos_id=1, pad_id=0)[0] for p in prompts]
    assert [g.tokens for g in cached] == [g.tokens for g in recomputed] == [g.tokens for g in alone]


def test_question_match_flags_context_tokens_that_the_question_repeats():
    feature = QuestionMatch(8, SEP)
    ids = torch.tensor([[2, 40, 41, 42, 40, 41, SEP, 41, 50, 40, 41, SEP, 41, 42]])
    # context 2 40 41 42 40 41 | question 41 50 40 41 | answer 41 42
    unigram, bigram = feature.flags(ids)
    assert unigram[0].tolist() == [False, True, True, False, True, True] + [False] * 8
    # "40 41" is a question bigram: its second token flags, at both places in the context.
    assert bigram[0].tolist() == [False, False, True, False, False, True] + [False] * 8
    no_question = torch.tensor([[2, 40, 41, 42]])  # a language-modelling window: nothing to match
    assert not any(flag.any() for flag in feature.flags(no_question))


def test_question_match_starts_as_a_no_op_and_is_trained():
    base = tiny_model(attention="prefix")
    matched = twin(base, question_match=True)
    ids = torch.tensor([[5, 40, 41, SEP, 41, SEP, 9, 10]])
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 6:] = ids[0, 6:]
    torch.testing.assert_close(
        matched(ids, labels=labels).logits, base(ids, labels=labels).logits, rtol=0, atol=0
    )
    matched.train()
    matched(ids, labels=labels).loss.backward()
    assert (
        matched.question_match.weight.grad is not None
        and matched.question_match.weight.grad.abs().sum() > 0
    )


def test_checkpoint_round_trip_keeps_prefix_attention_and_question_match(tmp_path):
    model = tiny_model(attention="prefix", question_match=True, copy_head=True, copy_dim=16)
    with torch.no_grad():
        model.question_match.weight.normal_()
        model.question_match.bigram.normal_()
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt").eval()
    assert loaded.config.attention == "prefix" and loaded.config.question_match
    ids = torch.tensor([[5, 40, 41, SEP, 41, SEP, 9, 10]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
