"""LexicalIndex (bm25s): BM25 scores by hand, the ACL mask inside the search, save/load, the
contextual passage text, and RRF with a third weighted list."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from rayrag.errors import BundleError, ConfigError
from rayrag.index.embedder import passage_text
from rayrag.index.lexical import LexicalIndex, tokenize
from rayrag.retrieval.hybrid import rrf_fuse

TEXTS = [
    "Employee record EMP-11935. Joined Brackwell Data as Supply Chain Planner.",
    "Employee record EMP-12404. Joined Nettlefield Industries as Principal Investigator.",
    "Hollowell Power acquires Tarrow Power.",
    "the of and",
]  # only stop words: still indexable, never a hit
ROWS = [10, 11, 12, 13]
ALL = np.ones(4, np.float32)


@pytest.fixture(scope="module")
def index() -> LexicalIndex:
    return LexicalIndex.build(TEXTS, ROWS)


def test_tokenizer_splits_identifiers_and_drops_stop_words():
    # Lucene's 33 English stop words ("the", "of", "is" ...); wh-words stay, and weigh little by
    # IDF.
    assert tokenize(["What is the position of employee EMP-11935?"])[0] == [
        "what",
        "position",
        "employee",
        "emp",
        "11935",
    ]


def test_bm25_matches_the_formula_by_hand(index):
    # "tarrow" is in one of 4 documents. bm25s's default is Lucene's BM25: idf = ln(1 + (N - n + .5)
    # / (n + .5)) and tf / (tf + k1 (1 - b + b dl / avgdl)), without Robertson's (k1 + 1) (a
    # constant).
    [(row, score)] = index.search("Tarrow", 5, ALL)
    lengths = [len(t) or 1 for t in tokenize(TEXTS)]
    avg, tf, k1, b = sum(lengths) / 4, 1, 1.2, 0.75
    idf = math.log(1 + (4 - 1 + 0.5) / (1 + 0.5))
    expected = idf * tf / (tf + k1 * (1 - b + b * lengths[2] / avg))
    assert row == 12 and score == pytest.approx(expected, rel=1e-5)


def test_identifier_record_ranks_first(index):
    hits = index.search("What position does employee EMP-11935 hold?", 5, ALL)
    assert hits[0][0] == 10 and hits[0][1] > hits[1][1] > 0


def test_mask_is_inside_the_search_and_never_pads(index):
    hr_only = index.allowed_mask(np.array([11, 12, 13]))
    assert hr_only.tolist() == [0, 1, 1, 1]
    hits = index.search("EMP-11935 Brackwell", 5, hr_only)
    assert [r for r, _ in hits] == [11]  # row 10 matches best but is masked; no zero-score padding
    assert index.search("Brackwell", 5, hr_only) == []
    assert index.search("quantum zebra", 5, ALL) == []  # no known term
    assert index.search("the of", 5, ALL) == []  # stop words only


def test_save_load_roundtrip_and_tokenizer_check(index, tmp_path):
    index.save(tmp_path / "lexical")
    back = LexicalIndex.load(tmp_path / "lexical")
    assert back.row_ids.tolist() == ROWS
    assert back.search("Nettlefield investigator", 3, ALL) == index.search(
        "Nettlefield investigator", 3, ALL
    )
    meta = tmp_path / "lexical" / "row_ids.json"
    meta.write_text(meta.read_text().replace('"version": 1', '"version": 99'))
    with pytest.raises(BundleError, match="tokenized differently"):
        LexicalIndex.load(tmp_path / "lexical")
    with pytest.raises(BundleError, match="missing lexical index"):
        LexicalIndex.load(tmp_path / "nowhere")


def test_empty_index_and_from_chunks(tmp_path):
    empty = LexicalIndex.build([], [])
    assert empty.ntotal == 0 and empty.search("anything", 5, np.zeros(0, np.float32)) == []
    empty.save(tmp_path / "e")
    assert LexicalIndex.load(tmp_path / "e").ntotal == 0
    chunks = pa.table(
        {
            "row_id": [3, 4],
            "title": ["Employee record EMP-7", None],
            "text": ["Joined in 2006.", "Orvanta makes Zelvimab."],
            "metadata": ['{"section": "History"}', "{}"],
        }
    )
    titled = LexicalIndex.from_chunks(chunks, "title_chunk")
    assert titled.search("EMP-7", 5, np.ones(2, np.float32))[0][0] == 3  # the title is indexed
    assert (
        LexicalIndex.from_chunks(chunks, "chunk").search("EMP-7", 5, np.ones(2, np.float32)) == []
    )


def test_passage_text_formats():
    assert (
        passage_text(
            "Joined in 2006.", "Employee record EMP-1", {"section": "A > B"}, "title_chunk"
        )
        == "Employee record EMP-1 > A > B: Joined in 2006."
    )
    assert passage_text("x", None, {}, "title_chunk") == "x"
    # a non-string section is ignored
    assert passage_text("x", "T", {"section": 3}, "title_chunk") == "T: x"
    assert passage_text("x", "T", {}, "chunk") == "x"
    with pytest.raises(ConfigError, match="text_format"):
        passage_text("x", "T", {}, "markdown")


def test_weighted_rrf_three_lists():
    fused = dict(rrf_fuse([["a", "b"], ["b"], ["c", "a"]], rrf_k=2, weights=[1.0, 0.5, 2.0]))
    assert fused["a"] == pytest.approx(1 / 3 + 2 / 4)
    assert fused["b"] == pytest.approx(1 / 4 + 0.5 / 3)
    assert fused["c"] == pytest.approx(2 / 3)
    assert rrf_fuse([["a"], ["b"]], rrf_k=2, weights=[0.0, 1.0])[0][0] == "b"
    with pytest.raises(ConfigError, match="one non-negative number per ranking"):
        rrf_fuse([["a"], ["b"]], rrf_k=2, weights=[1.0])
