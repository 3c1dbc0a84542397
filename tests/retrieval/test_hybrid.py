"""HybridRetriever: fusion math on hand examples, modes, provenance, ACL fail-closed, the
graph-guided hops (with fakes, and with the real GraphRetriever for the ACL case) and the
path-first facts."""

from __future__ import annotations

import pytest

from rayrag.config import KGConfig, RAGConfig
from rayrag.errors import AccessDenied, ConfigError
from rayrag.retrieval.graph_facts import HopCandidate
from rayrag.retrieval.graph_query import GraphRetriever
from rayrag.retrieval.hybrid import (
    HybridRetriever,
    min_max,
    residual_query,
    rrf_fuse,
    weighted_fuse,
)
from rayrag.types import Fact, Passage, Principal, RedactedQuestion

PUBLIC = Principal("anon", frozenset({"public"}))
ADMIN = Principal("admin", frozenset({"public", "hr"}))
HR = Principal("hr-officer", frozenset({"public", "hr"}))

# ---------------------------------------------------------------- fusion math


def test_rrf_hand_example():
    # k = 60. a: 1/61 + 1/63; b: 1/62 + 1/61; c: 1/63; d: 1/62.
    fused = dict(rrf_fuse([["a", "b", "c"], ["b", "d", "a"]], rrf_k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 63)
    assert fused["d"] == pytest.approx(1 / 62)
    assert [c for c, _ in rrf_fuse([["a", "b", "c"], ["b", "d", "a"]], rrf_k=60)] == [
        "b",
        "a",
        "d",
        "c",
    ]


def test_rrf_small_k_rewards_agreement_and_breaks_ties_by_first_seen():
    # k = 1: x at ranks (1, 3) -> 1/2 + 1/4 = .75; y at (2, 1) -> 1/3 + 1/2 = .833.
    assert rrf_fuse([["x", "y"], ["y", "z", "x"]], rrf_k=1)[0] == ("y", pytest.approx(5 / 6))
    # Equal scores keep the order in which items were first seen.
    assert [c for c, _ in rrf_fuse([["p"], ["q"]], rrf_k=10)] == ["p", "q"]
    with pytest.raises(ConfigError, match="rrf_k"):
        rrf_fuse([["a"]], rrf_k=0)


def test_min_max_and_weighted_hand_example():
    assert min_max([("a", 0.9), ("b", 0.5), ("c", 0.1)]) == pytest.approx(
        {"a": 1.0, "b": 0.5, "c": 0.0}
    )
    assert min_max([("a", 0.3), ("b", 0.3)]) == {"a": 1.0, "b": 1.0}
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]  # norm: a 1, b .5, c 0
    graph = [("c", 0.6), ("d", 0.2), ("b", 0.0)]  # norm: c 1, d 1/3, b 0
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
    "c1": ("d1", {"public"}),
    "c2": ("d1", {"public"}),
    "c3": ("d2", {"public"}),
    "c4": ("d3", {"public"}),
    "c5": ("d4", {"hr"}),
}


class FakeDense:
    """Dense search over a fixed ranking (ACL applied); `similarities` answers from `similar`
    (chunk_id -> cosine, the same for every query) and records the queries it was asked."""

    def __init__(
        self,
        ranking: list[tuple[str, float]],
        chunks: dict | None = None,
        similar: dict[str, float] | None = None,
    ) -> None:
        self.ranking, self.chunks, self.similar = ranking, chunks or CHUNKS, similar or {}
        self.ids = list(self.chunks)
        self.queries: list[str] = []

    def redact(self, question: str) -> str:
        return question.replace("Ana Ruiz", "PERSON_0a0a0a0a")

    def query(self, question, redact: bool = True) -> RedactedQuestion:
        if isinstance(question, RedactedQuestion):
            return question
        return RedactedQuestion(text=self.redact(question) if redact else question)

    def retrieve(
        self, question: str, principal: Principal, top_k: int, redact: bool = True
    ) -> list[Passage]:
        hits = [(c, s) for c, s in self.ranking if principal.groups & self.chunks[c][1]]
        return [Passage(c, self.chunks[c][0], f"text {c}", s) for c, s in hits[:top_k]]

    def similarities(self, queries, principal, row_ids):
        self.queries.extend(queries)
        readable = {
            r: self.ids[r] for r in row_ids if principal.groups & self.chunks[self.ids[r]][1]
        }
        return [{r: self.similar.get(c, 0.0) for r, c in readable.items()} for _ in queries]


