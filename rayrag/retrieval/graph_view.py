"""The principal's view of the knowledge graph and Personalized PageRank over it.

A view is everything one group set may see, precomputed once: its subgraph
(`KnowledgeGraph.subgraph_for`), the column-stochastic transition matrix of the undirected
walk (HippoRAG walks edges both ways, weight = summed confidence), passage and alias
indexes. `PrincipalViews` caches views per group set and runs the PPR solvers
(`retrieval/ppr.py`) on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import scipy.sparse as sp

from rayrag.errors import ConfigError
from rayrag.index.graph import (
    KnowledgeGraph,
    base_key,
    entity_node,
    passage_node,
)
from rayrag.retrieval.ppr import PPR_MAX_ITER, PPR_TOLERANCE, power_iteration, push
from rayrag.types import Principal

MAX_CACHED_QUESTIONS = 16  # one query links, ranks, hops and explains the same question
MAX_CACHED_VIEWS = 32  # distinct group sets are few (roles), but bound the memory anyway


@dataclass
class GraphView:
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
    relations: dict[tuple[str, str], list[tuple[str, str, str]]] | None = (
        None  # sorted pair -> edges
    )
    neighbours: dict[str, list[str]] = field(default_factory=dict)  # entity -> related entities
    functional: tuple[set[str], set[str], set[str]] | None = None  # (functional, inverse, all)


class PrincipalViews:
    """Views per group set, and PageRank on them (a `GraphRetriever` mixin)."""

    def _view(self, principal: Principal) -> GraphView:
        key = frozenset(principal.groups)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= MAX_CACHED_VIEWS:
                self._views.pop(next(iter(self._views)))
            view = self._views[key] = self._build_view(principal)
        return view

    def _build_view(self, principal: Principal) -> GraphView:
        full = self.graph.graph
        # Everything readable: the subgraph equals the graph, and copying 200k nodes is waste.
        everything = all(
            principal.may_read(d["acl"])
            for _, d in full.nodes(data=True)
            if d.get("kind") == "passage"
        )
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
        adjacency = sp.coo_array(
            (
                np.array(weights + weights, dtype=np.float64),
                (np.array(rows + cols, dtype=np.int32), np.array(cols + rows, dtype=np.int32)),
            ),
            shape=(n, n),
        ).tocsr()
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
        return GraphView(
            kg=kg,
            nodes=nodes,
            index=index,
            transition=transition,
            dangling=degree == 0,
            passages=np.array(passages, dtype=np.int64),
            chunk_of=chunk_of,
            mentions=mentions,
            aliases=aliases,
        )

    def _restart(
        self, view: GraphView, seeds: dict[str, float], dense_seeds: dict[str, float]
    ) -> np.ndarray | None:
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

    def _ppr(self, view: GraphView, restart: np.ndarray, method: str) -> np.ndarray:
        alpha = self.config.ppr_damping
        if method == "auto":
            method = "push" if len(view.nodes) >= self.config.ppr_push_min_nodes else "sparse"
        if method == "sparse":
            return power_iteration(view.transition, view.dangling, restart, alpha)
        if method == "push":
            if view.columns is None:  # push reads whole columns: where each node's walk goes
                view.columns = view.transition.tocsc()
            return push(view.columns, view.dangling, restart, alpha, self.config.ppr_push_epsilon)[
                0
            ]
        if method == "networkx":
            if view.walk is None:
                view.walk = _walk_graph(view.kg.graph)
            personalization = {view.nodes[i]: float(restart[i]) for i in np.flatnonzero(restart)}
            scores = nx.pagerank(
                view.walk,
                alpha=alpha,
                personalization=personalization,
                weight="weight",
                tol=PPR_TOLERANCE / max(len(view.nodes), 1),
                max_iter=PPR_MAX_ITER,
            )
            return np.array([scores[node] for node in view.nodes])
        raise ConfigError(
            "ppr_method must be 'auto', 'sparse', 'push' "
            f"or 'networkx', got {method!r} (kg.ppr_method)"
        )


def _walk_graph(g: nx.MultiDiGraph) -> nx.Graph:
    walk = nx.Graph()
    walk.add_nodes_from(g.nodes)
    for u, v, data in g.edges(data=True):
        if u != v:
            prior = walk.get_edge_data(u, v, {}).get("weight", 0.0)
            walk.add_edge(u, v, weight=prior + float(data.get("confidence", 1.0)))
    return walk


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
