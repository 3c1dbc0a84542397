"""GraphRetriever: linking, HippoRAG PPR (sparse == networkx), fact paths, ACL canaries, claims.

A tiny redacted corpus goes through the real spaCy extractor and `KnowledgeGraph.build`;
embedding links use an embed_fn built from explicit vectors, so which names are neighbours
is an input of the test, not a property of a model.
"""

from __future__ import annotations

import numpy as np
import pytest

from rayrag.config import KGConfig
from rayrag.index.graph import KnowledgeGraph
from rayrag.index.kg_extract import TripleExtractor
from rayrag.retrieval.graph_query import GraphRetriever
from rayrag.types import Chunk, Principal
from tests.index.test_graph import embed_fn_from

PUBLIC = Principal("visitor")
HR = Principal("hr-officer", frozenset({"public", "hr"}))
FOUNDER = "PERSON_3f9a0c1e"

CORPUS = {
    "d1": (f"{FOUNDER} founded Brightwater Labs in 2015.", ("public",)),
    "d2": ("Velora Systems acquired Brightwater Labs in 2021.", ("public",)),
    "d3": ("Orbital Labs opened a research office in Lisbon.", ("public",)),
    "d4": ("Velora Systems hired engineers in Lisbon.", ("public",)),
    "d7": ("Orbital Labs acquired Cobalt Data in 2020.", ("public",)),
    # Restricted: Kestrel Bank exists only here; d6 repeats d2's fact for hr eyes only.
    "d5": (f"{FOUNDER} was dismissed by Kestrel Bank after an audit.", ("hr",)),
    "d6": ("Velora Systems acquired Brightwater Labs for a large sum.", ("hr",)),
}
QUESTION = f"Who acquired the company founded by {FOUNDER}?"


# "Brightwater Laboratories" (a question's wording) is close to the key "brightwater labs".

EMBED = embed_fn_from(
    {
        "brightwater labs": [1.0, 0.0],
        "Brightwater Laboratories": [0.96, 0.28],
        "Orbital Laboratories": [0.0, 0.0, 1.0],
        "orbital labs": [0.0, 0.6, 0.8],
    }
)


def build(docs: dict[str, tuple[str, tuple[str, ...]]]) -> KnowledgeGraph:
    chunks = [Chunk(f"{d}#0", d, text, 0, len(text), acl=acl) for d, (text, acl) in docs.items()]
    return KnowledgeGraph.build(
        TripleExtractor(KGConfig())(chunks),
        config=KGConfig(),
        extracted_at="2025-01-01T00:00:00+00:00",
    )


@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    return build(CORPUS)


@pytest.fixture(scope="module")
def retriever(kg) -> GraphRetriever:
    r = GraphRetriever(kg, KGConfig(), embed_fn=EMBED)
    r.warm_up()
    return r


def test_link_by_exact_alias_with_specificity(retriever):
    seeds = retriever.link("What did Velora Systems Inc. buy?", PUBLIC)
    # Velora is mentioned by d2 and d4 (d6 is hidden): seed weight 1 / 2.
    assert seeds == {"entity:velora systems": pytest.approx(0.5)}
    assert retriever.link(QUESTION, PUBLIC) == {"entity:person_3f9a0c1e": pytest.approx(1.0)}


def test_link_by_embedding_neighbour_above_threshold(retriever):
    seeds = retriever.link("Who bought Brightwater Laboratories?", PUBLIC)
    # cosine 0.96 >= 0.8; Brightwater Labs is mentioned by d1 and d2: weight 0.96 / 2.
    assert seeds == {"entity:brightwater labs": pytest.approx(0.96 / 2, rel=1e-4)}
    # "Orbital Laboratories" is at cosine 0.8: it links at the default bar, not at 0.9.
    assert retriever.link("Where is Orbital Laboratories based?", PUBLIC) == {
        "entity:orbital labs": pytest.approx(0.8 / 2, rel=1e-4)
    }
    strict = GraphRetriever(retriever.graph, KGConfig(link_threshold=0.9), embed_fn=EMBED)
    assert strict.link("Where is Orbital Laboratories based?", PUBLIC) == {}
    assert (
        GraphRetriever(retriever.graph, KGConfig()).link(
            "Who bought Brightwater Laboratories?", PUBLIC
        )
        == {}
    )