class FakeGraph:
    def __init__(
        self,
        ranking: list[tuple[str, float]],
        facts: list[Fact] | None = None,
        candidates: dict[str, HopCandidate] | None = None,
        held: list[str] | None = None,
        path: list[Fact] | None = None,
    ) -> None:
        self.ranking, self._facts, self.seen_seeds = ranking, facts or [], None
        self.candidates, self.held, self._path = candidates or {}, held or [], path or []
        self.linked: list[str] = []

    def link(self, question, principal):
        self.linked.append(question)
        return {}

    def rank_seeds(self, seeds, principal, dense_seeds=None, top_k=10):
        self.seen_seeds = dense_seeds
        return self.ranking[:top_k]

    def facts(self, question, principal, chunk_ids, max_facts=10):
        return self._facts[:max_facts]

    def answering(self, question, principal, chunk_ids, relation_threshold=0.5):
        return [c for c in self.held if c in chunk_ids]

    def hop_candidates(
        self, question, principal, chunk_ids, mention_weight=0.5, relation_threshold=0.5
    ):
        return {c: h for c, h in self.candidates.items() if h.sources[0] in chunk_ids}

    def path(self, question, principal, chunk_ids, relation_threshold=0.5):
        return list(self._path)


def make(
    dense,
    graph,
    chunks: dict | None = None,
    texts: dict[str, str] | None = None,
    similar: dict[str, float] | None = None,
    **retrieval,
) -> HybridRetriever:
    # the hand sums below
    retrieval.setdefault("fusion_weights", {"dense": 1.0, "graph": 1.0, "bm25": 1.0})
    cfg = RAGConfig().model_copy(
        update={"retrieval": RAGConfig().retrieval.model_copy(update=retrieval)}
    )
    chunks = chunks or CHUNKS
    r = HybridRetriever("unused-bundle", cfg)
    r.dense = FakeDense(dense, chunks, similar)
    r._graph = graph
    r._lexical = False  # no BM25 index: fusion of the two fakes (BM25 in hybrid: test_lexical.py)
    ids = list(chunks)
    r._chunk_rows = {c: i for i, c in enumerate(ids)}
    r._columns = {
        "chunk_id": ids,
        "doc_id": [chunks[c][0] for c in ids],
        "title": [f"T-{c}" for c in ids],
        "text": [(texts or {}).get(c, f"text {c}") for c in ids],
        "acl": [frozenset(chunks[c][1]) for c in ids],
        "row_id": list(range(len(ids))),
    }
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
    expected = sorted(
        {"c1": 1 / 61 + 1 / 63, "c3": 1 / 63 + 1 / 62, "c4": 1 / 64 + 1 / 61, "c2": 1 / 62}.items(),
        key=lambda kv: -kv[1],
    )
    assert [(p.chunk_id, pytest.approx(p.score)) for p in got.passages] == expected


def test_hybrid_rrf_applies_the_fusion_weights():
    r = make(
        DENSE,
        FakeGraph(GRAPH),
        fusion="rrf",
        rrf_k=60,
        fusion_weights={"dense": 1.0, "graph": 2.0, "bm25": 2.0},
    )
    got = r.retrieve("q", PUBLIC, mode="hybrid", top_k=4, with_facts=False)
    # c4: 1/64 + 2/61, c1: 1/61 + 2/63, c3: 1/63 + 2/62, c2: 1/62 (no BM25 index: two lists);
    # unweighted, c1 leads (test_hybrid_rrf_equals_hand_fusion): the graph's first now wins.
    assert [(p.chunk_id, p.score) for p in got.passages] == [
        ("c4", pytest.approx(1 / 64 + 2 / 61)),
        ("c1", pytest.approx(1 / 61 + 2 / 63)),
        ("c3", pytest.approx(1 / 63 + 2 / 62)),
        ("c2", pytest.approx(1 / 62)),
    ]


