"""HybridRetriever: dense (FAISS) and knowledge-graph rankings fused into one `Evidence`.

Three modes over one IndexBundle:

- ``dense``: the `DenseRetriever` (redacted question, ACL enforced inside FAISS).
- ``graph``: HippoRAG's retrieval step (Gutiérrez et al. 2024, "HippoRAG: Neurobiologically
  Inspired Long-Term Memory for Large Language Models") — personalized PageRank over the
  principal's subgraph, seeded by the entities linked in the question and, as HippoRAG 2
  does, by the top dense hits (`RetrievalConfig.seed_k`), so a question whose entities do
  not link still starts the walk somewhere sensible.
- ``hybrid``: a KG-guided dense ranking fused with the graph ranking, either by reciprocal
  rank fusion (Cormack, Clarke and Büttcher 2009, "Reciprocal Rank Fusion outperforms
  Condorcet and individual Rank Learning Methods": score = sum 1 / (rrf_k + rank)) or by
  a weighted sum of min-max normalised scores (`fusion: weighted`, `dense_weight`).

Why `rrf_k` defaults to 2, not Cormack's 60: k = 60 was tuned for fusing many deep runs,
where rank 40 still matters. With two complementary lists, a small k approximates
interleaving their top hits with a bonus for agreement; at k = 60 a passage the graph
puts first (an identifier or a title the question names exactly) loses to passages both
lists put around rank 5. recall@5, hybrid (demo corpus all / 2-hop; HotpotQA sample):
k=1 .800/.625, .645; k=2 .800/.625, .650; k=5 .743/.594, .635; k=10 .727/.588, .630;
k=20 .723/.581, .625; k=60 .713/.575, .620 (dense alone: .643/.456, .580; weighted
fusion, dense_weight .5: .747/.550, .635).

KG-guided expansion (hybrid only): a 2-hop question ("the product of the company that
acquired X") names X but not the bridge entity; PPR from X first floods every passage
that mentions X, so the second-hop passage rarely reaches the top 5 on rank alone. The
relation facts of the top `expand_k` dense passages that join a question entity to an
entity the question does not name give the bridges ("C acquire X"); the dense query is
re-run with them appended and that ranking is the dense side of the fusion. Measured on
the demo corpus (2-hop questions, admin, before title and identifier entities): recall@5
dense .456, graph .500, RRF (k=60) of plain dense and graph .463, of expanded dense and
graph .569.

Rankings are over chunks; documents are deduplicated only when an evaluation scores them
(HippoRAG measures recall on documents), never here, so the generator sees every chunk.
Facts come from the graph for the top passages. Every passage is checked against the
principal's ACL once more after fusion and a violation raises `AccessDenied` (fail closed).

    >>> retriever = HybridRetriever(Path(".rayrag/demo/bundle"), cfg)
    >>> evidence = retriever.retrieve("Which product is made by the company that acquired "
    ...                               "Avenra Logistics?", Principal("ana"), mode="hybrid")
    >>> [(p.doc_id, round(p.score, 4)) for p in evidence.passages]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, get_args

from rayrag.config import RAGConfig
from rayrag.errors import AccessDenied, ConfigError
from rayrag.pipelines.kg_extract import COOCCURS, PSEUDONYM_RE
from rayrag.retrieval.dense import DenseRetriever
from rayrag.types import Evidence, Fact, Passage, Principal

Mode = Literal["dense", "graph", "hybrid"]
MODES: tuple[str, ...] = get_args(Mode)
Ranking = list[tuple[str, float]]  # (chunk_id, score), best first
MAX_BRIDGES = 2  # more names drown the question in the expanded query's embedding


# ---------------------------------------------------------------- fusion (pure functions)


def rrf_fuse(rankings: Sequence[Sequence[str]], rrf_k: int = 60) -> Ranking:
    """Reciprocal rank fusion (Cormack et al. 2009): sum over lists of 1 / (rrf_k + rank).

    Ranks are 1-based. Ties keep first-seen order (list order, then rank), so the result
    is deterministic.
    """
    if rrf_k <= 0:
        raise ConfigError(f"rrf_k must be > 0, got {rrf_k} (retrieval.rrf_k)")
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (rrf_k + rank)
    order = {item: i for i, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def min_max(ranking: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Scores mapped to [0, 1]; a list whose scores are all equal maps to 1.0 (all best).

    Dense scores are cosines and PPR scores are probabilities: different scales, so each
    list is normalised on its own before they are mixed.
    """
    if not ranking:
        return {}
    values = [score for _, score in ranking]
    low, high = min(values), max(values)
    if high - low <= 0:
        return {item: 1.0 for item, _ in ranking}
    return {item: (score - low) / (high - low) for item, score in ranking}


