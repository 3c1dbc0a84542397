"""HybridRetriever: dense (FAISS) and knowledge-graph rankings fused into one `Evidence`.

Three modes over one IndexBundle:

- ``dense``: the `DenseRetriever` (redacted question, ACL enforced inside FAISS).
- ``graph``: HippoRAG's retrieval step (Gutiérrez et al. 2024, "HippoRAG: Neurobiologically
  Inspired Long-Term Memory for Large Language Models") — personalized PageRank over the
  principal's subgraph, seeded by the entities linked in the question and, as HippoRAG 2
  does, by the top dense hits (`RetrievalConfig.seed_k`), so a question whose entities do
  not link still starts the walk somewhere sensible.
- ``hybrid``: the dense ranking fused with the graph ranking, either by reciprocal
  rank fusion (Cormack, Clarke and Büttcher 2009, "Reciprocal Rank Fusion outperforms
  Condorcet and individual Rank Learning Methods": score = sum 1 / (rrf_k + rank)) or by
  a weighted sum of min-max normalised scores (`fusion: weighted`, `dense_weight`), then
  reordered by two graph-guided hops (`HybridRetriever.hops`).

Why `rrf_k` defaults to 2, not Cormack's 60: k = 60 was tuned for fusing many deep runs,
where rank 40 still matters. With two complementary lists, a small k approximates
interleaving their top hits with a bonus for agreement; at k = 60 a passage the graph
puts first (an identifier or a title the question names exactly) loses to passages both
lists put around rank 5 (the sweep over k is in docs/DECISIONS.md).

Graph-guided hops (hybrid only; IRCoT / HippoRAG-style). A 2-hop question ("Which product
is made by the company that acquired Avenra Logistics?") names Avenra but neither the
bridge (the acquirer) nor the answer. Fusion ranks the bridge passage ("C acquired
Avenra") first or second, but the answer passage (C's product sheet) mentions nothing the
question names, and the reader only sees the first 2-3 passages. So:

1. first hop: the passage citing a relation fact on a question entity, of a relation the
   question asks about (its verbs and agent nouns: "acquired", "maker"), goes to rank 1;
2. second hop: the bridges are the entities such facts join to the question's entities
   (and what the first passage mentions); the passages mentioning a bridge are scored by
   the residual question (the question less the words the bridge's passage holds), the
   bridge's weight and specificity, and whether they cite an asked fact on the bridge
   ("C make P"); the best moves to rank `hop_rank` (2), so one-hop questions keep their
   best passage at rank 1;
3. facts start with the path (`GraphRetriever.path`): (C acquire Avenra Logistics),
   (C make P): the reader answers from the path's end.

What the hops measured, and the query expansion they replaced: docs/DECISIONS.md
("Multi-hop retrieval through the graph").

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

import copy
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from rayrag.config import RAGConfig
from rayrag.coroutines import run_sync
from rayrag.errors import AccessDenied, ConfigError
from rayrag.index.bundle import place_of
from rayrag.index.kg_extract import IDENTIFIER_RE
from rayrag.retrieval.dense import DenseRetriever, check_question
from rayrag.types import Evidence, Fact, Passage, Principal, RedactedQuestion

if TYPE_CHECKING:
    from rayrag.retrieval.graph_facts import HopCandidate

Mode = Literal["dense", "bm25", "graph", "hybrid"]
MODES: tuple[str, ...] = get_args(Mode)
Ranking = list[tuple[str, float]]  # (chunk_id, score), best first
MAX_FACTS = 10  # facts per Evidence: the reader keeps what its window holds, the path first
MAX_HOP_CANDIDATES = 256  # second-hop passages scored per question (answering ones first)
MAX_CACHED_MASKS = 32  # per group set, as the dense side caches its FAISS selectors


# ---------------------------------------------------------------- fusion (pure functions)


def rrf_fuse(
    rankings: Sequence[Sequence[str]], rrf_k: int = 60, weights: Sequence[float] | None = None
) -> Ranking:
    """Reciprocal rank fusion (Cormack et al. 2009): sum over lists of w / (rrf_k + rank),
    w = 1 unless `weights` (one per list) says otherwise.

    Ranks are 1-based. Ties keep first-seen order (list order, then rank), so the result
    is deterministic.
    """
    if rrf_k <= 0:
        raise ConfigError(f"rrf_k must be > 0, got {rrf_k} (retrieval.rrf_k)")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings) or any(w < 0 for w in weights):
        raise ConfigError(f"rrf weights must be one non-negative number per ranking, got {weights}")
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + weight / (rrf_k + rank)
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


def weighted_fuse(
    dense: Sequence[tuple[str, float]],
    graph: Sequence[tuple[str, float]],
    dense_weight: float = 0.5,
) -> Ranking:
    """dense_weight * norm(dense) + (1 - dense_weight) * norm(graph); absent = 0."""
    if not 0.0 <= dense_weight <= 1.0:
        raise ConfigError(
            f"dense_weight must be in [0, 1], got {dense_weight} (retrieval.dense_weight)"
        )
    dense_norm, graph_norm = min_max(dense), min_max(graph)
    items = list(dict.fromkeys([c for c, _ in dense] + [c for c, _ in graph]))
    order = {item: i for i, item in enumerate(items)}
    scores = {
        item: dense_weight * dense_norm.get(item, 0.0)
        + (1.0 - dense_weight) * graph_norm.get(item, 0.0)
        for item in items
    }
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def passages_ranking(passages: Sequence[Passage]) -> Ranking:
    return [(p.chunk_id, p.score) for p in passages]


class RankSteps(Protocol):
    """Where each retrieval step runs: this process (`HybridRetriever`) or the Serve graph's
    deployments (`rayrag.serve.handles`). `both` awaits two independent steps (concurrently
    over handles, one after the other in process); `final` turns the rankings into the
    mode's ranking (`HybridRetriever.final_ranking`) and whatever the caller needs from it."""

    async def dense(
        self, question: RedactedQuestion, principal: Principal, depth: int
    ) -> list[Passage]: ...

    async def link(self, question: RedactedQuestion, principal: Principal) -> dict[str, float]: ...

    async def graph(
        self, principal: Principal, links: dict[str, float], dense_hits: list[Passage], depth: int
    ) -> Ranking: ...

    async def both(self, first: Any, second: Any) -> tuple[Any, Any]: ...

    async def final(
        self,
        question: RedactedQuestion,
        principal: Principal,
        mode: Mode,
        top_k: int,
        dense_ranking: Ranking,
        graph_ranking: Ranking,
    ) -> Any: ...