def test_hybrid_weighted_uses_dense_weight():
    r = make(DENSE, FakeGraph(GRAPH), fusion="weighted", dense_weight=0.0)
    assert [
        p.chunk_id
        for p in r.retrieve("q", PUBLIC, mode="hybrid", top_k=3, with_facts=False).passages
    ] == ["c4", "c3", "c1"]


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


# ---------------------------------------------------------------- graph-guided hops (fakes)


def hop(
    chunk_id: str, weight: float, source: str, answers: bool, asked: bool = True
) -> HopCandidate:
    return HopCandidate(chunk_id, "entity:bridge", weight, (source,), answers, asked)


def test_residual_query_drops_what_the_first_hop_says():
    question = "Which product is made by the company that acquired Avenra Logistics?"
    assert (
        residual_query(question, "Cresthill Power acquired Avenra Logistics in 2023.")
        == "Which product is made by the company that"
    )
    assert residual_query("Who acquired Avenra?", "Who acquired Avenra?") == "Who acquired Avenra?"


def test_second_hop_moves_the_best_candidate_to_hop_rank():
    # Weighted fusion with dense_weight 1 is the dense order: c1 c2 c3 c4 (scores 1, .875, .5, 0).
    # Candidates: c4 scores 0.3 + 1.0 x 0.2 + 0.4 (answers) = 0.9, c3 0.5 + 0.1 = 0.6.
    candidates = {"c4": hop("c4", 0.2, "c1", True), "c3": hop("c3", 0.1, "c1", False)}
    texts = {"c1": "Cresthill Power acquired Avenra Logistics in 2023."}
    dense_order = {"fusion": "weighted", "dense_weight": 1.0}
    r = make(
        DENSE,
        FakeGraph(GRAPH, candidates=candidates),
        texts=texts,
        similar={"c4": 0.3, "c3": 0.5},
        **dense_order,
    )
    question = "Which product is made by the company that acquired Avenra Logistics?"
    got = r.retrieve(question, PUBLIC, mode="hybrid", top_k=4, with_facts=False).passages
    assert [p.chunk_id for p in got] == ["c1", "c4", "c2", "c3"]
    # takes its slot's score
    assert [p.score for p in got] == pytest.approx([1.0, 0.875, 0.875, 0.5])
    # Scored with the residual question against the bridge's first-hop passage.
    assert r.dense.queries == ["Which product is made by the company that"]
    # The answering bonus decides: without it c3 (0.6) beats c4 (0.5).
    plain = make(
        DENSE,
        FakeGraph(GRAPH, candidates=candidates),
        texts=texts,
        similar={"c4": 0.3, "c3": 0.5},
        hop_answer_weight=0.0,
        **dense_order,
    )
    assert [p.chunk_id for p in plain.retrieve(question, PUBLIC, mode="hybrid", top_k=4).passages][
        1
    ] == "c3"
    # hop_rank 0: fusion alone; hop_rank 3: the hop lands third.
    off = make(
        DENSE,
        FakeGraph(GRAPH, candidates=candidates),
        similar={"c4": 0.3},
        hop_rank=0,
        **dense_order,
    )
    assert [
        p.chunk_id for p in off.retrieve(question, PUBLIC, mode="hybrid", top_k=4).passages
    ] == ["c1", "c2", "c3", "c4"]
    third = make(
        DENSE,
        FakeGraph(GRAPH, candidates=candidates),
        similar={"c4": 0.3, "c3": 0.5},
        hop_rank=3,
        **dense_order,
    )
    assert [
        p.chunk_id for p in third.retrieve(question, PUBLIC, mode="hybrid", top_k=4).passages
    ] == ["c1", "c2", "c4", "c3"]


