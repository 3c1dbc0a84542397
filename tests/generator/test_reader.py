"""The reader: cited answers from a checkpoint, truncation by rank, clear errors on bad input."""

from __future__ import annotations

import json

import pytest
import torch

from rayrag.config import RAGConfig
from rayrag.errors import ConfigError, DataError, ModelError
from rayrag.generator.checkpoint import save_checkpoint
from rayrag.generator.model import MoETransformer
from rayrag.generator.reader import (
    Reader,
    ReaderResult,
    cited_markers,
    result_to_json,
    weights_digest,
)
from rayrag.generator.tokenizer import RayragTokenizer, train_tokenizer
from rayrag.types import Evidence, Fact, Passage

QUESTION = "Who acquired Brightwater Labs?"
WORDS = [
    "Helix",
    "Corp",
    "acquired",
    "Brightwater",
    "Labs",
    "in",
    "2019",
    "the",
    "question",
    "answer",
    "context",
    "facts",
    "founded",
    "by",
    "Ana",
    "Lima",
    "who",
    "what",
    "museum",
    "Passage",
    "says",
]
WINDOW = 160  # the tiny model's max_seq_len
NEW_TOKENS = 8


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matmuls: on a shared 2-core box, intra-op thread handoff costs more than the math.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_tokenizer() -> RayragTokenizer:
    texts = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(8)) + "." for i in range(300)]
    return train_tokenizer(texts, vocab_size=350)


def tiny_config(**decoding) -> RAGConfig:
    return RAGConfig().with_overrides(
        [f"decoding.{k}={v}" for k, v in {"max_new_tokens": NEW_TOKENS, **decoding}.items()]
    )


def write_checkpoint(path, tok: RayragTokenizer, vocab_size: int | None = None, seed: int = 0):
    """An untrained tiny MoE (full softmax) + its tokenizer, as `rayrag train` would leave them."""
    from rayrag.config import GeneratorConfig

    torch.manual_seed(seed)
    config = GeneratorConfig(
        vocab_size=vocab_size or tok.vocab_size,
        d_model=32,
        n_layers=1,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=48,
        n_experts=2,
        experts_per_token=1,
        max_seq_len=WINDOW,
        adaptive_softmax_cutoffs=(),
    )
    tok_dir = path.parent / f"{path.name}-tok"
    tok_dir.mkdir()
    tok.save(tok_dir)
    return save_checkpoint(MoETransformer(config), path, tokenizer_path=tok_dir)


@pytest.fixture(scope="module")
def tok() -> RayragTokenizer:
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tok):
    return write_checkpoint(tmp_path_factory.mktemp("reader") / "ckpt", tok)


@pytest.fixture(scope="module")
def reader(checkpoint) -> Reader:
    reader = Reader(checkpoint, tiny_config(), device="cpu")
    reader.warm_up()
    return reader


def passages(n: int) -> tuple[Passage, ...]:
    return tuple(
        Passage(
            chunk_id=f"c{i}",
            doc_id=f"d{i}",
            text=f"Passage {i} says Helix Corp acquired it.",
            score=1.0 - i / 10,
            title=f"Doc {i}",
        )
        for i in range(1, n + 1)
    )


FACTS = (Fact("Helix Corp", "acquired", "Brightwater Labs", 0.9, ("c1",), ("d1",)),)


def test_constructor_is_cheap_and_warm_up_idempotent(checkpoint):
    reader = Reader(checkpoint, tiny_config(), device="cpu")
    assert reader._model is None  # nothing loaded until asked
    reader.warm_up()
    model = reader._model
    reader.warm_up()
    assert reader._model is model and not model.training


def test_answer_cites_exactly_the_prompt_passages(reader, checkpoint):
    evidence = Evidence(passages(3), FACTS)
    prompt = reader.build(QUESTION, evidence)
    result = reader.answer(QUESTION, evidence)
    assert isinstance(result, ReaderResult)
    answer = result.answer
    assert (
        [p.chunk_id for p in answer.citations]
        == [c.passage.chunk_id for c in prompt.citations]
        == ["c1", "c2", "c3"]
    )
    assert answer.facts == FACTS
    assert result.truncated_chunk_ids == [] and not result.truncated
    assert result.prompt_tokens == len(prompt.ids)
    assert 0 < result.completion_tokens <= NEW_TOKENS
    assert result.finish_reason in {"eos", "stop", "length"}
    assert answer.text == reader.tokenizer.decode(_greedy_tokens(reader, prompt.ids)).strip()
    assert (
        answer.model_version == f"ckpt@{weights_digest(checkpoint)}"
        and len(weights_digest(checkpoint)) == 12
    )
    assert answer.config_hash == reader.config.config_hash
    assert len(result.routing) == 1 and abs(sum(result.routing[0]) - 1) < 1e-4
    assert result.usage()["total_tokens"] == result.prompt_tokens + result.completion_tokens