def test_ppr_ranks_the_bridge_passage(retriever):
    ranked = retriever.rank(QUESTION, PUBLIC, top_k=10)
    chunks = [c for c, _ in ranked]
    # The founder's passage first, then the 2-hop bridge (who acquired what it founded).
    assert chunks[:2] == ["d1#0", "d2#0"]
    assert "d5#0" not in chunks and "d6#0" not in chunks
    assert retriever.rank("What is the weather like?", PUBLIC) == []


def test_dense_seeds_add_passages_with_a_small_weight(retriever):
    alone = dict(retriever.rank(QUESTION, PUBLIC))
    mixed = dict(retriever.rank(QUESTION, PUBLIC, dense_seeds={"d3#0": 0.9, "d6#0": 0.99}))
    assert mixed["d3#0"] > alone.get("d3#0", 0.0)
    assert "d6#0" not in mixed  # a dense hit the principal may not read seeds nothing
    only_dense = retriever.rank("nothing links here", PUBLIC, dense_seeds={"d3#0": 0.5})
    assert only_dense[0][0] == "d3#0"


@pytest.mark.parametrize("principal", [PUBLIC, HR])
def test_sparse_power_iteration_equals_networkx(retriever, kg, principal):
    seeds = {"entity:person_3f9a0c1e": 1.0, "entity:lisbon": 0.5}
    sparse = retriever.ppr(seeds, principal, method="sparse")
    networkx = retriever.ppr(seeds, principal, method="networkx")
    reference = kg.personalized_pagerank(seeds, principal)
    assert sparse.keys() == networkx.keys() == reference.keys()
    for node in sparse:
        assert sparse[node] == pytest.approx(networkx[node], abs=1e-7)
        assert sparse[node] == pytest.approx(reference[node], abs=1e-5)
    assert sum(sparse.values()) == pytest.approx(1.0)


def test_acl_canary_hidden_document_never_reaches_a_public_principal(retriever, kg):
    assert retriever.link("Why did Kestrel Bank act?", PUBLIC) == {}
    assert "entity:kestrel bank" in retriever.link("Why did Kestrel Bank act?", HR)
    everywhere = {f"d{i}#0" for i in range(1, 8)}
    for question in (QUESTION, "Why did Kestrel Bank act?", "Velora Systems"):
        ranked = {
            c
            for c, _ in retriever.rank(
                question, PUBLIC, top_k=10, dense_seeds=dict.fromkeys(everywhere, 1.0)
            )
        }
        assert not ranked & {"d5#0", "d6#0"}
        for fact in retriever.facts(question, PUBLIC, sorted(everywhere)):
            assert "Kestrel Bank" not in (fact.subject, fact.object)
            assert set(fact.doc_ids) <= {"d1", "d2", "d3", "d4", "d7"}
    # Hidden nodes neither carry nor pass mass: the public scores are those of a graph
    # built from the public documents alone.
    public_only = GraphRetriever(
        build({d: v for d, v in CORPUS.items() if v[1] == ("public",)}), KGConfig()
    )
    seeds = {"entity:person_3f9a0c1e": 1.0}
    mixed, clean = retriever.ppr(seeds, PUBLIC), public_only.ppr(seeds, PUBLIC)
    assert mixed.keys() == clean.keys()
    assert all(mixed[n] == pytest.approx(clean[n], abs=1e-9) for n in clean)


