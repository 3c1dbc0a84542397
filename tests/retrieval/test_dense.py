"""DenseRetriever helpers the hybrid retriever's second hop uses: the question redacted and
embedded once (cached), and cosines against a chosen set of chunks within the principal's ACL.

A DenseRetriever is assembled from a real `VectorIndex` (exact, inner product) and fake
embedder and redactor, so the vectors and the redaction are inputs of the test.
"""

from __future__ import annotations

import numpy as np
import pytest

from rayrag.config import IndexConfig, RAGConfig
from rayrag.index.vector import VectorIndex
from rayrag.retrieval.dense import DenseRetriever
from rayrag.types import Principal, RedactedQuestion

PUBLIC = Principal("anon", frozenset({"public"}))
HR = Principal("hr-officer", frozenset({"public", "hr"}))
DIM = 4
VECTORS = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0.6, 0.8, 0, 0]], dtype=np.float32)
ACL = [{"public"}, {"public"}, {"hr"}, {"public"}]


class Embedder:
    """'q0' -> axis 0, 'q1' -> axis 1, 'q2' -> axis 2; counts calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.stack([np.eye(DIM, dtype=np.float32)[int(t[-1])] for t in texts])


class Redactor:
    def __init__(self) -> None:
        self.calls = 0

    def redact(self, text):
        self.calls += 1
        return RedactedQuestion(text=text.replace("Ana Ruiz", "q"))


@pytest.fixture
def dense() -> DenseRetriever:
    d = DenseRetriever("unused-bundle", RAGConfig())
    d._index = VectorIndex(IndexConfig(), dim=DIM).build(VECTORS, np.array([10, 11, 12, 13]))
    d._row_ids = np.array([10, 11, 12, 13], dtype=np.int64)
    d._rows = {10: 0, 11: 1, 12: 2, 13: 3}
    d._acl = [frozenset(a) for a in ACL]
    d._policy = np.array(
        ["personal", "personal", "public_knowledge", "public_knowledge"], dtype=object
    )
    d._embedder, d._redactor = Embedder(), Redactor()
    return d


def test_similarities_score_only_the_given_rows_the_principal_may_read(dense):
    [public] = dense.similarities(["q0"], PUBLIC, [10, 12, 13])
    assert public == pytest.approx({10: 1.0, 13: 0.6})  # 12 is hr-only; 11 was not asked for
    q0, q1 = dense.similarities(["q0", "q1"], HR, [10, 12, 13])
    assert q0 == pytest.approx({10: 1.0, 12: 0.0, 13: 0.6}) and q1 == pytest.approx(
        {10: 0.0, 12: 0.0, 13: 0.8}
    )
    assert dense.similarities(["q0"], PUBLIC, [12]) == [{}]  # nothing readable: no search
    assert dense.similarities(["q0"], PUBLIC, []) == [{}]


def test_the_question_is_redacted_and_embedded_once(dense):
    assert dense.redact("Ana Ruiz1") == "q1"
    first = dense.query_vector("Ana Ruiz1")
    again = dense.query_vector("Ana Ruiz1")
    assert dense._redactor.calls == 1 and dense._embedder.calls == [["q1"]]
    assert np.array_equal(first, again) and first.shape == (1, DIM)
    dense.query_vector("q1", redact=False)  # the redacted text is the cache key
    assert dense._embedder.calls == [["q1"]]
    searched = []
    dense.search = lambda vectors, principal, top_k: searched.append(vectors) or [[]]
    dense.retrieve("Ana Ruiz1", PUBLIC, top_k=2)  # the search reuses the cached vector
    assert np.array_equal(searched[0], first) and dense._embedder.calls == [["q1"]]


class _Bundle:
    """The chunk table `search` reads passages from."""

    def chunks(self):
        import pyarrow as pa

        ids = [f"c{r}" for r in (10, 11, 12, 13)]
        return pa.table({"chunk_id": ids, "doc_id": ids, "text": ids, "title": ids})


def test_each_redacted_form_searches_only_its_policys_passages(dense):
    """Rows 10-11 were redacted `personal`, 12-13 `public_knowledge`. The question's personal
    form (q1) searches 10-11, its public form (q0) 12-13, and the hits merge by score: 11
    (1.0) then 13 (0.6). Either form over every row would rank 10 or give 13 0.8."""
    dense._bundle = _Bundle()
    dense._redactor = None  # the question comes redacted
    query = RedactedQuestion(text="q1", forms={"personal": "q1", "public_knowledge": "q0"})
    hits = dense.retrieve(query, HR, top_k=2)
    assert [(p.chunk_id, round(p.score, 3)) for p in hits] == [("c11", 1.0), ("c13", 0.6)]
    # The ACL still holds inside each policy's search: the public never gets hr-only row 12.
    public_hits = dense.retrieve(query, PUBLIC, top_k=4)
    assert "c12" not in {p.chunk_id for p in public_hits} and len(public_hits) == 3
    # One distinct form: one search over everything, not one per policy.
    same = RedactedQuestion(text="q0", forms={"personal": "q0", "public_knowledge": "q0"})
    searched, search = [], dense.search
    dense.search = lambda vectors, principal, top_k, policies=None: (
        searched.append(policies) or search(vectors, principal, top_k, policies)
    )
    assert [p.chunk_id for p in dense.retrieve(same, HR, top_k=2)] == ["c10", "c13"]
    assert searched == [None]
    dense.retrieve(query, HR, top_k=2)  # two forms: one search per policy
    assert sorted(searched[1:], key=sorted) == [
        frozenset({"personal"}),
        frozenset({"public_knowledge"}),
    ]