def weighted_fuse(dense: Sequence[tuple[str, float]], graph: Sequence[tuple[str, float]],
                  dense_weight: float = 0.5) -> Ranking:
    """dense_weight * norm(dense) + (1 - dense_weight) * norm(graph); absent = 0."""
    if not 0.0 <= dense_weight <= 1.0:
        raise ConfigError(f"dense_weight must be in [0, 1], got {dense_weight} (retrieval.dense_weight)")
    dense_norm, graph_norm = min_max(dense), min_max(graph)
    items = list(dict.fromkeys([c for c, _ in dense] + [c for c, _ in graph]))
    order = {item: i for i, item in enumerate(items)}
    scores = {item: dense_weight * dense_norm.get(item, 0.0)
              + (1.0 - dense_weight) * graph_norm.get(item, 0.0) for item in items}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def passages_ranking(passages: Sequence[Passage]) -> Ranking:
    return [(p.chunk_id, p.score) for p in passages]


def expanded_query(question: str, bridges: Sequence[str]) -> str:
    """The dense query with the bridge entities appended (KG-guided expansion)."""
    return f"{question} {' '.join(bridges)}"


# ---------------------------------------------------------------- the retriever


class HybridRetriever:
    """Dense, graph or fused retrieval over one bundle; returns `Evidence`."""

    def __init__(self, bundle_path: Path, config: RAGConfig) -> None:
        self.bundle_path = Path(bundle_path)
        self.config = config
        self.dense = DenseRetriever(self.bundle_path, config)
        self._graph: Any = None  # GraphRetriever, built on first graph/hybrid use
        self._chunk_rows: dict[str, int] | None = None
        self._columns: dict[str, list[Any]] = {}
        self._chunk_flagged: dict[str, bool] = {}  # chunk_id -> input-safety verdict (bundle text is immutable)

    def warm_up(self, graph: bool = True) -> None:
        """Load the dense side (index, embedder, redactor) and, unless `graph=False`, the KG."""
        if self._chunk_rows is None:
            self.dense.warm_up()
            # The DenseRetriever already holds the bundle and embedder: reuse them rather
            # than load a second copy of the table and the model.
            chunks = self.dense.bundle.chunks()
            self._columns = {name: chunks.column(name).to_pylist()
                             for name in ("chunk_id", "doc_id", "title", "text", "acl", "row_id")}
            self._columns["acl"] = [frozenset(a) for a in self._columns["acl"]]
            self._chunk_rows = {cid: i for i, cid in enumerate(self._columns["chunk_id"])}
        if graph and self._graph is None:
            from rayrag.retrieval.graph_query import GraphRetriever

            self._graph = GraphRetriever(self.dense.bundle.graph(), self.config.kg,
                                         embed_fn=self.dense.embedder.encode)
            self._graph.prepare()  # spaCy, and every entity name embedded once, before any question

    def retrieve(self, question: str, principal: Principal, mode: Mode | None = None,
                 top_k: int | None = None, with_facts: bool = True) -> Evidence:
        """The top_k passages for `principal` (fused when mode = hybrid) and their facts."""
        mode = self.config.retrieval.mode if mode is None else mode
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r} (--mode)")
        top_k = self.config.retrieval.top_k if top_k is None else top_k
        if top_k <= 0:
            raise ConfigError(f"top_k must be > 0, got {top_k} (--top-k)")
        self.warm_up(graph=mode != "dense")
        return self.evidence(self.rank(question, principal, mode, top_k), question, principal, mode, with_facts)

    def rank(self, question: str, principal: Principal, mode: Mode, top_k: int) -> Ranking:
        """(chunk_id, score) best first, at most top_k, before provenance is attached.

        The steps are public so the serve graph can run them on separate deployments (dense
        search on the Retriever, linking and PageRank on the KGEnricher) and get the same
        ranking: dense search and entity linking do not depend on each other."""
        depth = self.depth(mode, top_k)
        dense_hits = self.dense.retrieve(question, principal, top_k=depth)
        if mode == "dense":
            return passages_ranking(dense_hits)[:top_k]
        links = self.link(question, principal)
        graph_ranking = self.graph_ranking(links, principal, dense_hits, depth)
        if mode == "graph":
            return graph_ranking[:top_k]
        bridges = self.bridge_entities(question, principal, [p.chunk_id for p in dense_hits[:self.config.retrieval.expand_k]])
        if bridges:
            dense_hits = self.dense.retrieve(expanded_query(question, bridges), principal, top_k=depth)
        return self.fuse(passages_ranking(dense_hits), graph_ranking, top_k)

    def depth(self, mode: Mode, top_k: int) -> int:
        """Candidates per side: fusion needs more than top_k from both; dense alone top_k."""
        return top_k if mode == "dense" else max(top_k, self.config.retrieval.candidate_k)

    def link(self, question: str, principal: Principal) -> dict[str, float]:
        """The question's entities in the principal's graph -> seed weight."""
        self.warm_up(graph=True)
        return self._graph.link(question, principal)

    def graph_ranking(self, links: dict[str, float], principal: Principal, dense_hits: Sequence[Passage],
                      depth: int) -> Ranking:
        """PPR from the linked entities and, HippoRAG 2-style, the best dense passages. PPR
        needs non-negative weights, and cosines can be negative."""
        self.warm_up(graph=True)
        seeds = {p.chunk_id: max(p.score, 1e-6) for p in dense_hits[:self.config.retrieval.seed_k]}
        return list(self._graph.rank_seeds(links, principal, dense_seeds=seeds, top_k=depth))

    def fuse(self, dense_ranking: Ranking, graph_ranking: Ranking, top_k: int) -> Ranking:
        retrieval = self.config.retrieval
        if retrieval.fusion == "rrf":
            fused = rrf_fuse([[c for c, _ in dense_ranking], [c for c, _ in graph_ranking]], retrieval.rrf_k)
        else:
            fused = weighted_fuse(dense_ranking, graph_ranking, retrieval.dense_weight)
        return fused[:top_k]

    def evidence(self, ranking: Ranking, question: str, principal: Principal, mode: Mode,
                 with_facts: bool = True) -> Evidence:
        """Passages (ACL re-checked, fail closed) and their facts for a ranking.

        Every path to the reader comes through here (`retrieve`, the serve graph's
        KGEnricher, the in-process evaluator), so this is where the input-safety classifier
        keeps chunks with planted instructions out of the prompt: a flagged passage is
        dropped and counted in `flagged_chunks`, and so is a fact whose only support is a
        flagged chunk (the injection must not come back as a KG fact)."""
        self.warm_up(graph=mode != "dense")
        passages = tuple(self._passage(chunk_id, score, principal) for chunk_id, score in ranking)
        kept = tuple(p for p in passages if not self._is_flagged(p.chunk_id))
        facts: tuple[Fact, ...] = ()
        needs_graph = mode != "dense" or (with_facts and self.config.retrieval.use_graph)
        if needs_graph and kept:
            facts = self._safe_facts(self._facts(question, principal, [p.chunk_id for p in kept]))
        return Evidence(passages=kept, facts=facts, flagged_chunks=len(passages) - len(kept))

    def _is_flagged(self, chunk_id: str) -> bool:
        """The input-safety verdict on a chunk's title and text, once per chunk."""
        safety_cfg = self.config.governance.input_safety
        if not (safety_cfg.enabled and safety_cfg.check_chunks):
            return False
        flagged = self._chunk_flagged.get(chunk_id)
        if flagged is None:
            from rayrag.governance.input_safety import input_safety

            i = (self._chunk_rows or {})[chunk_id]
            title, text = self._columns["title"][i], self._columns["text"][i]
            flagged = input_safety(safety_cfg).check(f"{title}\n{text}" if title else text).flagged
            self._chunk_flagged[chunk_id] = flagged
        return flagged

    def _safe_facts(self, facts: tuple[Fact, ...]) -> tuple[Fact, ...]:
        """Facts with flagged chunks taken out of their provenance; a fact left without any is dropped."""
        safe = []
        for fact in facts:
            clean = tuple(c for c in fact.chunk_ids if not self._is_flagged(c))
            if not clean:
                continue
            if len(clean) < len(fact.chunk_ids):
                rows = self._chunk_rows or {}
                docs = tuple(dict.fromkeys(self._columns["doc_id"][rows[c]] for c in clean))
                fact = replace(fact, chunk_ids=clean, doc_ids=docs)
            safe.append(fact)
        return tuple(safe)

    def bridge_entities(self, question: str, principal: Principal, chunk_ids: list[str]) -> list[str]:
        """Entities joined by a relation fact to an entity the question names, but not named
        in it: the hop a multi-hop question leaves implicit. Co-occurrence is too weak a
        link, and a redaction pseudonym is never put back into a query."""
        if not chunk_ids:
            return []
        lowered = question.casefold()
        bridges: list[str] = []
        for fact in self._graph.facts(question, principal, chunk_ids, max_facts=10):
            if fact.relation == COOCCURS:
                continue
            for named, other in ((fact.subject, fact.object), (fact.object, fact.subject)):
                if (named.casefold() in lowered and other.casefold() not in lowered
                        and not PSEUDONYM_RE.search(other) and other not in bridges):
                    bridges.append(other)
        return bridges[:MAX_BRIDGES]

    def _passage(self, chunk_id: str, score: float, principal: Principal) -> Passage:
        assert self._chunk_rows is not None
        i = self._chunk_rows.get(chunk_id)
        if i is None:
            # The graph and the chunk table come from the same bundle; a miss means a
            # corrupted or mixed bundle, and an unknown chunk cannot be ACL-checked.
            raise AccessDenied(f"retrieved chunk {chunk_id!r} is not in the bundle; refusing to return it")
        if not principal.groups & self._columns["acl"][i]:
            # Both sides trim by ACL already; this is the last line of defence (fail closed).
            raise AccessDenied(f"retrieval produced chunk {chunk_id!r} that principal "
                               f"{principal.name!r} may not read; refusing to return it")
        cols = self._columns
        return Passage(chunk_id=chunk_id, doc_id=cols["doc_id"][i], text=cols["text"][i],
                       score=float(score), title=cols["title"][i], row_id=int(cols["row_id"][i]))

    def _facts(self, question: str, principal: Principal, chunk_ids: list[str]) -> tuple[Fact, ...]:
        if not self.config.retrieval.use_graph:
            return ()
        try:
            self.warm_up(graph=True)
        except ConfigError:
            return ()  # facts are enrichment: a dense-only build still answers
        facts = self._graph.facts(question, principal, chunk_ids, max_facts=10)
        rows = self._chunk_rows or {}
        readable = []
        for fact in facts:
            if not fact.chunk_ids:
                continue  # a fact without provenance can't be ACL-checked or cited
            for chunk_id in fact.chunk_ids:
                i = rows.get(chunk_id)
                if i is None or not principal.groups & self._columns["acl"][i]:
                    raise AccessDenied(f"a graph fact cites chunk {chunk_id!r} that principal "
                                       f"{principal.name!r} may not read; refusing to return it")
            readable.append(fact)
        return tuple(readable)
