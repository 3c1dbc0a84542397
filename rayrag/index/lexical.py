"""LexicalIndex: BM25 over a bundle's passages (bm25s), searched within the caller's ACL.

Dense vectors miss exact strings: every employee id ("EMP-12153") embeds close to every
other, and a rare name can sit far from its passage in MiniLM's space. BM25 (Robertson and
Zaragoza 2009, "The Probabilistic Relevance Framework: BM25 and Beyond") scores the words
themselves. The scorer is bm25s (Lù 2024), which precomputes every (term, document) score
into a sparse matrix at index time, so a query is a sum of a few sparse rows.

The indexed text of a chunk is `passage_text` (embed.py): the same contextual text the
embedder reads (title, heading path, chunk), so both retrievers see one passage. The index is
rebuilt from the bundle's chunk table whenever a bundle is written (ingest, incremental
ingest, erasure): BM25's IDF is corpus-wide, so "incremental" BM25 is a rebuild, and it is
cheap next to embedding (docs/DECISIONS.md). An erased document leaves the lexical index in
the same write that removes its vectors.

Access control is inside the search, as with FAISS: the principal's readable rows are a
0/1 weight mask bm25s multiplies into the scores before its top-k, and a hit with no score
(masked, or sharing no term with the query) is never returned.

    >>> index = LexicalIndex.build(
    ...     ["Employee record EMP-11935 ...", "Hollowell Power acquires ..."], [7, 8]
    ... )
    >>> index.search(
    ...     "What position does employee EMP-11935 hold?", 5, index.allowed_mask(np.array([7, 8]))
    ... )
    [(7, ...)]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rayrag.errors import BundleError

# sklearn CountVectorizer's pattern (bm25s's default) keeps "emp" and "11935" from "EMP-11935";
# English stop words out. Recorded in the manifest: a query must be split as the index was.
TOKENIZER = {"pattern": r"(?u)\b\w\w+\b", "lower": True, "stopwords": "en", "version": 1}
ROW_IDS = "row_ids.json"


def tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(
        texts,
        lower=TOKENIZER["lower"],
        token_pattern=TOKENIZER["pattern"],
        stopwords=TOKENIZER["stopwords"],
        return_ids=False,
        show_progress=False,
    )


class LexicalIndex:
    """A BM25 index whose documents are bundle rows (`row_ids`, the FAISS ids)."""

    def __init__(self, retriever: Any, row_ids: np.ndarray) -> None:
        self._bm25 = retriever
        self.row_ids = np.asarray(row_ids, dtype=np.int64)
        self._position = {int(r): i for i, r in enumerate(self.row_ids)}

    @classmethod
    def build(
        cls, texts: list[str], row_ids: list[int] | np.ndarray, k1: float = 1.2, b: float = 0.75
    ) -> LexicalIndex:
        import bm25s

        if len(texts) != len(row_ids):
            raise BundleError(f"internal: {len(texts)} texts for {len(row_ids)} row ids")
        retriever = bm25s.BM25(k1=k1, b=b)
        if texts:
            # An empty token keeps a passage with only stop words indexable (bm25s needs one).
            retriever.index(
                [tokens or [""] for tokens in tokenize(list(texts))], show_progress=False
            )
        return cls(retriever if texts else None, np.asarray(row_ids, dtype=np.int64))

    @classmethod
    def from_chunks(
        cls, chunks: Any, text_format: str, k1: float = 1.2, b: float = 0.75
    ) -> LexicalIndex:
        """The index of a bundle's chunk table (pyarrow): each row's `passage_text`."""
        from rayrag.index.embedder import passage_text

        cols = {
            name: chunks.column(name).to_pylist()
            for name in ("row_id", "title", "text", "metadata")
        }
        texts = [
            passage_text(text, title, json.loads(meta or "{}"), text_format)
            for title, text, meta in zip(cols["title"], cols["text"], cols["metadata"], strict=True)
        ]
        return cls.build(texts, cols["row_id"], k1=k1, b=b)

    @property
    def ntotal(self) -> int:
        return len(self.row_ids)

    def save(self, path: Path) -> None:
        """Write the index as a directory (bm25s's arrays + vocabulary, and the row ids)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self._bm25 is not None:
            self._bm25.save(str(path), show_progress=False)
        (path / ROW_IDS).write_text(
            json.dumps({"row_ids": self.row_ids.tolist(), "tokenizer": TOKENIZER}), encoding="utf-8"
        )

    @classmethod
    def load(cls, path: Path) -> LexicalIndex:
        import bm25s

        path = Path(path)
        try:
            meta = json.loads((path / ROW_IDS).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise BundleError(f"corrupt or missing lexical index: {path}") from None
        if meta.get("tokenizer") != TOKENIZER:
            raise BundleError(
                f"lexical index {path} was tokenized differently; re-ingest the bundle"
            )
        row_ids = np.asarray(meta["row_ids"], dtype=np.int64)
        retriever = bm25s.BM25.load(str(path)) if len(row_ids) else None
        return cls(retriever, row_ids)

    def allowed_mask(self, allowed_rows: np.ndarray) -> np.ndarray:
        """0/1 float mask over the index's documents: 1 where the row is in `allowed_rows`."""
        return np.isin(self.row_ids, np.asarray(allowed_rows, dtype=np.int64)).astype(np.float32)

    def search(self, query: str, top_k: int, mask: np.ndarray) -> list[tuple[int, float]]:
        """(row_id, BM25 score) best first, at most `top_k`, only rows with mask 1 and a
        positive score (a masked row scores 0 and is dropped, never padded in)."""
        if self._bm25 is None or top_k <= 0:
            return []
        vocab = self._bm25.vocab_dict
        terms = [t for t in tokenize([query])[0] if t in vocab]
        if not terms:
            return []
        k = min(top_k, self.ntotal)
        docs, scores = self._bm25.retrieve(
            [terms], k=k, weight_mask=mask, show_progress=False, n_threads=0
        )
        return [
            (int(self.row_ids[d]), float(s))
            for d, s in zip(docs[0], scores[0], strict=True)
            if s > 0 and mask[d] > 0
        ]
