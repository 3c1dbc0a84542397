"""HybridRetriever: fusion math on hand examples, modes, provenance, ACL fail-closed."""

from __future__ import annotations

import pytest

from rayrag.config import RAGConfig
from rayrag.errors import AccessDenied, ConfigError
from rayrag.retrieval.hybrid import HybridRetriever, min_max, rrf_fuse, weighted_fuse
from rayrag.types import Fact, Passage, Principal

PUBLIC = Principal("anon", frozenset({"public"}))
ADMIN = Principal("admin", frozenset({"public", "hr"}))

# ---------------------------------------------------------------- fusion math


def test_rrf_hand_example():
    # k = 60. a: 1/61 + 1/63; b: 1/62 + 1/61; c: 1/63; d: 1/62.
    fused = dict(rrf_fuse([["a", "b", "c"], ["b", "d", "a"]], rrf_k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 63)
    assert fused["d"] == pytest.approx(1 / 62)
    assert [c for c, _ in rrf_fuse([["a", "b", "c"], ["b", "d", "a"]], rrf_k=60)] == ["b", "a", "d", "c"]


def test_rrf_small_k_rewards_agreement_and_breaks_ties_by_first_seen():
    # k = 1: x at ranks (1, 3) -> 1/2 + 1/4 = .75; y at (2, 1) -> 1/3 + 1/2 = .833.
    assert rrf_fuse([["x", "y"], ["y", "z", "x"]], rrf_k=1)[0] == ("y", pytest.approx(5 / 6))
    # Equal scores keep the order in which items were first seen.
    assert [c for c, _ in rrf_fuse([["p"], ["q"]], rrf_k=10)] == ["p", "q"]
    with pytest.raises(ConfigError, match="rrf_k"):
        rrf_fuse([["a"]], rrf_k=0)


def test_min_max_and_weighted_hand_example():
    assert min_max([("a", 0.9), ("b", 0.5), ("c", 0.1)]) == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})
    assert min_max([("a", 0.3), ("b", 0.3)]) == {"a": 1.0, "b": 1.0}
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]   # norm: a 1, b .5, c 0
    graph = [("c", 0.6), ("d", 0.2), ("b", 0.0)]   # norm: c 1, d 1/3, b 0
    fused = dict(weighted_fuse(dense, graph, dense_weight=0.25))
    assert fused["a"] == pytest.approx(0.25 * 1.0)
    assert fused["b"] == pytest.approx(0.25 * 0.5)
    assert fused["c"] == pytest.approx(0.75 * 1.0)
    assert fused["d"] == pytest.approx(0.75 / 3)
    assert [c for c, _ in weighted_fuse(dense, graph, 0.25)] == ["c", "a", "d", "b"]
    assert [c for c, _ in weighted_fuse(dense, graph, 1.0)][:2] == ["a", "b"]
    with pytest.raises(ConfigError, match="dense_weight"):
        weighted_fuse(dense, graph, 1.5)


# ---------------------------------------------------------------- retriever with fakes

CHUNKS = {  # chunk_id: (doc_id, acl)
    "c1": ("d1", {"public"}), "c2": ("d1", {"public"}), "c3": ("d2", {"public"}),
    "c4": ("d3", {"public"}), "c5": ("d4", {"hr"}),
}


class FakeDense:
    def __init__(self, ranking: list[tuple[str, float]]) -> None:
        self.ranking = ranking

    def retrieve(self, question: str, principal: Principal, top_k: int) -> list[Passage]:
        hits = [(c, s) for c, s in self.ranking if principal.groups & CHUNKS[c][1]]
        return [Passage(c, CHUNKS[c][0], f"text {c}", s) for c, s in hits[:top_k]]


class FakeGraph:
    def __init__(self, ranking: list[tuple[str, float]], facts: list[Fact] | None = None) -> None:
        self.ranking, self._facts, self.seen_seeds = ranking, facts or [], None

    def link(self, question, principal):
        return {}

    def rank_seeds(self, seeds, principal, dense_seeds=None, top_k=10):
        self.seen_seeds = dense_seeds
        return self.ranking[:top_k]

    def facts(self, question, principal, chunk_ids, max_facts=10):
        return self._facts[:max_facts]


def make(dense, graph, **retrieval) -> HybridRetriever:
    cfg = RAGConfig().model_copy(update={"retrieval": RAGConfig().retrieval.model_copy(update=retrieval)})
    r = HybridRetriever("unused-bundle", cfg)
    r.dense = FakeDense(dense)
    r._graph = graph
    ids = list(CHUNKS)
    r._chunk_rows = {c: i for i, c in enumerate(ids)}
    r._columns = {"chunk_id": ids, "doc_id": [CHUNKS[c][0] for c in ids], "title": [f"T-{c}" for c in ids],
                  "text": [f"text {c}" for c in ids], "acl": [frozenset(CHUNKS[c][1]) for c in ids],
                  "row_id": list(range(len(ids)))}
    return r


DENSE = [("c1", 0.9), ("c2", 0.8), ("c3", 0.5), ("c4", 0.1)]
GRAPH = [("c4", 0.4), ("c3", 0.3), ("c1", 0.1)]


