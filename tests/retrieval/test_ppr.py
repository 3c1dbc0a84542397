"""Local push PPR: matches power iteration within its stated bound, and its cost is local.

Graphs are real `KnowledgeGraph`s from the kg bench's HippoRAG-shaped generator, queried
through `GraphRetriever`; the reference is power iteration run to 1e-15.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from pydantic import ValidationError

from rayrag.bench.kg import _queries, synthetic_graph
from rayrag.config import KGConfig
from rayrag.errors import ConfigError
from rayrag.retrieval.graph_query import GraphRetriever
from rayrag.retrieval.ppr import power_iteration, push
from rayrag.types import Principal

READER = Principal("reader")
ALPHA = KGConfig().ppr_damping


def exact(view, restart: np.ndarray) -> np.ndarray:
    return power_iteration(view.transition, view.dangling, restart, ALPHA, tol=1e-15, max_iter=2000)


@pytest.fixture(scope="module")
def retriever() -> GraphRetriever:
    kg = synthetic_graph(2_000, seed=3)
    # An edgeless entity: a seed on it is all dangling mass.
    kg.graph.add_node(
        "entity:lonely", kind="entity", name="Lonely", alias_keys=["lonely"], chunk_ids=[], acl=[]
    )
    return GraphRetriever(kg, KGConfig())


@pytest.fixture(scope="module")
def view(retriever):
    return retriever._view(READER)


@pytest.mark.parametrize("epsilon", [1e-4, 1e-6])
def test_push_is_within_its_bound_of_the_exact_answer(retriever, view, epsilon):
    columns = view.transition.tocsc()
    assert view.dangling.sum() > 1  # the generator leaves never-mentioned entities edgeless
    for seeds in _queries(retriever.graph, 8, seed=11):
        restart = retriever._restart(view, seeds, {})
        truth = exact(view, restart)
        scores, stats = push(columns, view.dangling, restart, ALPHA, epsilon)
        error = truth - scores
        assert error.min() >= -1e-12  # push is a lower bound
        assert error.max() <= stats.bound + 1e-12
        assert error.sum() == pytest.approx(stats.bound, abs=1e-9)  # the bound is the L1 gap
        assert stats.edges_touched <= 1 / ((1 - ALPHA) * epsilon) + stats.pushes * len(seeds)
        assert stats.bound < 50 * epsilon**0.5  # shrinks with epsilon (measured ~1e-2 at 1e-6)


def test_push_ranks_the_same_top_ten_passages(retriever):
    for seeds in _queries(retriever.graph, 10, seed=12):
        sparse = retriever.rank_seeds(seeds, READER, top_k=10, method="sparse")
        local = retriever.rank_seeds(seeds, READER, top_k=10, method="push")
        assert [c for c, _ in local] == [c for c, _ in sparse]
        assert [s for _, s in local] == pytest.approx([s for _, s in sparse], abs=1e-3)


def test_seed_on_an_isolated_node_keeps_all_its_mass(retriever, view):
    assert view.dangling[view.index["entity:lonely"]]
    scores = retriever.ppr({"entity:lonely": 1.0}, READER, method="push")
    assert scores["entity:lonely"] == pytest.approx(1.0)
    assert retriever.rank_seeds({"entity:lonely": 1.0}, READER, method="push") == []
    # Mixed with a connected seed, the dangling half restarts at both seeds, as power iteration.
    some = next(iter(_queries(retriever.graph, 1, seed=13)[0]))
    mixed = {"entity:lonely": 1.0, some: 1.0}
    local = retriever.ppr(mixed, READER, method="push")
    sparse = retriever.ppr(mixed, READER, method="sparse")
    assert local["entity:lonely"] == pytest.approx(sparse["entity:lonely"], abs=1e-4)
    assert max(abs(local[n] - sparse[n]) for n in sparse) < 1e-3


def test_cost_does_not_grow_with_a_far_larger_component(retriever, view):
    """Same seeds, graph grown 10x by a component they cannot reach: identical work."""
    far = GraphRetriever(synthetic_graph(20_000, seed=4), KGConfig())._view(READER)
    grown = sp.block_diag((view.transition, far.transition), format="csc")
    dangling = np.concatenate([view.dangling, far.dangling])
    small = view.transition.tocsc()
    for seeds in _queries(retriever.graph, 4, seed=14):
        restart = retriever._restart(view, seeds, {})
        padded = np.concatenate([restart, np.zeros(far.transition.shape[0])])
        alone, a = push(small, view.dangling, restart, ALPHA, 1e-6)
        within, b = push(grown, dangling, padded, ALPHA, 1e-6)
        assert (a.edges_touched, a.pushes, a.nodes_touched) == (
            b.edges_touched,
            b.pushes,
            b.nodes_touched,
        )
        assert b.edges_touched < far.transition.nnz  # one power-iteration step reads more
        assert np.array_equal(within[: len(alone)], alone) and not within[len(alone) :].any()


def test_epsilon_is_validated_with_the_flag_named(view):
    restart = np.zeros(view.transition.shape[0])
    restart[0] = 1.0
    for bad in (0.0, -1e-6, float("nan"), 1.0):
        with pytest.raises(ConfigError, match="kg.ppr_push_epsilon"):
            push(view.transition.tocsc(), view.dangling, restart, ALPHA, bad)
    with pytest.raises(ValidationError, match="ppr_push_epsilon"):
        KGConfig(ppr_push_epsilon=0)
    with pytest.raises(ConfigError, match="'push'"):
        GraphRetriever(synthetic_graph(50), KGConfig()).rank_seeds(
            {"entity:e0": 1.0}, READER, method="pull"
        )


def test_push_is_a_config_choice(retriever):
    configured = GraphRetriever(retriever.graph, KGConfig(ppr_method="push", ppr_push_epsilon=1e-7))
    seeds = _queries(retriever.graph, 1, seed=15)[0]
    assert [c for c, _ in configured.rank_seeds(seeds, READER)] == [
        c for c, _ in retriever.rank_seeds(seeds, READER, method="sparse")
    ]