def _greedy_tokens(reader: Reader, ids: list[int]) -> list[int]:
    from rayrag.generator.generate import generate

    tok = reader.tokenizer
    (gen,) = generate(
        reader.model,
        [ids],
        max_new_tokens=NEW_TOKENS,
        eos_id=tok.eos_id,
        pad_id=tok.pad_id,
        stop=[[tok.sep_id]],
    )
    return gen.tokens


def test_over_long_context_drops_lowest_ranked_passages_and_says_so(reader):
    many = passages(12)  # ~16 tokens each: far more than the 152-token prompt budget
    result = reader.answer(QUESTION, Evidence(many, FACTS))
    kept = [p.chunk_id for p in result.answer.citations]
    assert 0 < len(kept) < len(many)
    assert kept == [p.chunk_id for p in many[: len(kept)]]  # the best-ranked survive, in rank order
    assert result.truncated_chunk_ids == [p.chunk_id for p in many[len(kept) :]]
    assert result.truncated
    assert result.prompt_tokens <= WINDOW - NEW_TOKENS
    # The question is still all there.
    prompt = reader.build(QUESTION, Evidence(many, FACTS))
    assert f"question: {QUESTION}" in reader.tokenizer.decode(prompt.ids)


def test_an_over_long_question_is_a_clear_error(reader):
    question = " ".join(["Who acquired Brightwater Labs"] * 60) + "?"
    with pytest.raises(DataError, match="question does not fit the prompt") as info:
        reader.answer(question, Evidence(passages(2)))
    # counts only: questions stay out of errors and logs
    assert "Brightwater" not in str(info.value)


@pytest.mark.parametrize("question", ["", "   \n"])
def test_empty_question_is_an_error(reader, question):
    with pytest.raises(DataError, match="question is empty"):
        reader.answer(question, Evidence(passages(2)))


def test_structural_graph_edges_stay_out_of_the_prompt(reader):
    co_occurs = Fact("Helix Corp", "co_occurs", "2019", 0.3, ("c2",), ("d2",))
    result = reader.answer(QUESTION, Evidence(passages(2), (co_occurs, *FACTS)))
    assert result.answer.facts == FACTS


def test_no_passages_still_answers_with_no_citations(reader):
    result = reader.answer(QUESTION, Evidence(()))
    assert result.answer.citations == () and result.truncated_chunk_ids == []


def test_max_new_tokens_that_fill_the_window_is_a_config_error(checkpoint):
    reader = Reader(checkpoint, tiny_config(max_new_tokens=WINDOW), device="cpu")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        reader.answer(QUESTION, Evidence(passages(1)))


def test_streaming_yields_the_same_text(reader):
    evidence = Evidence(passages(3), FACTS)
    whole = reader.answer(QUESTION, evidence)
    stream = reader.answer(QUESTION, evidence, stream=True)
    assert [p.chunk_id for p in stream.citations] == ["c1", "c2", "c3"] and stream.result is None
    pieces = list(stream)
    assert "".join(pieces) == whole.answer.text
    assert stream.result.answer == whole.answer
    assert stream.result.completion_tokens == whole.completion_tokens


def test_missing_checkpoint_and_missing_tokenizer_are_model_errors(tmp_path, tok):
    with pytest.raises(ModelError, match="not found"):
        Reader(tmp_path / "nope", tiny_config()).warm_up()
    ckpt = write_checkpoint(tmp_path / "ckpt", tok)
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="tokenizer"):
        Reader(ckpt, tiny_config()).warm_up()


def test_tokenizer_larger_than_the_model_vocab_is_a_model_error(tmp_path, tok):
    ckpt = write_checkpoint(tmp_path / "ckpt", tok, vocab_size=tok.vocab_size - 10)
    with pytest.raises(ModelError, match="vocab_size"):
        Reader(ckpt, tiny_config()).warm_up()