def test_the_second_hop_needs_an_asked_bridge_or_an_asked_fact():
    # c4 is the best candidate by score but reached through a relation the question does not
    # ask about and cites no asked fact: not a second hop (one-hop questions keep their top 3).
    stray = {"c4": hop("c4", 1.0, "c1", False, asked=False), "c3": hop("c3", 0.0, "c1", False)}
    r = make(
        DENSE,
        FakeGraph(GRAPH, candidates=stray),
        similar={"c4": 0.9, "c3": 0.1},
        fusion="weighted",
        dense_weight=1.0,
    )
    assert [p.chunk_id for p in r.retrieve("q", PUBLIC, mode="hybrid", top_k=4).passages] == [
        "c1",
        "c3",
        "c2",
        "c4",
    ]
    answering = {"c4": hop("c4", 1.0, "c1", True, asked=False)}
    r = make(
        DENSE,
        FakeGraph(GRAPH, candidates=answering),
        similar={"c4": 0.9},
        fusion="weighted",
        dense_weight=1.0,
    )
    assert [p.chunk_id for p in r.retrieve("q", PUBLIC, mode="hybrid", top_k=4).passages][1] == "c4"


def test_a_candidate_already_ranked_high_enough_stays():
    candidates = {"c2": hop("c2", 1.0, "c1", True)}
    r = make(
        DENSE,
        FakeGraph(GRAPH, candidates=candidates),
        similar={"c2": 0.9},
        fusion="weighted",
        dense_weight=1.0,
    )
    assert [p.chunk_id for p in r.retrieve("q", PUBLIC, mode="hybrid", top_k=4).passages] == [
        "c1",
        "c2",
        "c3",
        "c4",
    ]


def test_first_hop_citing_an_asked_fact_takes_rank_one():
    r = make(DENSE, FakeGraph(GRAPH, held=["c3"]), fusion="weighted", dense_weight=1.0)
    got = r.retrieve("q", PUBLIC, mode="hybrid", top_k=4, with_facts=False).passages
    assert [p.chunk_id for p in got] == ["c3", "c1", "c2", "c4"]
    assert [p.score for p in got] == pytest.approx([1.0, 1.0, 0.875, 0.0])
    # Only the top hop_from passages are looked at.
    far = make(
        DENSE, FakeGraph(GRAPH, held=["c3"]), fusion="weighted", dense_weight=1.0, hop_from=2
    )
    assert [p.chunk_id for p in far.retrieve("q", PUBLIC, mode="hybrid", top_k=4).passages][
        0
    ] == "c1"


def test_second_hop_respects_the_acl():
    # A (misbehaving) graph offers c5, which only hr reads: the dense side scores only rows the
    # principal may read, so the public never gets it, and no AccessDenied is raised.
    candidates = {"c5": hop("c5", 1.0, "c1", True)}
    public = make(
        DENSE,
        FakeGraph(GRAPH, candidates=candidates),
        similar={"c5": 0.9},
        fusion="weighted",
        dense_weight=1.0,
    )
    assert [p.chunk_id for p in public.retrieve("q", PUBLIC, mode="hybrid", top_k=4).passages] == [
        "c1",
        "c2",
        "c3",
        "c4",
    ]
    admin = make(
        DENSE,
        FakeGraph(GRAPH, candidates=candidates),
        similar={"c5": 0.9},
        fusion="weighted",
        dense_weight=1.0,
    )
    assert [p.chunk_id for p in admin.retrieve("q", ADMIN, mode="hybrid", top_k=4).passages] == [
        "c1",
        "c5",
        "c2",
        "c3",
    ]


def test_facts_start_with_the_path():
    p1 = Fact("Cresthill Power", "acquire", "Avenra Logistics", 0.9, ("c1",), ("d1",))
    p2 = Fact("Cresthill Power", "make", "Granite Hub", 0.9, ("c3",), ("d2",))
    other = Fact("Avenra Logistics", "co_occurs", "Lima", 0.3, ("c2",), ("d1",))
    r = make(DENSE, FakeGraph(GRAPH, facts=[other, p1], path=[p1, p2]))
    assert r.retrieve(
        "Which product is made by the company that acquired Avenra Logistics?",
        PUBLIC,
        mode="hybrid",
    ).facts == (p1, p2, other)


