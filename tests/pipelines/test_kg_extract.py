"""TripleExtractor on tiny hand-written (already redacted) chunks, with the real spaCy model."""

from __future__ import annotations

import json

import pytest

from rayrag.config import KGConfig
from rayrag.pipelines.kg_extract import (
    COOCCURS,
    ChunkExtraction,
    TripleExtractor,
    display_name,
    entity_key,
    is_pseudonym_key,
)
from rayrag.types import Chunk


@pytest.fixture(scope="module")
def extractor() -> TripleExtractor:
    ex = TripleExtractor(KGConfig())
    ex.warm_up()
    return ex


def _one(extractor: TripleExtractor, text: str, acl: tuple[str, ...] = ("public",)) -> ChunkExtraction:
    [extraction] = extractor([Chunk("c1", "d1", text, 0, len(text), acl=acl)])
    return extraction


def _spo(extraction: ChunkExtraction) -> set[tuple[str, str, str]]:
    return {(t.subject, t.relation, t.object) for t in extraction.triples}


def test_active_svo(extractor: TripleExtractor) -> None:
    ex = _one(extractor, "Velora Systems acquired Beta Corp last year.")
    assert ("velora systems", "acquire", "beta corp") in _spo(ex)
    [triple] = [t for t in ex.triples if t.relation == "acquire"]
    assert triple.confidence == pytest.approx(0.9)
    assert (triple.chunk_id, triple.doc_id) == ("c1", "d1")


def test_passive_svo_puts_the_agent_first(extractor: TripleExtractor) -> None:
    ex = _one(extractor, "Beta Corp was acquired by Velora Systems.")
    assert _spo(ex) == {("velora systems", "acquire", "beta corp")}


def test_prepositional_object_names_the_relation(extractor: TripleExtractor) -> None:
    ex = _one(extractor, "PERSON_3f9a0c1e works for Velora Systems.")
    assert ("person_3f9a0c1e", "work_for", "velora systems") in _spo(ex)


def test_negation_and_particles_are_kept_in_the_relation(extractor: TripleExtractor) -> None:
    ex = _one(extractor, "Google took over YouTube. Velora Systems did not acquire Beta Corp.")
    assert ("google", "take_over", "youtube") in _spo(ex)
    assert ("velora systems", "not_acquire", "beta corp") in _spo(ex)


def test_pseudonyms_are_person_entities(extractor: TripleExtractor) -> None:
    ex = _one(extractor, "PERSON_3f9a0c1e met PERSON_00aa11bb's lawyer in Lisbon.")
    people = {(key, surface) for key, label, surface in ex.entities if label == "PERSON"}
    assert people == {("person_3f9a0c1e", "PERSON_3f9a0c1e"), ("person_00aa11bb", "PERSON_00aa11bb")}
    assert is_pseudonym_key("person_3f9a0c1e") and not is_pseudonym_key("velora systems")


def test_placeholders_are_never_entities(extractor: TripleExtractor) -> None:
    ex = _one(extractor, "Write to <EMAIL_ADDRESS> or call <PHONE_NUMBER> at Acme Corp in <LOCATION>.")
    keys = {key for key, _, _ in ex.entities}
    assert "acme corp" in keys
    assert not any("<" in s or "email" in k or "phone" in k or "location" in k for k, _, s in ex.entities)
    assert all("<" not in t.subject + t.object for t in ex.triples)


def test_same_sentence_entities_co_occur(extractor: TripleExtractor) -> None:
    ex = _one(extractor, "Red Hat, Velora Systems and Orbital Labs were mentioned in the report. Zurich is far.")
    co = {(t.subject, t.object) for t in ex.triples if t.relation == COOCCURS}
    assert co == {("red hat", "velora systems"), ("orbital labs", "red hat"),
                  ("orbital labs", "velora systems")}
    assert all(t.confidence == pytest.approx(0.3) for t in ex.triples if t.relation == COOCCURS)
    # Zurich is alone in its sentence: no pair.
    assert not any("zurich" in (t.subject, t.object) for t in ex.triples)


def test_cooccurrence_can_be_switched_off() -> None:
    ex = TripleExtractor(KGConfig(cooccurrence=False, svo_relations=False))
    [extraction] = ex([Chunk("c1", "d1", "Red Hat and Velora Systems met in Zurich.", 0, 41)])
    assert extraction.entities and extraction.triples == []


def test_normalisation() -> None:
    assert entity_key("The Velora Systems Inc.'s") == "velora systems inc"
    assert entity_key("  Velora   Systems, ") == "velora systems"
    assert display_name("the U.S.") == "U.S"
    assert entity_key("U.S.") == "us"
    assert entity_key("PERSON_3f9a0c1e") == "person_3f9a0c1e"


def test_acl_and_round_trip(extractor: TripleExtractor) -> None:
    ex = _one(extractor, "Orbital Labs dismissed PERSON_3f9a0c1e.", acl=("hr",))
    assert ex.acl == ("hr",)
    row = json.loads(json.dumps(ex.to_dict()))
    assert ChunkExtraction.from_dict(row) == ex


def test_warm_up_is_idempotent_and_batches_keep_order(extractor: TripleExtractor) -> None:
    nlp = extractor._nlp
    extractor.warm_up()
    assert extractor._nlp is nlp
    chunks = [Chunk(f"c{i}", f"d{i}", f"Velora Systems hired PERSON_{i:08x}.", 0, 36) for i in range(5)]
    out = extractor(chunks)
    assert [e.chunk_id for e in out] == [c.chunk_id for c in chunks]
    assert all(f"person_{i:08x}" in {k for k, _, _ in e.entities} for i, e in enumerate(out))
