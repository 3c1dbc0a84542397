"""Chunker with the real MiniLM WordPiece tokenizer: offsets, budgets, overlap, sentences."""

from __future__ import annotations

import json

import pytest

from rayrag.config import ChunkingConfig
from rayrag.errors import ConfigError
from rayrag.index.chunking import Chunker, sentence_starts
from rayrag.index.embedder import load_tokenizer
from rayrag.types import Document

SHORT_SENTENCES = " ".join(f"Sentence number {i} mentions the river Avon." for i in range(40))


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def make(tokenizer, size: int, overlap: int, respect_sentences: bool = True) -> Chunker:
    config = ChunkingConfig(
        chunk_size=size, chunk_overlap=overlap, respect_sentences=respect_sentences
    )
    return Chunker(config, tokenizer=tokenizer)


def sentences(text: str) -> list[str]:
    bounds = [0, *sentence_starts(text), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def assert_valid(chunker: Chunker, doc: Document) -> list:
    chunks = chunker(doc)
    for i, chunk in enumerate(chunks):
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert chunk.chunk_id == f"{doc.id}#{i}" and chunk.doc_id == doc.id
        assert chunker.count_tokens(chunk.text) <= chunker.config.chunk_size
    # No text is lost: every token lies in some chunk.
    enc = chunker.tokenizer(
        doc.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    spans = chunker.token_spans(doc.text, enc["offset_mapping"])
    assert spans[0][0] == 0 and spans[-1][1] == len(enc["input_ids"])
    assert all(a0 < a1 <= b0 for (a0, b0), (a1, _) in zip(spans, spans[1:], strict=False))
    return chunks


def test_sentence_splitter_keeps_abbreviations_and_initials():
    text = (
        "Dr. Smith joined Acme Inc. in the U.S. in 1999. She met J. K. Rowling, e.g. at a fair. "
        'He said "Stop!" Then he left.\n\nA heading without a full stop\n\nA soft\nwrapped line'
    )
    assert [s.strip() for s in sentences(text)] == [
        "Dr. Smith joined Acme Inc. in the U.S. in 1999.",
        "She met J. K. Rowling, e.g. at a fair.",
        'He said "Stop!"',
        "Then he left.",
        "A heading without a full stop",
        "A soft\nwrapped line",
    ]


def test_short_sentences_pack_whole_with_overlap(tokenizer):
    chunker = make(tokenizer, size=48, overlap=12)
    doc = Document(id="d", text=SHORT_SENTENCES)
    chunks = assert_valid(chunker, doc)
    assert len(chunks) > 3
    starts = {0, *sentence_starts(doc.text)}
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        assert nxt.start in starts and nxt.text.endswith(".")  # whole sentences only
        assert nxt.start < prev.end  # the overlap: a trailing sentence is carried over
        carried = doc.text[nxt.start : prev.end]
        assert chunker.count_tokens(carried) <= 12


def test_zero_overlap_has_disjoint_chunks(tokenizer):
    chunks = assert_valid(
        make(tokenizer, size=48, overlap=0), Document(id="d", text=SHORT_SENTENCES)
    )
    assert all(nxt.start >= prev.end for prev, nxt in zip(chunks, chunks[1:], strict=False))


def test_long_sentence_is_split_at_word_boundaries_with_token_overlap(tokenizer):
    words = " ".join(f"Word{i} unbelievably" for i in range(150))  # one ~600-token sentence
    doc = Document(id="long", text=f"Intro sentence here. {words}. Outro sentence here.")
    chunker = make(tokenizer, size=64, overlap=8)
    chunks = assert_valid(chunker, doc)
    assert len(chunks) >= 10
    middle = chunks[1:-1]
    for prev, nxt in zip(middle, middle[1:], strict=False):
        assert nxt.start < prev.end  # token-level overlap inside the long sentence
        assert doc.text[nxt.start - 1] == " "  # cut before a word, not inside one
    assert chunks[0].text == "Intro sentence here."  # the sentence before is not glued on


def test_respect_sentences_false_gives_token_windows(tokenizer):
    chunker = make(tokenizer, size=20, overlap=5, respect_sentences=False)
    chunks = assert_valid(chunker, Document(id="d", text=SHORT_SENTENCES))
    assert any(not c.text.endswith(".") for c in chunks)
    assert max(chunker.count_tokens(c.text) for c in chunks) >= 18


def test_empty_and_whitespace_documents_have_no_chunks(tokenizer):
    chunker = make(tokenizer, size=32, overlap=4)
    assert chunker(Document(id="e", text="")) == []
    assert chunker(Document(id="w", text=" \n\t ")) == []
    single = chunker(Document(id="s", text="  Hello there.  "))
    assert [(c.text, c.start, c.end) for c in single] == [("Hello there.", 2, 14)]


def test_ids_stable_and_document_fields_carried(tokenizer):
    chunker = make(tokenizer, size=32, overlap=8)
    doc = Document(
        id="kb/a.md",
        text=SHORT_SENTENCES,
        title="Avon",
        acl=("hr", "eng"),
        metadata={"lang": "en", "year": 2024},
    )
    first, second = chunker(doc), chunker(doc)
    assert first == second
    assert all(
        c.acl == ("hr", "eng") and c.title == "Avon" and c.metadata == {"lang": "en", "year": 2024}
        for c in first
    )
    first[0].metadata["lang"] = "fr"  # chunks do not alias the document's dict
    assert doc.metadata["lang"] == "en"


def test_batch_equals_per_document(tokenizer):
    chunker = make(tokenizer, size=40, overlap=8)
    docs = [Document(id=f"d{i}", text=SHORT_SENTENCES[: 200 * (i + 1)]) for i in range(5)] + [
        Document(id="x", text="")
    ]
    per_doc = [c for d in docs for c in chunker(d)]
    assert chunker.chunk_documents(docs, batch_size=2) == per_doc


def test_hotpotqa_passages(tokenizer, fixture_data):
    corpus = json.loads(
        (fixture_data / "hotpotqa_sample" / "hotpotqa_train_corpus.json").read_text()
    )
    docs = [
        Document(id=str(i), title=t, text="".join(s))
        for i, (t, s) in enumerate(list(corpus.items())[:150])
    ]
    chunker = make(tokenizer, size=64, overlap=16)
    chunks = [c for d in docs for c in assert_valid(chunker, d)]
    assert len(chunks) > len(docs)


def test_default_tokenizer_loads_offline_and_slow_tokenizers_are_rejected():
    chunker = Chunker(ChunkingConfig(chunk_size=16, chunk_overlap=0))
    assert chunker(Document(id="d", text="One. Two."))[0].text == "One. Two."

    class Slow:
        is_fast = False

    with pytest.raises(ConfigError, match="fast"):
        Chunker(ChunkingConfig(), tokenizer=Slow())