def test_the_residual_question_is_redacted():
    # The residual query is embedded as is, so it is cut from the redacted question; the
    # serve graph's question is redacted already.
    candidates = {"c4": hop("c4", 0.2, "c1", True)}
    texts = {"c1": "PERSON_0a0a0a0a founded Velora Systems."}
    r = make(
        DENSE,
        FakeGraph(GRAPH, candidates=candidates),
        texts=texts,
        similar={"c4": 0.3},
        fusion="weighted",
        dense_weight=1.0,
    )
    r.retrieve("Which product does the company Ana Ruiz founded make?", PUBLIC, mode="hybrid")
    assert r.dense.queries == ["Which product does the company make"]
    served = r.hybrid_ranking(
        "Which product does Ana Ruiz sell?", PUBLIC, DENSE, GRAPH, 4, redacted=True
    )
    assert r.dense.queries[-1] == "Which product does Ana Ruiz sell" and served[1][0] == "c4"


# ---------------------------------------------------------------- graph-guided hops (real graph)


def test_no_second_hop_through_a_bridge_document_the_principal_may_not_read():
    """The real GraphRetriever on a tiny corpus: the press release joining Beta Works to its
    acquirer is hr-only. hr gets the acquirer's product sheet at rank 2 and the path as the
    first facts; the public, who reads the product sheet too, gets neither."""
    from tests.retrieval.test_graph_query import HOP_CORPUS, HOP_EMBED, HOP_QUESTION, build

    chunks = {f"{d}#0": (d, set(acl)) for d, (_, acl) in HOP_CORPUS.items()}
    texts = {f"{d}#0": text for d, (text, _) in HOP_CORPUS.items()}
    graph = GraphRetriever(build(HOP_CORPUS), KGConfig(), embed_fn=HOP_EMBED)
    dense = [
        ("press#0", 0.9),
        ("beta#0", 0.8),
        ("office#0", 0.5),
        ("other#0", 0.4),
        ("sheet#0", 0.3),
    ]
    similar = {"sheet#0": 0.2, "office#0": 0.3}
    hr = make(dense, graph, chunks, texts, similar, fusion="weighted", dense_weight=1.0)
    evidence = hr.retrieve(HOP_QUESTION, HR, mode="hybrid", top_k=4)
    assert [p.chunk_id for p in evidence.passages][:2] == ["press#0", "sheet#0"]
    assert [(f.subject, f.relation, f.object) for f in evidence.facts[:2]] == [
        ("Corvin Data", "acquire", "Beta Works"),
        ("Corvin Data", "make", "Lantern Box"),
    ]
    public = make(dense, graph, chunks, texts, similar, fusion="weighted", dense_weight=1.0)
    evidence = public.retrieve(HOP_QUESTION, PUBLIC, mode="hybrid", top_k=4)
    assert [p.chunk_id for p in evidence.passages] == ["beta#0", "office#0", "other#0", "sheet#0"]
    assert not any("Corvin Data" in (f.subject, f.object) for f in evidence.facts)


def test_a_passage_holding_an_identifier_the_question_names_takes_rank_one():
    # Dense puts another record first (ids embed alike) and fusion keeps it there.
    texts = {
        "c1": "Employee record EMP-11995. Hired in 2003.",
        "c3": "Employee record EMP-11906. Hired in 2005.",
        "c4": "EMP-11906-B is a different id.",
    }
    r = make(DENSE, FakeGraph(GRAPH), texts=texts, fusion="rrf", rrf_k=60, hop_rank=0)
    got = r.retrieve(
        "What position does employee EMP-11906 hold?",
        PUBLIC,
        mode="hybrid",
        top_k=4,
        with_facts=False,
    )
    assert [p.chunk_id for p in got.passages][:2] == ["c3", "c1"]
    assert got.passages[0].score == max(p.score for p in got.passages)  # scores stay non-increasing
    plain = r.retrieve(
        "Which employee was hired in 2005?", PUBLIC, mode="hybrid", top_k=4, with_facts=False
    )
    assert plain.passages[0].chunk_id == "c1"  # no identifier asked: fusion's order
    # An identified passage the principal may not read never enters (only fused passages move).
    texts["c5"] = "Employee record EMP-77777."
    hidden = make(DENSE + [("c5", 0.05)], FakeGraph(GRAPH), texts=texts, hop_rank=0)
    got = hidden.retrieve("Who is EMP-77777?", PUBLIC, mode="hybrid", top_k=4, with_facts=False)
    assert "c5" not in [p.chunk_id for p in got.passages]
