"""The byte-level BPE: exact round trips, fixed special ids, save/load, frequency order."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from rayrag.errors import ConfigError, DataError, ModelError
from rayrag.generator.tokenizer import (
    MIN_VOCAB_SIZE,
    SPECIAL_TOKENS,
    RayragTokenizer,
    train_tokenizer,
)


def sentences(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    subjects = ["Brightwater Labs", "Ana Lima", "the council", "Zoë Ng", "Helix Corp", "東京大学"]
    verbs = ["acquired", "founded", "visited", "funded", "described", "sued"]
    objects = ["a startup", "the museum", "Köln", "an archive", "the harbour", "Orchid Systems"]
    return [
        (
            f"{rng.choice(subjects)} {rng.choice(verbs)} "
            f"{rng.choice(objects)} in {rng.randint(1950, 2024)}."
        )
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def tok() -> RayragTokenizer:
    return train_tokenizer(sentences(), vocab_size=400)


def test_special_tokens_sit_at_fixed_ids(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.sep_id, tok.unk_id) == (0, 1, 2, 3, 4)
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.decode([i], skip_special=False) == token
    assert MIN_VOCAB_SIZE < tok.vocab_size <= 400


@pytest.mark.parametrize(
    "text",
    [
        "Brightwater Labs acquired Köln in 1999.",
        "  leading spaces,\ttabs\nand newlines\n\n",
        "日本語のテキスト, emoji 🤖🚀, combining é (e\u0301), RTL שלום",
        "unseen words: xylophone quizzical",
        "",
    ],
)
def test_decode_inverts_encode_for_any_unicode(tok, text):
    ids = tok.encode(text)
    assert tok.unk_id not in ids
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_special_token_text_is_not_parsed_as_structure(tok):
    ids = tok.encode("a <sep> b <eos>")
    assert not set(ids) & set(range(len(SPECIAL_TOKENS)))
    assert tok.decode(ids) == "a <sep> b <eos>"


def test_decode_skips_specials_by_default(tok):
    ids = [tok.bos_id, *tok.encode("hello"), tok.eos_id]
    assert tok.decode(ids) == "hello"
    assert tok.decode(ids, skip_special=False) == "<bos>hello<eos>"
    assert tok.decode(np.asarray(ids)) == "hello"


def test_encode_batch_matches_encode(tok):
    texts = sentences(20, seed=1)
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_save_load_gives_identical_encodings(tok, tmp_path):
    written = tok.save(tmp_path / "ckpt")
    assert written == tmp_path / "ckpt" / "tokenizer.json"
    assert not [p for p in written.parent.iterdir() if p.name.endswith(".tmp")]
    loaded = RayragTokenizer.load(tmp_path / "ckpt")
    texts = sentences(50, seed=2) + ["a <sep> b", "日本 🤖"]
    assert loaded.encode_batch(texts) == tok.encode_batch(texts)
    assert loaded.vocab_size == tok.vocab_size
    assert RayragTokenizer.load(written).encode("Köln") == tok.encode("Köln")


def test_frequencies_and_order_are_consistent(tok):
    texts = sentences(100, seed=3)
    counts = tok.token_frequencies(texts)
    assert counts.shape == (tok.vocab_size,) and counts.dtype == np.int64
    assert counts.sum() == sum(len(ids) for ids in tok.encode_batch(texts))
    assert np.array_equal(counts, tok.token_frequencies(iter(texts), batch_size=7))

    order = tok.token_order(texts)
    assert order.dtype == np.int64
    # a permutation, specials included
    assert np.array_equal(np.sort(order), np.arange(tok.vocab_size))
    ordered = counts[order]
    assert np.all(ordered[:-1] >= ordered[1:])
    for a, b in zip(order[:-1], order[1:], strict=True):  # ties keep id order
        if counts[a] == counts[b]:
            assert a < b
    assert order[0] == np.argmax(counts)


def test_order_pads_to_the_model_vocabulary(tok):
    texts = sentences(50, seed=4)
    order = tok.token_order(texts, vocab_size=tok.vocab_size + 10)
    assert order.shape == (tok.vocab_size + 10,)
    # never seen: last
    assert np.array_equal(order[-10:], np.arange(tok.vocab_size, tok.vocab_size + 10))
    assert np.array_equal(order[: tok.vocab_size], tok.token_order(texts)[: tok.vocab_size])
    with pytest.raises(ConfigError, match="vocab_size must be >= the tokenizer's"):
        tok.token_order(texts, vocab_size=tok.vocab_size - 1)


def test_pickled_tokenizer_still_treats_special_text_as_text(tok):
    # Ray ships the tokenizer to workers by pickle; `tokenizers` drops the flag on the way.
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode("a <sep> b") == tok.encode("a <sep> b")
    assert tok.sep_id not in clone.encode("a <sep> b")


def test_vocab_too_small_is_a_config_error():
    with pytest.raises(ConfigError, match=r"vocab_size must be >= 261.*got 100"):
        train_tokenizer(["some text"], vocab_size=100)


def test_empty_corpus_is_a_data_error():
    with pytest.raises(DataError, match="empty corpus"):
        train_tokenizer([], vocab_size=300)
    with pytest.raises(DataError, match="empty corpus"):
        train_tokenizer(iter(["", ""]), vocab_size=300)
    with pytest.raises(DataError, match="item 1 is int"):
        train_tokenizer(["ok", 3], vocab_size=300)


def test_missing_or_corrupt_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        RayragTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelError, match="corrupt"):
        RayragTokenizer.load(tmp_path)