def test_modes_return_their_rankings_with_provenance():
    r = make(DENSE, FakeGraph(GRAPH), seed_k=2)
    dense = r.retrieve("q", PUBLIC, mode="dense", top_k=3, with_facts=False)
    assert [p.chunk_id for p in dense.passages] == ["c1", "c2", "c3"]
    graph = r.retrieve("q", PUBLIC, mode="graph", top_k=3, with_facts=False)
    assert [p.chunk_id for p in graph.passages] == ["c4", "c3", "c1"]
    assert r._graph.seen_seeds == {"c1": 0.9, "c2": 0.8}  # top seed_k dense hits seed the walk
    first = graph.passages[0]
    assert (first.doc_id, first.title, first.row_id, first.score) == ("d3", "T-c4", 3, 0.4)


def test_hybrid_rrf_equals_hand_fusion():
    r = make(DENSE, FakeGraph(GRAPH), fusion="rrf", rrf_k=60)
    got = r.retrieve("q", PUBLIC, mode="hybrid", top_k=4, with_facts=False)
    # c1: 1/61+1/63, c3: 1/63+1/62, c4: 1/64+1/61, c2: 1/62
    expected = sorted({"c1": 1 / 61 + 1 / 63, "c3": 1 / 63 + 1 / 62, "c4": 1 / 64 + 1 / 61,
                       "c2": 1 / 62}.items(), key=lambda kv: -kv[1])
    assert [(p.chunk_id, pytest.approx(p.score)) for p in got.passages] == expected


def test_hybrid_weighted_uses_dense_weight():
    r = make(DENSE, FakeGraph(GRAPH), fusion="weighted", dense_weight=0.0)
    assert [p.chunk_id for p in r.retrieve("q", PUBLIC, mode="hybrid", top_k=3, with_facts=False).passages] \
        == ["c4", "c3", "c1"]


def test_restricted_chunk_from_graph_fails_closed():
    r = make(DENSE, FakeGraph([("c5", 0.9), ("c1", 0.1)]))
    with pytest.raises(AccessDenied, match="may not read"):
        r.retrieve("q", PUBLIC, mode="hybrid", top_k=3)
    # The principal who may read it gets it.
    assert "c5" in [p.chunk_id for p in r.retrieve("q", ADMIN, mode="graph", top_k=3).passages]


def test_unknown_chunk_fails_closed():
    with pytest.raises(AccessDenied, match="not in the bundle"):
        make(DENSE, FakeGraph([("ghost", 1.0)])).retrieve("q", PUBLIC, mode="graph")


def test_facts_keep_provenance_and_fail_closed():
    good = Fact("Acme", "acquire", "Beta", 0.9, chunk_ids=("c1",), doc_ids=("d1",))
    bare = Fact("Acme", "co_occurs", "Gamma", 0.5)
    r = make(DENSE, FakeGraph(GRAPH, [good, bare]))
    assert r.retrieve("q", PUBLIC, mode="hybrid").facts == (good,)
    hidden = Fact("Acme", "employs", "PERSON_1", 0.9, chunk_ids=("c5",), doc_ids=("d4",))
    with pytest.raises(AccessDenied, match="fact"):
        make(DENSE, FakeGraph(GRAPH, [hidden])).retrieve("q", PUBLIC, mode="hybrid")


def test_bad_mode_and_top_k_are_config_errors():
    r = make(DENSE, FakeGraph(GRAPH))
    with pytest.raises(ConfigError, match="mode"):
        r.retrieve("q", PUBLIC, mode="sparse")
    with pytest.raises(ConfigError, match="top_k"):
        r.retrieve("q", PUBLIC, mode="dense", top_k=0)


class ExpandingDense(FakeDense):
    """Dense search that only finds the second-hop chunk when the bridge entity is named."""

    def retrieve(self, question: str, principal: Principal, top_k: int) -> list[Passage]:
        if "Cresthill Power" in question:
            return [Passage("c3", "d2", "text c3", 0.95), Passage("c1", "d1", "text c1", 0.9)]
        return super().retrieve(question, principal, top_k)


def test_hybrid_expands_the_dense_query_with_bridge_entities():
    facts = [Fact("Cresthill Power", "acquire", "Avenra Logistics", 0.9, ("c1",), ("d1",)),
             Fact("Avenra Logistics", "co_occurs", "Santiago", 0.3, ("c1",), ("d1",)),
             Fact("PERSON_0cb2f593", "lead", "Avenra Logistics", 0.8, ("c2",), ("d1",))]
    r = make([("c1", 0.9), ("c2", 0.8), ("c4", 0.1)], FakeGraph([("c4", 0.4)], facts), expand_k=2)
    r.dense = ExpandingDense(r.dense.ranking)
    question = "Which product is made by the company that acquired Avenra Logistics?"
    # co_occurs is too weak a link and a pseudonym never goes back into a query
    assert r.bridge_entities(question, PUBLIC, ["c1", "c2"]) == ["Cresthill Power"]
    hybrid = [p.chunk_id for p in r.retrieve(question, PUBLIC, mode="hybrid", top_k=3).passages]
    assert hybrid[0] in {"c3", "c4"} and "c3" in hybrid  # found only through the bridge
    assert "c3" not in [p.chunk_id for p in r.retrieve(question, PUBLIC, mode="dense", top_k=3).passages]