def candidate_depth(mode: str, top_k: int, config: RAGConfig) -> int:
    """Candidates per side: fusion needs more than top_k from both; dense alone top_k."""
    return top_k if mode == "dense" else max(top_k, config.retrieval.candidate_k)


async def rank_plan(
    steps: RankSteps,
    question: RedactedQuestion,
    principal: Principal,
    mode: Mode,
    top_k: int,
    depth: int,
) -> Any:
    """Which steps each mode runs, written once: bm25 needs neither side; dense needs no graph;
    graph and hybrid link entities while the dense search runs, then rank by PageRank seeded
    from both (HippoRAG 2's dense seeds), and `final` combines."""
    if mode == "bm25":  # the lexical index lives beside the graph; nothing else to search
        return await steps.final(question, principal, mode, top_k, [], [])
    if mode == "dense":
        dense_hits, links = await steps.dense(question, principal, depth), {}
    else:  # dense search and entity linking do not depend on each other
        dense_hits, links = await steps.both(
            steps.dense(question, principal, depth), steps.link(question, principal)
        )
    graph_ranking = (
        [] if mode == "dense" else await steps.graph(principal, links, dense_hits, depth)
    )
    return await steps.final(
        question, principal, mode, top_k, passages_ranking(dense_hits), graph_ranking
    )


