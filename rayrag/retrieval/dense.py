"""DenseRetriever: a redacted question in, ACL-trimmed passages out, from an IndexBundle.

The question is redacted with the same Presidio config as the corpus (so a pseudonymised
name still matches), embedded with the bundle's embedder, and searched in FAISS with the
principal's allowed chunk ids enforced inside the search (`VectorIndex.search(allowed_ids=)`).
The hybrid retriever (dense + knowledge graph) builds on this class.

    >>> retriever = DenseRetriever(Path(".rayrag/demo/bundle"), cfg)
    >>> passages = retriever.retrieve("Who acquired Brightwater Labs?", Principal("ana", frozenset({"public"})))
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from rayrag.config import RAGConfig
from rayrag.errors import AccessDenied, ConfigError, DataError
from rayrag.pipelines.bundle import IndexBundle
from rayrag.retrieval.vector import AllowedIds
from rayrag.types import Passage, Principal

MAX_QUESTION_CHARS = 4000
MAX_CACHED_SELECTORS = 32  # distinct group sets are few (roles); bound the memory anyway


class DenseRetriever:
    def __init__(self, bundle_path: Path, config: RAGConfig) -> None:
        self.bundle_path = Path(bundle_path)
        self.config = config
        self._bundle: IndexBundle | None = None
        self._index: Any = None
        self._embedder: Any = None
        self._redactor: Any = None
        self._acl: list[frozenset[str]] = []
        self._row_ids: np.ndarray = np.zeros(0, np.int64)
        self._rows: dict[int, int] = {}
        # group set -> its allowed ids as a FAISS selector: scanning every chunk's ACL and
        # building the bitmap per query would cost O(chunks) a request.
        self._selectors: OrderedDict[frozenset[str], AllowedIds] = OrderedDict()

    def warm_up(self) -> None:
        if self._index is not None:
            return
        from rayrag.pipelines.embed import Embedder

        bundle = IndexBundle.load(self.bundle_path)
        embedder_info = bundle.manifest.get("embedder", {})
        if embedder_info.get("dim") != self.config.embedding.dim:
            raise ConfigError(f"bundle embeddings have dim {embedder_info.get('dim')}, config has "
                              f"{self.config.embedding.dim} (embedding.dim)")
        chunks = bundle.chunks()
        self._row_ids = np.asarray(chunks.column("row_id").to_pylist(), dtype=np.int64)
        self._rows = {int(r): i for i, r in enumerate(self._row_ids)}
        self._acl = [frozenset(a) for a in chunks.column("acl").to_pylist()]
        self._embedder = Embedder(self.config.embedding)
        self._embedder.warm_up()
        if self.config.governance.redaction.enabled:
            from rayrag.governance.redaction import Redactor

            self._redactor = Redactor(self.config.governance.redaction)
            self._redactor.warm_up()
        self._bundle = bundle
        self._index = bundle.vector_index(self.config.index)

    @property
    def bundle(self) -> IndexBundle:
        """The loaded bundle (shared with the graph side instead of loading it twice)."""
        self.warm_up()
        return self._bundle

    @property
    def embedder(self) -> Any:
        """The loaded embedder (its `encode` also embeds entity names for graph linking)."""
        self.warm_up()
        return self._embedder

    def allowed_row_ids(self, principal: Principal) -> np.ndarray:
        self.warm_up()
        groups = principal.groups
        mask = np.fromiter((bool(groups & acl) for acl in self._acl), dtype=bool, count=len(self._acl))
        return self._row_ids[mask]

    def allowed_for(self, principal: Principal) -> AllowedIds:
        """The principal's `AllowedIds` (selector), built once per group set."""
        key = frozenset(principal.groups)
        allowed = self._selectors.get(key)
        if allowed is None:
            allowed = AllowedIds(self.allowed_row_ids(principal))
            self._selectors[key] = allowed
            while len(self._selectors) > MAX_CACHED_SELECTORS:
                self._selectors.popitem(last=False)
        else:
            self._selectors.move_to_end(key)
        return allowed

    def retrieve(self, question: str, principal: Principal, top_k: int | None = None,
                 redact: bool = True) -> list[Passage]:
        """ACL-trimmed passages, best first. `redact=False`: the question was already redacted
        with this config (the serve graph's Redactor stage did it)."""
        top_k = self.config.retrieval.top_k if top_k is None else top_k
        if top_k <= 0:
            raise ConfigError(f"top_k must be > 0, got {top_k} (--top-k)")
        if not isinstance(question, str) or not question.strip():
            raise DataError("question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise DataError(f"question is too long: {len(question)} chars > {MAX_QUESTION_CHARS}")
        self.warm_up()
        allowed = self.allowed_for(principal)
        if allowed.count == 0:
            raise AccessDenied(f"principal {principal.name!r} may read no documents in this bundle")
        query = self._redactor.redact(question).text if self._redactor is not None and redact else question
        return self.search(self._embedder.encode([query]), principal, top_k)[0]

    def encode(self, questions: list[str]) -> np.ndarray:
        """(N, dim) query embeddings: one batched call (the serve graph batches requests)."""
        self.warm_up()
        return self._embedder.encode(questions)

    def search(self, vectors: np.ndarray, principal: Principal, top_k: int) -> list[list[Passage]]:
        """Passages for each query vector (N, dim), all for one principal."""
        self.warm_up()
        allowed = self.allowed_for(principal)
        if allowed.count == 0:
            raise AccessDenied(f"principal {principal.name!r} may read no documents in this bundle")
        vector = vectors
        scores, ids = self._index.search(vector, top_k, allowed_ids=allowed)
        chunks = self._bundle.chunks()
        results = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            passages = []
            for score, row_id in zip(row_scores, row_ids, strict=True):
                if row_id < 0:
                    continue
                i = self._rows[int(row_id)]
                if not principal.groups & self._acl[i]:  # fail closed: checked again after FAISS
                    continue
                passages.append(Passage(
                    chunk_id=chunks.column("chunk_id")[i].as_py(), doc_id=chunks.column("doc_id")[i].as_py(),
                    text=chunks.column("text")[i].as_py(), score=float(score),
                    title=chunks.column("title")[i].as_py(), row_id=int(row_id)))
            results.append(passages)
        return results
