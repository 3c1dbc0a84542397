"""KnowledgeGraph: provenance, aliases, synonyms, ACL views, persistence, incremental updates.

Extractions come from the real spaCy extractor over tiny redacted chunks; the synonym tests
feed hand-written extractions and an embedding function built from explicit vectors (an
input, so the expected edges can be worked out by hand).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from rayrag.config import KGConfig
from rayrag.errors import BundleError, DataError
from rayrag.index.graph import KnowledgeGraph
from rayrag.index.kg_extract import ChunkExtraction, TripleExtractor
from rayrag.types import Chunk, Principal, Triple

PUBLIC = Principal("visitor")
HR = Principal("hr-officer", frozenset({"public", "hr"}))
PERSON = "entity:person_3f9a0c1e"

CORPUS = {
    "d1": (
        "Velora Systems Inc. acquired Beta Corp in 2021. PERSON_3f9a0c1e works for Velora Systems.",
        ("public",),
    ),
    "d2": (
        "PERSON_3f9a0c1e lives in Lisbon. Contact <EMAIL_ADDRESS> or <PHONE_NUMBER> for details.",
        ("public",),
    ),
    "d3": ("PERSON_3f9a0c1e was dismissed by Orbital Labs after an audit.", ("hr",)),
    "d4": ("International Business Machines opened a research lab in Zurich.", ("public",)),
    "d5": (
        (
            "IBM acquired Red Hat. Red Hat, Velora Systems "
            "and Orbital Labs were mentioned in the report."
        ),
        ("public",),
    ),
}
D1_CHANGED = (
    "Velora Systems Inc. acquired Gamma Ltd in 2023. PERSON_3f9a0c1e works for Velora Systems."
)


def embed_fn_from(explicit: dict[str, list[float]], dim: int = 64):
    """Deterministic embeddings: explicit rows where given, else a pseudo-random unit vector.

    Random 64-d unit vectors have |cosine| well below 0.8, so only the explicit pairs
    become synonyms.
    """

    def embed(names: list[str]) -> np.ndarray:
        rows = []
        for name in names:
            if name in explicit:
                row = np.zeros(dim, np.float32)
                row[: len(explicit[name])] = explicit[name]
            else:
                seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
                row = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
            rows.append(row / np.linalg.norm(row))
        return np.stack(rows)

    return embed


EMBED = embed_fn_from({"lisbon": [1.0, 0.0], "zurich": [0.9, 0.43589]})  # cosine 0.9


@pytest.fixture(scope="module")
def extract():
    extractor = TripleExtractor(KGConfig())
    cache: dict[tuple[str, str], ChunkExtraction] = {}

    def run(docs: dict[str, tuple[str, tuple[str, ...]]]) -> list[ChunkExtraction]:
        todo = [(d, t, a) for d, (t, a) in docs.items() if (d, t) not in cache]
        chunks = [Chunk(f"{d}#0", d, t, 0, len(t), acl=a) for d, t, a in todo]
        for (d, t, _), ex in zip(todo, extractor(chunks), strict=True):
            cache[(d, t)] = ex
        return [cache[(d, t)] for d, (t, _) in docs.items()]

    return run


@pytest.fixture(scope="module")
def kg(extract) -> KnowledgeGraph:
    return KnowledgeGraph.build(
        extract(CORPUS), config=KGConfig(), embed_fn=EMBED, extracted_at="2025-01-01T00:00:00+00:00"
    )


def canonical(kg: KnowledgeGraph) -> tuple[Any, Any]:
    """Everything but extracted_at, in a comparable form."""

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k != "extracted_at"}

    nodes = {n: strip(d) for n, d in kg.graph.nodes(data=True)}
    edges = sorted(
        (u, v, k, sorted(strip(d).items(), key=str))
        for u, v, k, d in kg.graph.edges(keys=True, data=True)
    )
    return nodes, edges


def test_every_edge_keeps_provenance(kg: KnowledgeGraph) -> None:
    stats = kg.stats()
    assert stats["passages"] == 5 and stats["entities"] >= 7
    assert (
        stats["relation_edges"] >= 6
        and stats["mention_edges"] >= 10
        and stats["synonym_edges"] == 2
    )
    for u, v, key, data in kg.graph.edges(keys=True, data=True):
        for field in ("chunk_ids", "doc_ids", "acl", "extracted_at"):
            assert data[field], (u, v, key, field)
        assert 0 < data["confidence"] <= 1 and data["relation"] == key


def test_acl_flows_from_chunks_to_edges(kg: KnowledgeGraph) -> None:
    dismissed = kg.graph.edges["entity:orbital labs", PERSON, "dismiss"]
    assert dismissed["acl"] == ["hr"] and dismissed["doc_ids"] == ["d3"]
    assert kg.graph.edges[PERSON, "entity:lisbon", "live_in"]["acl"] == ["public"]


def test_pseudonyms_join_people_across_documents(kg: KnowledgeGraph) -> None:
    person = kg.graph.nodes[PERSON]
    assert person["label"] == "PERSON" and person["name"] == "PERSON_3f9a0c1e"
    assert person["doc_ids"] == ["d1", "d2", "d3"]


def test_placeholders_are_not_nodes(kg: KnowledgeGraph) -> None:
    names = " ".join(str(n) for n in kg.graph.nodes).lower()
    assert "email" not in names and "phone" not in names and "<" not in names


def test_aliases_merge_legal_forms_and_acronyms(kg: KnowledgeGraph) -> None:
    velora = kg.graph.nodes["entity:velora systems"]
    assert velora["name"] == "Velora Systems" and velora["aliases"] == ["Velora Systems Inc"]
    assert velora["alias_keys"] == ["velora systems", "velora systems inc"]
    assert "entity:velora systems inc" not in kg.graph
    ibm = kg.graph.nodes["entity:international business machines"]
    assert ibm["aliases"] == ["IBM"] and ibm["doc_ids"] == ["d4", "d5"]
    assert kg.graph.has_edge("entity:international business machines", "entity:red hat", "acquire")
    assert kg.entity_node_for("IBM") == "entity:international business machines"
    assert kg.entity_node_for("The Velora Systems Inc.") == "entity:velora systems"


def test_synonym_edges_from_embeddings(kg: KnowledgeGraph) -> None:
    edge = kg.graph.edges["entity:lisbon", "entity:zurich", "synonym"]
    assert edge["confidence"] == pytest.approx(0.9, abs=1e-4)
    assert edge["doc_ids"] == ["d2", "d4"]  # both names' provenance
    assert kg.graph.has_edge("entity:zurich", "entity:lisbon", "synonym")


def test_synonyms_respect_threshold_fanout_and_skip_pseudonyms() -> None:
    vectors = {
        "alpha": [1, 0, 0],
        "alpha one": [0.95, 0.3122, 0],
        "alpha two": [0.9, 0, 0.43589],
        "beta": [0.7, -0.71414, 0],
        "person_00000001": [1, 0, 0],
        "person_00000002": [1, 0, 0],
    }
    extraction = ChunkExtraction(
        "c1", "d1", ("public",), entities=[(k, "ORG", k.title()) for k in vectors]
    )
    kg = KnowledgeGraph.build(
        [extraction],
        config=KGConfig(max_synonyms_per_entity=1),
        embed_fn=embed_fn_from(vectors),
        extracted_at="t0",
    )
    synonyms = {(u[7:], v[7:]) for u, v, k in kg.graph.edges(keys=True) if k == "synonym"}
    # Each name keeps its single best neighbour at cosine >= 0.8; beta (0.7) has none.
    assert synonyms == {("alpha", "alpha one"), ("alpha one", "alpha"), ("alpha two", "alpha")}


def test_same_fact_in_two_chunks_merges_provenance() -> None:
    def chunk(cid: str, doc: str, conf: float, acl: tuple[str, ...]) -> ChunkExtraction:
        return ChunkExtraction(
            cid,
            doc,
            acl,
            entities=[("acme", "ORG", "Acme"), ("globex", "ORG", "Globex")],
            triples=[Triple("acme", "acquire", "globex", cid, doc, conf)],
        )

    kg = KnowledgeGraph.build(
        [chunk("a#0", "a", 0.9, ("public",)), chunk("b#0", "b", 0.8, ("hr",))], extracted_at="t0"
    )
    edge = kg.graph.edges["entity:acme", "entity:globex", "acquire"]
    assert edge["chunk_ids"] == ["a#0", "b#0"] and edge["doc_ids"] == ["a", "b"]
    assert edge["acl"] == ["hr", "public"] and edge["confidence"] == 0.9  # max, not noisy-or
    kg.remove_documents({"a"})
    edge = kg.graph.edges["entity:acme", "entity:globex", "acquire"]
    assert edge["chunk_ids"] == ["b#0"] and edge["acl"] == ["hr"] and edge["confidence"] == 0.8


def test_subgraph_hides_hr_only_facts(kg: KnowledgeGraph) -> None:
    public = kg.subgraph_for(PUBLIC)
    assert not public.graph.has_edge("entity:orbital labs", PERSON, "dismiss")
    assert "passage:d3#0" not in public.graph
    person = public.graph.nodes[PERSON]
    assert person["doc_ids"] == ["d1", "d2"] and person["acl"] == ["public"]
    for _, _, data in public.graph.edges(data=True):
        assert "d3" not in data["doc_ids"] and "hr" not in data["acl"]
    assert kg.subgraph_for(HR).graph.has_edge("entity:orbital labs", PERSON, "dismiss")
    assert public.graph.graph["acronyms"] == {"ibm": "international business machines"}
    with pytest.raises(DataError, match="read-only"):
        public.remove_documents({"d1"})


def test_personalized_pagerank_respects_acl(kg: KnowledgeGraph) -> None:
    seeds = {PERSON: 1.0, "entity:nowhere": 1.0}
    public_scores = kg.personalized_pagerank(seeds, PUBLIC)
    assert "passage:d3#0" not in public_scores
    assert public_scores["passage:d2#0"] > public_scores["passage:d4#0"]
    hr_scores = kg.personalized_pagerank(seeds, HR)
    assert hr_scores["passage:d3#0"] > 0
    assert kg.personalized_pagerank({"entity:nowhere": 1.0}, PUBLIC) == {}


def test_save_load_round_trip(kg: KnowledgeGraph, tmp_path) -> None:
    path = tmp_path / "graph.json"
    kg.save(path)
    loaded = KnowledgeGraph.load(path)
    assert canonical(loaded) == canonical(kg) and loaded.config == kg.config
    assert loaded.stats() == kg.stats()
    assert [p.name for p in tmp_path.iterdir()] == ["graph.json"]  # no temp file left


@pytest.mark.parametrize(
    "content",
    [
        None,
        "{not json",
        '{"nodes": []}',
        '{"directed": true, "multigraph": true, "graph": {}, "nodes": [], "edges": []}',
    ],
)
def test_missing_or_corrupt_file_is_one_line_index_error(tmp_path, content: str | None) -> None:
    path = tmp_path / "graph.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BundleError) as err:
        KnowledgeGraph.load(path)
    assert "\n" not in str(err.value) and "graph.json" in str(err.value)


def test_remove_then_add_changed_doc_equals_scratch(extract) -> None:
    new_corpus = {**CORPUS, "d1": (D1_CHANGED, ("public",))}
    incremental = KnowledgeGraph.build(
        extract(CORPUS), config=KGConfig(), embed_fn=EMBED, extracted_at="t0"
    )
    removed = incremental.remove_documents({"d1"})
    assert removed >= 3  # acquire, work_for and the passage's mention edges at least
    incremental.add(extract({"d1": new_corpus["d1"]}), embed_fn=EMBED, extracted_at="t1")
    scratch = KnowledgeGraph.build(
        extract(new_corpus), config=KGConfig(), embed_fn=EMBED, extracted_at="t2"
    )
    assert canonical(incremental) == canonical(scratch)
    assert "entity:beta" not in incremental.graph and "entity:gamma" in incremental.graph


def test_removing_the_long_form_splits_the_acronym_back_out(extract, tmp_path) -> None:
    full = KnowledgeGraph.build(
        extract(CORPUS), config=KGConfig(), embed_fn=EMBED, extracted_at="t0"
    )
    full.save(tmp_path / "g.json")
    reloaded = KnowledgeGraph.load(tmp_path / "g.json")  # no vector cache: the stale path
    for graph in (full, reloaded):
        graph.remove_documents({"d4"})
        graph.add([], embed_fn=EMBED)
    without_d4 = {d: v for d, v in CORPUS.items() if d != "d4"}
    scratch = KnowledgeGraph.build(
        extract(without_d4), config=KGConfig(), embed_fn=EMBED, extracted_at="t2"
    )
    assert "entity:ibm" in scratch.graph
    assert canonical(full) == canonical(scratch) == canonical(reloaded)


def test_synonym_slots_refill_after_removal(tmp_path) -> None:
    vectors = {"alpha": [1, 0, 0], "alpha one": [0.95, 0.3122, 0], "alpha two": [0.9, 0, 0.43589]}
    embed = embed_fn_from(vectors)
    config = KGConfig(max_synonyms_per_entity=1)

    def doc(key: str) -> ChunkExtraction:
        return ChunkExtraction(f"{key}#0", key, ("public",), entities=[(key, "ORG", key.title())])

    def build(keys: list[str]) -> KnowledgeGraph:
        return KnowledgeGraph.build(
            [doc(k) for k in keys], config=config, embed_fn=embed, extracted_at="t"
        )

    scratch = build(["alpha", "alpha two"])
    assert scratch.graph.has_edge("entity:alpha", "entity:alpha two", "synonym")

    cached = build(["alpha", "alpha one", "alpha two"])
    cached.remove_documents({"alpha one"})  # vectors cached in memory: refilled at once
    assert canonical(cached) == canonical(scratch)

    build(["alpha", "alpha one", "alpha two"]).save(tmp_path / "g.json")
    reloaded = KnowledgeGraph.load(tmp_path / "g.json")
    reloaded.remove_documents({"alpha one"})  # no vectors: marked stale
    assert reloaded.graph.graph["synonyms_stale"] is True
    reloaded.add([], embed_fn=embed)
    assert canonical(reloaded) == canonical(scratch)


def test_adding_a_chunk_again_replaces_it(extract, kg: KnowledgeGraph) -> None:
    again = KnowledgeGraph.build(
        extract(CORPUS), config=KGConfig(), embed_fn=EMBED, extracted_at="t0"
    )
    again.add(extract({"d2": CORPUS["d2"], "d5": CORPUS["d5"]}), embed_fn=EMBED, extracted_at="t1")
    assert canonical(again) == canonical(kg)