def test_cited_markers_keeps_valid_markers_in_first_mention_order():
    assert cited_markers("Helix Corp [2], see also [1] and [2] and [9] [0]", 3) == [2, 1]
    assert cited_markers("no markers", 3) == []


def test_json_view_has_the_fields(reader):
    result = reader.answer(QUESTION, Evidence(passages(12), FACTS))
    view = json.loads(json.dumps(result_to_json(result)))
    assert set(view) >= {
        "answer",
        "citations",
        "facts",
        "truncated",
        "usage",
        "model_version",
        "config_hash",
    }
    assert [c["marker"] for c in view["citations"]] == list(range(1, len(view["citations"]) + 1))
    # the passage as retrieval gave it to this caller, for the web page's citation view
    assert [c["text"] for c in view["citations"]] == [p.text for p in result.answer.citations]
    assert view["truncated"]["chunk_ids"] == result.truncated_chunk_ids
    assert view["usage"]["prompt_tokens"] == result.prompt_tokens


def test_answer_batch_equals_answering_one_by_one(reader):
    evidence = Evidence(passages=passages(3), facts=FACTS)
    questions = ["Who acquired Brightwater Labs?", "What did Helix Corp buy?", "Who?"]
    caps = [4, 6, 4]
    batched = reader.answer_batch(questions, [evidence] * 3, caps)
    alone = [
        reader.answer(q, evidence, max_new_tokens=c) for q, c in zip(questions, caps, strict=True)
    ]
    assert [r.answer.text for r in batched] == [r.answer.text for r in alone]
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in alone]
    with pytest.raises(ValueError, match="same length"):
        reader.answer_batch(questions, [evidence], caps)


def test_decoding_dtype_auto_is_float32_on_cpu_and_bfloat16_answers_too(checkpoint, reader):
    from rayrag.generator.checkpoint import serving_dtype

    assert reader.model.lm_head.weight.dtype == torch.float32  # auto on CPU
    assert (
        serving_dtype("auto", "cuda") == torch.bfloat16
        and serving_dtype("auto", "cpu") == torch.float32
    )
    # bfloat16 is what CUDA serving picks; the same code path runs here on CPU.
    bf16 = Reader(checkpoint, tiny_config(dtype="bfloat16"), device="cpu")
    evidence = Evidence(passages(2), FACTS)
    result = bf16.answer(QUESTION, evidence)
    assert bf16.model.lm_head.weight.dtype == torch.bfloat16
    assert result.completion_tokens > 0 and isinstance(result.answer.text, str)
    assert "".join(bf16.answer(QUESTION, evidence, stream=True)) == result.answer.text


def test_candidates_are_spans_the_guard_can_choose_from(checkpoint):
    # decoding.candidates: the reader's n-best (greedy continuations of its likeliest first
    # tokens), each a ReaderResult with the same citations; a stream still sends one answer.
    evidence = Evidence(passages(3), FACTS)
    one = Reader(checkpoint, tiny_config(extractive="true"), device="cpu").answer(
        QUESTION, evidence
    )
    reader = Reader(checkpoint, tiny_config(extractive="true", candidates=3), device="cpu")
    result = reader.answer(QUESTION, evidence)
    candidates = [result, *result.alternatives]
    assert len(candidates) == 3 and not any(c.alternatives for c in candidates[1:])
    assert len({c.answer.text for c in candidates}) == 3
    ids = reader.build(QUESTION, evidence).ids
    context = reader.tokenizer.decode(ids[: ids.index(reader.tokenizer.sep_id)])
    assert all(c.answer.text and c.answer.text in context for c in candidates)
    assert one.answer.text in {
        c.answer.text for c in candidates
    }  # the greedy answer is one of them
    assert [c.answer_logprob for c in candidates] == sorted(
        (c.answer_logprob for c in candidates), reverse=True
    )
    assert all(c.answer.citations == result.answer.citations for c in candidates)
    [batched] = reader.answer_batch([QUESTION], [evidence])
    assert [c.answer.text for c in (batched, *batched.alternatives)] == [
        c.answer.text for c in candidates
    ]
    stream = reader.answer(QUESTION, evidence, stream=True)
    assert "".join(stream) == stream.result.answer.text and stream.result.alternatives == ()