def test_facts_follow_the_path_with_public_provenance_only(retriever):
    facts = retriever.facts(QUESTION, PUBLIC, ["d2#0"])
    triples = {(f.subject, f.relation, f.object) for f in facts}
    assert triples == {
        (FOUNDER, "found", "Brightwater Labs"),
        ("Velora Systems", "acquire", "Brightwater Labs"),
    }
    acquire = next(f for f in facts if f.relation == "acquire")
    # Supported by d2 (public) and d6 (hr): the public principal sees d2 only.
    assert acquire.chunk_ids == ("d2#0",) and acquire.doc_ids == ("d2",)
    hr_acquire = next(f for f in retriever.facts(QUESTION, HR, ["d2#0"]) if f.relation == "acquire")
    assert hr_acquire.chunk_ids == ("d2#0", "d6#0")
    # Nothing links: the passages' own relations.
    assert {
        (f.subject, f.relation) for f in retriever.facts("Tell me more.", PUBLIC, ["d3#0"])
    } == {("Orbital Labs", "open_office_in")}


def test_validate_supported_contradicted_unknown(retriever):
    claims = [
        ("Velora Systems", "acquired", "Brightwater Labs"),
        ("Orbital Labs", "acquire", "Brightwater Labs"),
        ("Velora Systems", "acquire", "Lisbon"),
        ("Kestrel Bank", "dismiss", FOUNDER),
        ("Velora Systems", "merge_with", "Orbital Labs"),
        ("Velora Systems", "hire_engineer_in", "Cobalt Data"),
    ]
    public = retriever.validate(claims, PUBLIC)
    assert [c.claim for c in public["supported"]] == [claims[0]]
    assert public["supported"][0].facts[0].chunk_ids == ("d2#0",)
    # acquire is seen twice (Velora -> Brightwater, Orbital -> Cobalt) and is functional
    # both ways: a different acquirer of Brightwater, or a different Velora target, contradicts.
    assert [c.claim for c in public["contradicted"]] == [claims[1], claims[2]]
    assert {(f.subject, f.object) for f in public["contradicted"][0].facts} == {
        ("Orbital Labs", "Cobalt Data"),
        ("Velora Systems", "Brightwater Labs"),
    }
    # Kestrel is hidden; merge_with is not in the graph; hire_engineer_in is seen only once,
    # which is no evidence that Velora hires engineers in one city only.
    assert [c.claim for c in public["unknown"]] == [claims[3], claims[4], claims[5]]
    hr = retriever.validate(claims, HR)
    assert claims[3] in [c.claim for c in hr["supported"]]


def test_rejects_bad_inputs(retriever):
    from rayrag.errors import ConfigError

    with pytest.raises(ConfigError, match="top_k"):
        retriever.rank(QUESTION, PUBLIC, top_k=0)
    with pytest.raises(ConfigError, match="ppr_method"):
        retriever.rank_seeds({"entity:lisbon": 1.0}, PUBLIC, method="magic")


def test_a_principal_reading_nothing_gets_nothing(retriever):
    nobody = Principal("nobody", frozenset({"board"}))
    assert retriever.link(QUESTION, nobody) == {}
    assert retriever.rank(QUESTION, nobody, dense_seeds={"d1#0": 1.0}) == []
    assert retriever.facts(QUESTION, nobody, ["d1#0", "d2#0"]) == []
    verdicts = retriever.validate([("Velora Systems", "acquire", "Brightwater Labs")], nobody)
    assert [len(verdicts[k]) for k in ("supported", "contradicted", "unknown")] == [0, 0, 1]