class _LocalRankSteps:
    """`RankSteps` in this process: the retriever's own methods, one after the other."""

    def __init__(self, hybrid: HybridRetriever) -> None:
        self.hybrid = hybrid

    async def dense(
        self, question: RedactedQuestion, principal: Principal, depth: int
    ) -> list[Passage]:
        return self.hybrid.dense.retrieve(question, principal, top_k=depth)

    async def link(self, question: RedactedQuestion, principal: Principal) -> dict[str, float]:
        return self.hybrid.link(question, principal)

    async def graph(
        self, principal: Principal, links: dict[str, float], dense_hits: list[Passage], depth: int
    ) -> Ranking:
        return self.hybrid.graph_ranking(links, principal, dense_hits, depth)

    async def both(self, first: Any, second: Any) -> tuple[Any, Any]:
        return await first, await second

    async def final(
        self,
        question: RedactedQuestion,
        principal: Principal,
        mode: Mode,
        top_k: int,
        dense_ranking: Ranking,
        graph_ranking: Ranking,
    ) -> Ranking:
        return self.hybrid.final_ranking(
            question, principal, mode, top_k, dense_ranking, graph_ranking
        )


_WORD = re.compile(r"\w[\w'-]*")
_STEM_CHARS = 5  # "acquired" and "acquisition" share "acqui"; "make" and "maker" do not


def _stem(word: str) -> str:
    return word.casefold()[:_STEM_CHARS]


def residual_query(question: str, passage: str) -> str:
    """The question without the words `passage` already holds (compared on their first
    five letters, a crude stem): what a second passage must still say. The whole question
    when the passage holds all of it.

    >>> residual_query("Which product is made by the company that acquired Avenra Logistics?",
    ...                "Cresthill Power acquired Avenra Logistics in 2023.")
    'Which product is made by the company that'
    """
    held = {_stem(w) for w in _WORD.findall(passage)}
    kept = [w for w in _WORD.findall(question) if _stem(w) not in held]
    return " ".join(kept) or question


# ---------------------------------------------------------------- the retriever


