"""DenseRetriever: a redacted question in, ACL-trimmed passages out, from an IndexBundle.

The question is redacted as the bundle's documents were (`QueryRedactor`: the policies the
manifest records, so a pseudonymised name still matches a `personal` collection and a name
stays a name for a `public_knowledge` one), embedded with the bundle's embedder, and
searched in FAISS with the principal's allowed chunk ids enforced inside the search
(`VectorIndex.search(allowed_ids=)`). A question the bundle's policies redact differently
is searched once per form, each over its policy's passages, and the hits merged by score.
The hybrid retriever (dense + knowledge graph) builds on this class: it reuses the
redacted question and its vector (a small cache), and scores its second-hop candidates with
`similarities` (cosines against just those chunks, within the principal's ACL).

    >>> retriever = DenseRetriever(Path(".rayrag/demo/bundle"), cfg)
    >>> passages = retriever.retrieve(
    ...     "Who acquired Brightwater Labs?", Principal("ana", frozenset({"public"}))
    ... )
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from rayrag.config import RAGConfig
from rayrag.errors import AccessDenied, ConfigError, DataError
from rayrag.index.bundle import IndexBundle, place_of
from rayrag.index.vector import AllowedIds
from rayrag.types import Passage, Principal, RedactedQuestion

MAX_QUESTION_CHARS = 4000
MAX_CACHED_SELECTORS = 32  # distinct group sets are few (roles); bound the memory anyway
MAX_CACHED_QUERIES = 16  # a hybrid query embeds once for the search and again for the second hop


def check_question(question: str) -> None:
    """A one-line `DataError` for an empty or over-long question (every retriever's input)."""
    if not isinstance(question, str) or not question.strip():
        raise DataError("question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise DataError(f"question is too long: {len(question)} chars > {MAX_QUESTION_CHARS}")


class DenseRetriever:
    def __init__(self, bundle_path: Path, config: RAGConfig) -> None:
        self.bundle_path = Path(bundle_path)
        self.config = config
        self._bundle: IndexBundle | None = None
        self._index: Any = None
        self._embedder: Any = None
        self._redactor: Any = None  # QueryRedactor: the bundle's policies
        self._acl: list[frozenset[str]] = []
        # per chunk row: the policy that redacted it
        self._policy: np.ndarray = np.zeros(0, dtype=object)
        self._row_ids: np.ndarray = np.zeros(0, np.int64)
        self._rows: dict[int, int] = {}
        # group set -> its allowed ids as a FAISS selector: scanning every chunk's ACL and
        # building the bitmap per query would cost O(chunks) a request.
        self._selectors: OrderedDict[tuple[frozenset[str], frozenset[str] | None], AllowedIds] = (
            OrderedDict()
        )
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()  # redacted question -> (1, dim)
        self._redacted: OrderedDict[str, RedactedQuestion] = OrderedDict()  # question -> its forms

    def warm_up(self) -> None:
        if self._index is not None:
            return
        from rayrag.index.embedder import Embedder

        bundle = IndexBundle.load(self.bundle_path)
        embedder_info = bundle.manifest.get("embedder", {})
        if embedder_info.get("dim") != self.config.embedding.dim:
            raise ConfigError(
                f"bundle embeddings have dim {embedder_info.get('dim')}, config has "
                f"{self.config.embedding.dim} (embedding.dim)"
            )
        from rayrag.index.embedder import resolve_model

        ours = resolve_model(self.config.embedding).name
        if embedder_info.get("name") not in (None, ours):  # queries must land in the bundle's space
            raise ConfigError(
                f"bundle was embedded with {embedder_info['name']!r}, this config embeds "
                f"queries with {ours!r} (embedding.model)"
            )
        chunks = bundle.chunks()
        self._row_ids = np.asarray(chunks.column("row_id").to_pylist(), dtype=np.int64)
        self._rows = {int(r): i for i, r in enumerate(self._row_ids)}
        self._acl = [frozenset(a) for a in chunks.column("acl").to_pylist()]
        self._policy = np.asarray(bundle.chunk_policies(), dtype=object)
        self._embedder = Embedder(self.config.embedding)
        self._embedder.warm_up()
        from rayrag.governance.privacy.redaction import QueryRedactor

        self._redactor = QueryRedactor(bundle, self.config.governance.redaction)
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

    def allowed_row_ids(
        self, principal: Principal, policies: frozenset[str] | None = None
    ) -> np.ndarray:
        """Row ids the principal may read (of chunks redacted under `policies`; None = all)."""
        self.warm_up()
        groups = principal.groups
        mask = np.fromiter(
            (bool(groups & acl) for acl in self._acl), dtype=bool, count=len(self._acl)
        )
        if policies is not None:
            mask &= np.isin(self._policy, list(policies))
        return self._row_ids[mask]

    def allowed_for(
        self, principal: Principal, policies: frozenset[str] | None = None
    ) -> AllowedIds:
        """The principal's `AllowedIds` (selector), built once per group set (and policy set)."""
        key = (frozenset(principal.groups), policies)
        allowed = self._selectors.get(key)
        if allowed is None:
            allowed = AllowedIds(self.allowed_row_ids(principal, policies))
            self._selectors[key] = allowed
            while len(self._selectors) > MAX_CACHED_SELECTORS:
                self._selectors.popitem(last=False)
        else:
            self._selectors.move_to_end(key)
        return allowed

    def retrieve(
        self,
        question: str | RedactedQuestion,
        principal: Principal,
        top_k: int | None = None,
        redact: bool = True,
    ) -> list[Passage]:
        """ACL-trimmed passages, best first. A `RedactedQuestion` (the serve graph's Redactor
        made it) is searched as is; `redact=False`: the string is already redacted."""
        top_k = self.config.retrieval.top_k if top_k is None else top_k
        if top_k <= 0:
            raise ConfigError(f"top_k must be > 0, got {top_k} (--top-k)")
        check_question(question.text if isinstance(question, RedactedQuestion) else question)
        self.warm_up()
        allowed = self.allowed_for(principal)
        if allowed.count == 0:
            raise AccessDenied(f"principal {principal.name!r} may read no documents in this bundle")
        query = self.query(question, redact)
        groups = query.groups()
        vectors = {text: self.query_vector(text, redact=False) for text, _ in groups}
        return self.search_groups(groups, vectors, principal, top_k)

    def query(self, question: str | RedactedQuestion, redact: bool = True) -> RedactedQuestion:
        """`question` as this bundle's policies see it (`redact=False`: as given, for all)."""
        if isinstance(question, RedactedQuestion):
            return question
        return self.redacted(question) if redact else RedactedQuestion(text=question)

    def redacted(self, question: str) -> RedactedQuestion:
        """The question's forms, one per redaction policy of the bundle (cached)."""
        self.warm_up()
        redacted = self._redacted.get(question)
        if redacted is None:
            redacted = self._redacted[question] = self._redactor.redact(question)
            while len(self._redacted) > MAX_CACHED_QUERIES:
                self._redacted.popitem(last=False)
        return redacted

    def redact(self, question: str) -> str:
        """The question as the reader and the graph see it: its strictest form (a name the
        bundle pseudonymises becomes the pseudonym its documents carry), or as given when
        the bundle was ingested without redaction."""
        return self.redacted(question).text

    def search_groups(
        self,
        groups: list[tuple[str, frozenset[str] | None]],
        vectors: dict[str, np.ndarray],
        principal: Principal,
        top_k: int,
    ) -> list[Passage]:
        """Hits for each (query text, policies) group over its policies' passages, merged by
        score (each form is the question the same model sees: cosines compare)."""
        if len(groups) == 1:
            return self.search(vectors[groups[0][0]], principal, top_k)[0]
        merged: dict[str, Passage] = {}
        for text, policies in groups:
            if self.allowed_for(principal, policies).count == 0:
                continue
            for passage in self.search(vectors[text], principal, top_k, policies)[0]:
                if passage.chunk_id not in merged or passage.score > merged[passage.chunk_id].score:
                    merged[passage.chunk_id] = passage
        return sorted(merged.values(), key=lambda p: (-p.score, p.chunk_id))[:top_k]

    def query_vector(self, question: str, redact: bool = True) -> np.ndarray:
        """(1, dim) embedding of the (redacted) question; the last few are cached, so the
        hybrid retriever's second hop scores with the vector the search used."""
        self.warm_up()
        query = self.redact(question) if redact else question
        vector = self._queries.get(query)
        if vector is None:
            vector = self._queries[query] = self._embedder.encode([query])
            while len(self._queries) > MAX_CACHED_QUERIES:
                self._queries.popitem(last=False)
        else:
            self._queries.move_to_end(query)
        return vector

    def similarities(
        self, queries: list[str], principal: Principal, row_ids: list[int]
    ) -> list[dict[int, float]]:
        """For each query text (used as given: derive it from an already-redacted question),
        row_id -> its cosine with each of `row_ids` the principal may read: an exact FAISS
        search over just those rows, within the principal's ACL. Rows it may not read are
        absent."""
        self.warm_up()
        rows = np.asarray(sorted(set(row_ids)), dtype=np.int64)
        readable = rows[self.allowed_for(principal).contains(rows)] if len(rows) else rows
        if not len(readable) or not queries:
            return [{} for _ in queries]
        scores, ids = self._index.search(
            self._embedder.encode(list(queries)), len(readable), allowed_ids=AllowedIds(readable)
        )
        return [
            {int(i): float(s) for s, i in zip(row_scores, row_ids_, strict=True) if i >= 0}
            for row_scores, row_ids_ in zip(scores, ids, strict=True)
        ]

    def encode(self, questions: list[str]) -> np.ndarray:
        """(N, dim) query embeddings: one batched call (the serve graph batches requests)."""
        self.warm_up()
        return self._embedder.encode(questions)

    def search(
        self,
        vectors: np.ndarray,
        principal: Principal,
        top_k: int,
        policies: frozenset[str] | None = None,
    ) -> list[list[Passage]]:
        """Passages for each query vector (N, dim), all for one principal (over the passages
        of `policies` only, when given)."""
        self.warm_up()
        allowed = self.allowed_for(principal, policies)
        if allowed.count == 0:
            if (
                policies is not None
            ):  # none of this policy's passages: another form's search finds the rest
                return [[] for _ in range(len(vectors))]
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
                passages.append(
                    Passage(
                        chunk_id=chunks.column("chunk_id")[i].as_py(),
                        doc_id=chunks.column("doc_id")[i].as_py(),
                        text=chunks.column("text")[i].as_py(),
                        score=float(score),
                        title=chunks.column("title")[i].as_py(),
                        row_id=int(row_id),
                        **place_of(
                            chunks.column("metadata")[i].as_py()
                            if "metadata" in chunks.column_names
                            else None
                        ),
                    )
                )
            results.append(passages)
        return results