def test_titles_and_identifiers_carry_the_second_hop():
    """A title joins a bridge mention in one passage to the passage about it; an identifier
    the question names links exactly, though no embedding would match it."""
    chunks = [
        Chunk(
            "film#0",
            "film",
            "Inception is a science fiction film. It was directed by Christopher Nolan.",
            0,
            80,
            title="Inception (film)",
        ),
        Chunk(
            "nolan#0",
            "nolan",
            "He is married to the producer Emma Thomas.",
            0,
            40,
            title="Christopher Nolan",
        ),
        Chunk(
            "other#0", "other", "Memento is a thriller released in 2000.", 0, 40, title="Memento"
        ),
        Chunk(
            "hr#0",
            "hr",
            "Employee record EMP-10010. The employee works in Lima.",
            0,
            50,
            title="Employee record EMP-10010",
        ),
    ]
    kg = KnowledgeGraph.build(
        TripleExtractor(KGConfig())(chunks),
        config=KGConfig(),
        extracted_at="2025-01-01T00:00:00+00:00",
    )
    r = GraphRetriever(kg, KGConfig())
    ranked = [
        c for c, _ in r.rank("Who is the spouse of the director of Inception?", PUBLIC, top_k=3)
    ]
    # Inception -> its passage -> "Christopher Nolan" -> the passage titled Christopher Nolan.
    assert ranked[:2] == ["film#0", "nolan#0"]
    assert "entity:emp-10010" in r.link("Where does employee EMP-10010 work?", PUBLIC)
    assert r.rank("Where does employee EMP-10010 work?", PUBLIC, top_k=1)[0][0] == "hr#0"


def test_prepare_embeds_every_name_once_before_any_question(kg):
    asked: list[list[str]] = []

    def counting(texts):
        asked.append(list(texts))
        return EMBED(texts)

    r = GraphRetriever(kg, KGConfig(), embed_fn=counting)
    r.prepare()  # a principal reading every group: all aliases, shared by later views
    names = {t for batch in asked for t in batch}
    assert "brightwater labs" in names and "kestrel bank" in names  # hr-only names too
    asked.clear()
    # a new view: only the question is embedded
    r.link("Who founded Brightwater Laboratories?", PUBLIC)
    assert all(len(batch) <= 2 and "kestrel bank" not in batch for batch in asked), asked


# ---------------------------------------------------------------- the second hop and the path

# "Which product is made by the company that acquired Beta Works?": Beta Works -> (acquire,
# in a restricted press release) -> Corvin Data -> (make) -> Lantern Box.
HOP_CORPUS = {
    "press": ("Corvin Data acquired Beta Works in 2019.", ("hr",)),
    "sheet": ("Lantern Box is made by Corvin Data.", ("public",)),
    "office": ("Corvin Data opened an office in Lisbon.", ("public",)),
    "beta": ("Beta Works makes Quill Gate, which entered the market in 2015.", ("public",)),
    "other": ("Orbital Labs makes Pylon Gate.", ("public",)),
    "zentra": ("The Kestrel Board approved Zentra Pill.", ("public",)),
    "ovila": ("The Kestrel Board approved Ovila Tab.", ("public",)),
    "drug": ("Pembrook Health makes fenmodex.", ("public",)),
    "apple": ("Apple acquired Beats in 2014.", ("public",)),
}
HOP_QUESTION = "Which product is made by the company that acquired Beta Works?"
# Explicit vectors: "manufacture" is a near neighbour of "make"; every other word is random.
HOP_EMBED = embed_fn_from({"make": [1.0, 0.0], "manufacture": [0.9, 0.43589]})


@pytest.fixture(scope="module")
def hops() -> GraphRetriever:
    r = GraphRetriever(build(HOP_CORPUS), KGConfig(), embed_fn=HOP_EMBED)
    r.warm_up()
    return r


def test_question_relation_matches_words_stems_and_verb_neighbours(hops):
    asked = hops.question_relation(HOP_QUESTION, HR, threshold=0.55)
    assert asked("acquire") and asked("make")  # "acquired", "made" (lemma make)
    assert asked("manufacture")  # cosine 0.9 to the question's verb "make"
    assert not asked("open_office_in") and not asked("approve")
    assert not hops.question_relation(HOP_QUESTION, HR, threshold=0.95)("manufacture")
    # "maker" is the agent noun of "make": the question asks about making.
    assert hops.question_relation("Which company acquired the maker of Quill Gate?", HR)("make")