class HybridRetriever:
    """Dense, graph or fused retrieval over one bundle; returns `Evidence`."""

    def __init__(self, bundle_path: Path, config: RAGConfig) -> None:
        self.bundle_path = Path(bundle_path)
        self.config = config
        self.dense = DenseRetriever(self.bundle_path, config)
        self._graph: Any = None  # GraphRetriever, built on first graph/hybrid use
        self._chunk_rows: dict[str, int] | None = None
        self._row_chunk: dict[int, str] = {}  # FAISS/BM25 row id -> chunk id
        self._columns: dict[str, list[Any]] = {}
        self._chunk_flagged: dict[
            str, bool
        ] = {}  # chunk_id -> input-safety verdict (bundle text is immutable)
        self._lexical: Any = (
            None  # LexicalIndex, loaded on first bm25/hybrid use; False: the bundle has none
        )
        # group set -> BM25 weight mask
        self._masks: OrderedDict[frozenset[str], Any] = OrderedDict()

    def warm_up(self, graph: bool = True) -> None:
        """Load the dense side (index, embedder, redactor) and, unless `graph=False`, the KG."""
        if self._chunk_rows is None:
            self.dense.warm_up()
            # The DenseRetriever already holds the bundle and embedder: reuse them rather
            # than load a second copy of the table and the model.
            chunks = self.dense.bundle.chunks()
            self._columns = {
                name: chunks.column(name).to_pylist()
                for name in ("chunk_id", "doc_id", "title", "text", "acl", "row_id", "metadata")
                if name in chunks.column_names  # metadata: page and section of a passage
            }
            self._columns["acl"] = [frozenset(a) for a in self._columns["acl"]]
            self._chunk_rows = {cid: i for i, cid in enumerate(self._columns["chunk_id"])}
            self._row_chunk = dict(
                zip(self._columns["row_id"], self._columns["chunk_id"], strict=True)
            )
        if graph and self._graph is None:
            from rayrag.retrieval.graph_query import GraphRetriever

            self._graph = GraphRetriever(
                self.dense.bundle.graph(), self.config.kg, embed_fn=self.dense.embedder.encode
            )
            self._graph.prepare()  # spaCy, and every entity name embedded once, before any question

    def state(self) -> dict[str, Any]:
        """What is loaded: the bundle id, its chunks, the graph's nodes (0 before `warm_up`)."""
        graph = self._graph.graph.graph if self._graph is not None else None
        return {
            "bundle_id": self.dense.bundle.bundle_id if self._chunk_rows is not None else "",
            "chunks": len(self._chunk_rows or {}),
            "graph_nodes": graph.number_of_nodes() if graph else 0,
        }

    def with_config(self, config: RAGConfig) -> HybridRetriever:
        """This retriever, loaded bundle and all, with other retrieval settings (fusion
        calibration tries many without loading the index, graph and models again)."""
        self.warm_up(graph=True)
        clone = copy.copy(self)
        clone.config = config
        return clone

    def doc_id(self, chunk_id: str) -> str:
        self.warm_up(graph=False)
        return self._columns["doc_id"][(self._chunk_rows or {})[chunk_id]]

    def retrieve(
        self,
        question: str | RedactedQuestion,
        principal: Principal,
        mode: Mode | None = None,
        top_k: int | None = None,
        with_facts: bool = True,
    ) -> Evidence:
        """The top_k passages for `principal` (fused when mode = hybrid) and their facts."""
        mode = self.config.retrieval.mode if mode is None else mode
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r} (--mode)")
        top_k = self.config.retrieval.top_k if top_k is None else top_k
        if top_k <= 0:
            raise ConfigError(f"top_k must be > 0, got {top_k} (--top-k)")
        self.warm_up(graph=mode not in ("dense", "bm25"))
        query = self.dense.query(question)  # redacted once, as the bundle's policies say
        return self.evidence(
            self.rank(query, principal, mode, top_k), query, principal, mode, with_facts
        )

    def rank(
        self, question: str | RedactedQuestion, principal: Principal, mode: Mode, top_k: int
    ) -> Ranking:
        """(chunk_id, score) best first, at most top_k, before provenance is attached.

        The steps are public so the serve graph can run them on separate deployments (dense
        search on the Retriever, linking and PageRank on the Ranker) and get the same
        ranking: dense search and entity linking do not depend on each other."""
        query = self.dense.query(question)
        return run_sync(
            rank_plan(_LocalRankSteps(self), query, principal, mode, top_k, self.depth(mode, top_k))
        )

    def final_ranking(
        self,
        question: RedactedQuestion,
        principal: Principal,
        mode: Mode,
        top_k: int,
        dense_ranking: Ranking,
        graph_ranking: Ranking,
    ) -> Ranking:
        """The mode's ranking from the sides `rank_plan` ran: one side cut to top_k, BM25, or
        their fusion with the graph-guided hops."""
        if mode == "dense":
            return dense_ranking[:top_k]
        if mode == "bm25":
            return self.lexical_ranking(question, principal, top_k)
        if mode == "graph":
            return graph_ranking[:top_k]
        return self.hybrid_ranking(question, principal, dense_ranking, graph_ranking, top_k)

    def hybrid_ranking(
        self,
        question: str | RedactedQuestion,
        principal: Principal,
        dense_ranking: Ranking,
        graph_ranking: Ranking,
        top_k: int,
        redacted: bool = False,
    ) -> Ranking:
        """Fusion of the two rankings, then the graph-guided hops (`hops`), top_k kept.
        A `RedactedQuestion` (the serve graph's Redactor made it) or `redacted`: the
        question already is redacted."""
        depth = self.depth("hybrid", top_k)
        query = self.dense.query(question, redact=not redacted)
        lexical = (
            self.lexical_ranking(query, principal, depth)
            if self.config.retrieval.fusion_weights["bm25"] > 0 and self.has_lexical()
            else []
        )
        fused = self.fuse(dense_ranking, graph_ranking, depth, lexical)
        return self.hops(query, principal, self.anchor(query.text, fused))[:top_k]

    def has_lexical(self) -> bool:
        """Whether the bundle carries a BM25 index (bundles before it fuse dense and graph only)."""
        if self._lexical is None:
            self.warm_up(graph=False)
            bundle = self.dense.bundle
            self._lexical = bundle.lexical_index() if bundle.has_lexical() else False
        return self._lexical is not False

    def lexical_ranking(
        self,
        question: str | RedactedQuestion,
        principal: Principal,
        top_k: int,
        redact: bool = True,
    ) -> Ranking:
        """BM25 (chunk_id, score) best first over the passages `principal` may read, for the
        question redacted as the corpus was (`redact=False` or a `RedactedQuestion`: it
        already is); one search per form the bundle's policies give it, each over its
        policy's passages, merged by score."""
        check_question(question.text if isinstance(question, RedactedQuestion) else question)
        if not self.has_lexical():
            self.dense.bundle.lexical_index()  # raises the one-line "re-ingest" error
        allowed = self.dense.allowed_for(principal)
        if allowed.count == 0:
            raise AccessDenied(f"principal {principal.name!r} may read no documents in this bundle")
        best: dict[str, float] = {}
        for text, policies in self.dense.query(question, redact).groups():
            for row, score in self._lexical.search(text, top_k, self._mask(principal, policies)):
                chunk_id = self._row_chunk[row]
                best[chunk_id] = max(score, best.get(chunk_id, score))
        return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:top_k]

    def _mask(self, principal: Principal, policies: frozenset[str] | None) -> Any:
        """The BM25 weight mask of what `principal` may read (of `policies`' passages), cached."""
        key = (frozenset(principal.groups), policies)
        mask = self._masks.get(key)
        if mask is None:
            mask = self._masks[key] = self._lexical.allowed_mask(
                self.dense.allowed_row_ids(principal, policies)
            )
            while len(self._masks) > MAX_CACHED_MASKS:
                self._masks.popitem(last=False)
        return mask

    def anchor(self, question: str, ranking: Ranking) -> Ranking:
        """`ranking` with the best-ranked passage that holds an identifier the question names
        ("EMP-11906", "ISO-9001") at rank 1, taking rank 1's score; unchanged when there is none.

        An identifier is an exact join key: every EMP-number embeds close to every other, so
        dense search ranks some other record first and RRF lets it outvote the graph, which
        links the id exactly (measured: docs/DECISIONS.md). Only passages already in the
        fused ranking move, so nothing the principal may not read can enter."""
        ids = set(IDENTIFIER_RE.findall(question))
        if not ids or not ranking:
            return ranking
        self.warm_up(graph=False)
        rows = self._chunk_rows or {}
        for chunk_id, _ in ranking:
            row = rows.get(chunk_id)
            if row is None:
                continue
            words = set(
                IDENTIFIER_RE.findall(
                    f"{self._columns['title'][row] or ''} {self._columns['text'][row]}"
                )
            )
            if ids & words:
                if chunk_id == ranking[0][0]:
                    return ranking
                return [
                    (chunk_id, ranking[0][1]),
                    *(item for item in ranking if item[0] != chunk_id),
                ]
        return ranking

    def hops(
        self,
        question: str | RedactedQuestion,
        principal: Principal,
        ranking: Ranking,
        redacted: bool = False,
    ) -> Ranking:
        """`ranking` reordered by the knowledge graph for (up to) two hops; a no-op when
        `retrieval.hop_rank` is 0.

        First hop: among the top `hop_from`, the best-ranked passage that cites a relation
        fact on an entity the question names, of a relation the question asks about
        ("Velora acquire Avenra" for "... the company that acquired Avenra?"), moves to rank 1.
        Second hop: of the passages one bridge entity away (`GraphRetriever.hop_candidates`:
        what the question's entities relate to, or what the first hop mentions), the best
        moves up to rank `hop_rank`, unless it ranks there already. It is triggered, not
        always on: a candidate must be reached through a relation the question asks about
        or cite an asked fact on its bridge (always on, it pushed some one-hop questions' gold
        passage out of the top 3; measured: docs/DECISIONS.md). A candidate scores

            cosine(residual question, passage) + hop_bridge_weight x bridge weight
                + hop_answer_weight x [it cites an asked fact on the bridge]

        where the residual question drops the words the bridge's first-hop passage holds
        ("Which product is made by the company that" after "X acquired Avenra Logistics in
        2023"): what is left is what the second passage must say. Both moves keep the scores
        non-increasing (a moved passage takes the score of the one it displaces), and every
        candidate is one the principal may read (the graph side works on the principal's
        subgraph, the dense side scores only readable rows, and `evidence` checks each
        passage again). The graph and the residual question read the question's strictest
        redacted form (`redacted` or a `RedactedQuestion`: it already is redacted).
        """
        retrieval = self.config.retrieval
        if retrieval.hop_rank <= 0 or not ranking:
            return ranking
        self.warm_up(graph=True)
        question = self.dense.query(question, redact=not redacted).text
        top = [c for c, _ in ranking[: retrieval.hop_from]]
        held = self._graph.answering(question, principal, top, retrieval.hop_relation_threshold)
        if held and held[0] != ranking[0][0]:
            ranking = [(held[0], ranking[0][1]), *(item for item in ranking if item[0] != held[0])]
            top = [c for c, _ in ranking[: retrieval.hop_from]]
        candidates = self._graph.hop_candidates(
            question, principal, top, retrieval.hop_mention_weight, retrieval.hop_relation_threshold
        )
        # Triggered, not always on: only a passage the question's relations lead to (an asked
        # bridge relation, or an asked fact on the bridge) is a second hop.
        candidates = {c: h for c, h in candidates.items() if h.asked or h.answers}
        if len(candidates) > MAX_HOP_CANDIDATES:  # the dense side scores the likeliest only
            kept = sorted(
                candidates, key=lambda c: (-candidates[c].answers, -candidates[c].weight, c)
            )
            candidates = {c: candidates[c] for c in kept[:MAX_HOP_CANDIDATES]}
        scored = self._hop_scores(question, principal, ranking, candidates)
        if not scored:
            return ranking
        best = max(scored, key=lambda c: (scored[c], c))
        at = retrieval.hop_rank - 1
        if best in [c for c, _ in ranking[: at + 1]]:
            return ranking
        rest = [item for item in ranking if item[0] != best]
        score = rest[at][1] if at < len(rest) else rest[-1][1]
        return [*rest[:at], (best, score), *rest[at:]]

    def _hop_scores(
        self,
        query: str,
        principal: Principal,
        ranking: Ranking,
        candidates: dict[str, HopCandidate],
    ) -> dict[str, float]:
        """Second-hop chunk_id -> score (see `hops`) for the redacted question `query`;
        candidates the principal may not read get none."""
        retrieval = self.config.retrieval
        rows = self._chunk_rows or {}
        position = {c: i for i, (c, _) in enumerate(ranking)}
        source_of = {}  # candidate -> its bridge's best-ranked first-hop passage
        for chunk_id, hop in candidates.items():
            known = [s for s in hop.sources if s in rows]
            if chunk_id in rows and known:
                source_of[chunk_id] = min(known, key=lambda s: (position.get(s, len(position)), s))
        sources = sorted(set(source_of.values()))
        if not sources:
            return {}
        row_of = {int(self._columns["row_id"][rows[c]]): c for c in source_of}
        queries = [residual_query(query, self._columns["text"][rows[s]]) for s in sources]
        similarity = self.dense.similarities(queries, principal, list(row_of))
        by_source = dict(zip(sources, similarity, strict=True))
        out = {}
        for chunk_id, source in source_of.items():
            row = int(self._columns["row_id"][rows[chunk_id]])
            if row in by_source[source]:
                hop = candidates[chunk_id]
                out[chunk_id] = (
                    by_source[source][row]
                    + retrieval.hop_bridge_weight * hop.weight
                    + retrieval.hop_answer_weight * hop.answers
                )
        return out

    def depth(self, mode: Mode, top_k: int) -> int:
        return candidate_depth(mode, top_k, self.config)

    def link(self, question: str | RedactedQuestion, principal: Principal) -> dict[str, float]:
        """The question's entities in the principal's graph -> seed weight; a string is
        linked as given, each form of a `RedactedQuestion` is linked and the best weight kept
        (a `public_knowledge` form names what a `personal` one pseudonymises)."""
        self.warm_up(graph=True)
        if isinstance(question, str):
            return self._graph.link(question, principal)
        links: dict[str, float] = {}
        for text, _ in question.groups():
            for node, weight in self._graph.link(text, principal).items():
                links[node] = max(weight, links.get(node, weight))
        return links

    def graph_ranking(
        self,
        links: dict[str, float],
        principal: Principal,
        dense_hits: Sequence[Passage],
        depth: int,
    ) -> Ranking:
        """PPR from the linked entities and, HippoRAG 2-style, the best dense passages. PPR
        needs non-negative weights, and cosines can be negative."""
        self.warm_up(graph=True)
        seeds = {p.chunk_id: max(p.score, 1e-6) for p in dense_hits[: self.config.retrieval.seed_k]}
        return list(self._graph.rank_seeds(links, principal, dense_seeds=seeds, top_k=depth))

    def fuse(
        self,
        dense_ranking: Ranking,
        graph_ranking: Ranking,
        top_k: int,
        lexical_ranking: Ranking | None = None,
    ) -> Ranking:
        """RRF of dense, graph and (when the bundle has one) BM25 rankings with the weights
        `retrieval.fusion_weights`; or, with `fusion: weighted`, min-max normalised dense and
        graph scores mixed by `dense_weight`."""
        retrieval = self.config.retrieval
        if retrieval.fusion == "rrf":
            lists = [dense_ranking, graph_ranking]
            weights = [retrieval.fusion_weights["dense"], retrieval.fusion_weights["graph"]]
            if lexical_ranking and retrieval.fusion_weights["bm25"] > 0:
                lists.append(lexical_ranking)
                weights.append(retrieval.fusion_weights["bm25"])
            fused = rrf_fuse(
                [[c for c, _ in ranking] for ranking in lists], retrieval.rrf_k, weights
            )
        else:
            fused = weighted_fuse(dense_ranking, graph_ranking, retrieval.dense_weight)
        return fused[:top_k]

    def evidence(
        self,
        ranking: Ranking,
        question: str | RedactedQuestion,
        principal: Principal,
        mode: Mode,
        with_facts: bool = True,
    ) -> Evidence:
        """Passages (ACL re-checked, fail closed) and their facts for a ranking.

        Every path to the reader comes through here (`retrieve`, the serve graph's
        Ranker, the in-process evaluator), so this is where the input-safety classifier
        keeps chunks with planted instructions out of the prompt: a flagged passage is
        dropped and counted in `flagged_chunks`, and so is a fact whose only support is a
        flagged chunk (the injection must not come back as a KG fact)."""
        self.warm_up(graph=mode not in ("dense", "bm25"))
        passages = tuple(self._passage(chunk_id, score, principal) for chunk_id, score in ranking)
        kept = tuple(p for p in passages if not self._is_flagged(p.chunk_id))
        facts: tuple[Fact, ...] = ()
        needs_graph = mode not in ("dense", "bm25") or (
            with_facts and self.config.retrieval.use_graph
        )
        if needs_graph and kept:
            text = question.text if isinstance(question, RedactedQuestion) else question
            facts = self._safe_facts(self._facts(text, principal, [p.chunk_id for p in kept]))
        return Evidence(passages=kept, facts=facts, flagged_chunks=len(passages) - len(kept))

    def _is_flagged(self, chunk_id: str) -> bool:
        """The input-safety verdict on a chunk's title and text, once per chunk."""
        safety_cfg = self.config.governance.input_safety
        if not (safety_cfg.enabled and safety_cfg.check_chunks):
            return False
        flagged = self._chunk_flagged.get(chunk_id)
        if flagged is None:
            from rayrag.governance.safety.input_safety import input_safety

            i = (self._chunk_rows or {})[chunk_id]
            title, text = self._columns["title"][i], self._columns["text"][i]
            flagged = input_safety(safety_cfg).check(f"{title}\n{text}" if title else text).flagged
            self._chunk_flagged[chunk_id] = flagged
        return flagged

    def _safe_facts(self, facts: tuple[Fact, ...]) -> tuple[Fact, ...]:
        """Facts with flagged chunks taken out of their provenance;
        a fact left without any is dropped."""
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

    def _passage(self, chunk_id: str, score: float, principal: Principal) -> Passage:
        assert self._chunk_rows is not None
        i = self._chunk_rows.get(chunk_id)
        if i is None:
            # The graph and the chunk table come from the same bundle; a miss means a
            # corrupted or mixed bundle, and an unknown chunk cannot be ACL-checked.
            raise AccessDenied(
                f"retrieved chunk {chunk_id!r} is not in the bundle; refusing to return it"
            )
        if not principal.groups & self._columns["acl"][i]:
            # Both sides trim by ACL already; this is the last line of defence (fail closed).
            raise AccessDenied(
                f"retrieval produced chunk {chunk_id!r} that principal "
                f"{principal.name!r} may not read; refusing to return it"
            )
        cols = self._columns
        return Passage(
            chunk_id=chunk_id,
            doc_id=cols["doc_id"][i],
            text=cols["text"][i],
            score=float(score),
            title=cols["title"][i],
            row_id=int(cols["row_id"][i]),
            **place_of(cols["metadata"][i] if "metadata" in cols else None),
        )

    def _facts(self, question: str, principal: Principal, chunk_ids: list[str]) -> tuple[Fact, ...]:
        """The question's relation path through the passages first (`GraphRetriever.path`:
        (C acquire Avenra Logistics), (C make P)), then its other fact paths
        (`GraphRetriever.facts`), no fact twice, at most 10; a fact citing a chunk the
        principal may not read raises `AccessDenied` (fail closed)."""
        if not self.config.retrieval.use_graph:
            return ()
        try:
            self.warm_up(graph=True)
        except ConfigError:
            return ()  # facts are enrichment: a dense-only build still answers
        path = self._graph.path(
            question, principal, chunk_ids, self.config.retrieval.hop_relation_threshold
        )
        seen = {(f.subject, f.relation, f.object) for f in path}
        facts = [
            *path,
            *(
                f
                for f in self._graph.facts(question, principal, chunk_ids, max_facts=MAX_FACTS)
                if (f.subject, f.relation, f.object) not in seen
            ),
        ][:MAX_FACTS]
        rows = self._chunk_rows or {}
        readable = []
        for fact in facts:
            if not fact.chunk_ids:
                continue  # a fact without provenance can't be ACL-checked or cited
            for chunk_id in fact.chunk_ids:
                i = rows.get(chunk_id)
                if i is None or not principal.groups & self._columns["acl"][i]:
                    raise AccessDenied(
                        f"a graph fact cites chunk {chunk_id!r} that principal "
                        f"{principal.name!r} may not read; refusing to return it"
                    )
            readable.append(fact)
        return tuple(readable)