def test_hop_candidates_follow_the_bridge_the_question_asks_about(hops):
    candidates = hops.hop_candidates(HOP_QUESTION, HR, ["press#0", "beta#0", "other#0"])
    # Corvin Data is joined to Beta Works by "acquire", which the question asks about; its
    # passages that do not name Beta Works are the second hops. Only the product sheet cites
    # an asked fact on the bridge (Corvin make Lantern Box); the office does not.
    assert set(candidates) == {"sheet#0", "office#0"}
    sheet = candidates["sheet#0"]
    assert (sheet.bridge, sheet.sources, sheet.answers) == (
        "entity:corvin data",
        ("press#0",),
        True,
    )
    assert not candidates["office#0"].answers
    assert sheet.asked and candidates["office#0"].asked  # both reached through "acquire"
    assert sheet.weight == pytest.approx(1.0 / np.log2(1 + 3))  # Corvin Data: 3 passages


def test_no_second_hop_through_a_bridge_document_the_principal_may_not_read(hops):
    # The public sees Beta Works (its own passage) but not the press release that joins it to
    # Corvin Data: nothing leads it to Corvin's product sheet, and the path stops at Beta Works.
    candidates = hops.hop_candidates(HOP_QUESTION, PUBLIC, ["press#0", "beta#0", "other#0"])
    assert "sheet#0" not in candidates and "office#0" not in candidates
    path = hops.path(HOP_QUESTION, PUBLIC, ["beta#0", "sheet#0", "office#0", "press#0"])
    assert all("Corvin Data" not in (f.subject, f.object) for f in path)
    assert all(c != "press#0" for f in path for c in f.chunk_ids)
    assert "press#0" not in hops.answering(HOP_QUESTION, PUBLIC, ["press#0", "beta#0"])


def test_path_runs_from_the_question_entity_through_the_bridge(hops):
    path = hops.path(HOP_QUESTION, HR, ["press#0", "sheet#0", "office#0"])
    assert [(f.subject, f.relation, f.object) for f in path] == [
        ("Corvin Data", "acquire", "Beta Works"),
        ("Corvin Data", "make", "Lantern Box"),
    ]
    assert path[0].chunk_ids == ("press#0",) and path[1].chunk_ids == ("sheet#0",)
    # Only facts the ranked passages cite: without the product sheet there is no second fact.
    assert [f.relation for f in hops.path(HOP_QUESTION, HR, ["press#0", "office#0"])] == ["acquire"]
    assert hops.path("What is the weather like?", HR, ["office#0"]) == []  # names nothing


def test_answering_finds_the_first_hop_and_siblings_are_no_second_hop(hops):
    # The press release cites "Corvin acquire Beta Works", the relation the question asks about.
    assert hops.answering(HOP_QUESTION, HR, ["office#0", "sheet#0", "press#0"]) == ["press#0"]
    # "Board approve Zentra Pill" then "Board approve Ovila Tab" repeats the relation with the
    # bridge in the same role: a sibling, not a further hop.
    question = "Which board approved Zentra Pill?"
    candidates = hops.hop_candidates(question, PUBLIC, ["zentra#0"])
    assert set(candidates) == {"ovila#0"} and not candidates["ovila#0"].answers
    assert [f.object for f in hops.path(question, PUBLIC, ["zentra#0", "ovila#0"])] == [
        "Zentra Pill"
    ]


def test_lower_case_names_link_exactly_as_written(hops):
    # A coined lower-case name (a NAME entity) links; a common word never links a capitalised
    # entity that shares its key ("apple" is not Apple).
    assert "entity:fenmodex" in hops.link("Which company makes fenmodex?", PUBLIC)
    assert "entity:apple" not in hops.link("Which apple is the sweetest?", PUBLIC)
    assert "entity:apple" in hops.link("What did Apple acquire?", PUBLIC)
