"""TripleExtractor on tiny hand-written (already redacted) chunks, with the real spaCy model."""

from __future__ import annotations

import json

import pytest

from rayrag.config import KGConfig
from rayrag.index.kg_extract import (
    COOCCURS,
    ChunkExtraction,
    TripleExtractor,
    display_name,
    entity_key,
    is_pseudonym_key,
    title_surface,
)
from rayrag.types import Chunk


@pytest.fixture(scope="module")
def extractor() -> TripleExtractor:
    ex = TripleExtractor(KGConfig())
    ex.warm_up()
    return ex


def _one(
    extractor: TripleExtractor,
    text: str,
    acl: tuple[str, ...] = ("public",),
    title: str | None = None,
) -> ChunkExtraction:
    [extraction] = extractor([Chunk("c1", "d1", text, 0, len(text), acl=acl, title=title)])
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
    assert people == {
        ("person_3f9a0c1e", "PERSON_3f9a0c1e"),
        ("person_00aa11bb", "PERSON_00aa11bb"),
    }
    assert is_pseudonym_key("person_3f9a0c1e") and not is_pseudonym_key("velora systems")


def test_placeholders_are_never_entities(extractor: TripleExtractor) -> None:
    ex = _one(
        extractor, "Write to <EMAIL_ADDRESS> or call <PHONE_NUMBER> at Acme Corp in <LOCATION>."
    )
    keys = {key for key, _, _ in ex.entities}
    assert "acme corp" in keys
    assert not any(
        "<" in s or "email" in k or "phone" in k or "location" in k for k, _, s in ex.entities
    )
    assert all("<" not in t.subject + t.object for t in ex.triples)


def test_same_sentence_entities_co_occur(extractor: TripleExtractor) -> None:
    ex = _one(
        extractor,
        "Red Hat, Velora Systems and Orbital Labs were mentioned in the report. Zurich is far.",
    )
    co = {(t.subject, t.object) for t in ex.triples if t.relation == COOCCURS}
    assert co == {
        ("red hat", "velora systems"),
        ("orbital labs", "red hat"),
        ("orbital labs", "velora systems"),
    }
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
    chunks = [
        Chunk(f"c{i}", f"d{i}", f"Velora Systems hired PERSON_{i:08x}.", 0, 36) for i in range(5)
    ]
    out = extractor(chunks)
    assert [e.chunk_id for e in out] == [c.chunk_id for c in chunks]
    assert all(f"person_{i:08x}" in {k for k, _, _ in e.entities} for i, e in enumerate(out))


def test_title_is_the_topic_entity_and_takes_back_references(extractor: TripleExtractor) -> None:
    ex = _one(
        extractor,
        "Inception is a 2010 science fiction film. It was directed by Christopher "
        "Nolan. The film stars Leonardo DiCaprio.",
        title="Inception (film)",
    )
    assert ("inception", "TITLE", "Inception") in ex.entities
    spo = _spo(ex)
    assert ("christopher nolan", "direct", "inception") in spo  # "It was directed by"
    assert ("inception", "star", "leonardo dicaprio") in spo  # "The film stars"
    [topic] = [t for t in ex.triples if t.relation == "direct"]
    assert topic.confidence < 0.8  # a heuristic resolution ranks below a parsed link


def test_person_pronouns_only_refer_to_a_person_title(extractor: TripleExtractor) -> None:
    film = _one(extractor, "Inception is a film. He was born in London.", title="Inception (film)")
    assert not any(t.subject == "inception" and "london" == t.object for t in film.triples)
    person = _one(
        extractor,
        "Marie Curie was a Polish physicist. She worked for the University of Paris in France.",
        title="Marie Curie",
    )
    assert ("marie curie", "work_for", "university of paris") in _spo(person)
    thing = _one(
        extractor,
        "Marie Curie was a Polish physicist. It worked for the University of Paris.",
        title="Marie Curie",
    )
    assert not any(t.relation == "work_for" for t in thing.triples)  # "it" is not a person


def test_titles_naming_nothing_are_skipped() -> None:
    assert title_surface("Inception (film)") == "Inception"
    assert title_surface("The Beatles") == "Beatles"
    assert title_surface("Letter to <PERSON>") is None
    assert (
        title_surface("1999") is None and title_surface(None) is None and title_surface("") is None
    )


def test_identifiers_are_entities(extractor: TripleExtractor) -> None:
    ex = _one(
        extractor, "Employee record EMP-10010. The lab holds ISO-9001 and filed in 2010-2012."
    )
    keys = {(key, label) for key, label, _ in ex.entities}
    assert ("emp-10010", "ID") in keys and ("iso-9001", "ID") in keys
    assert not any(key.startswith("2010") for key, _ in keys)  # a year range is no identifier


def test_passive_participle_and_relative_clauses_give_the_agent_first(
    extractor: TripleExtractor,
) -> None:
    # "is made by": passive with a by-agent; "manufactured by" modifying a noun: a
    # participle whose subject is that noun; "which acquired": the relative pronoun is the
    # noun the clause modifies.
    assert ("corvin data", "make", "lantern box") in _spo(
        _one(extractor, "Lantern Box is made by Corvin Data.")
    )
    assert ("kestrel board", "issue", "data integrity act") in _spo(
        _one(extractor, "The Data Integrity Act was issued by the Kestrel Board.")
    )
    approved = _spo(
        _one(
            extractor,
            "The agency approved fenmodex, manufactured by Pembrook Health, "
            "for the treatment of asthma.",
        )
    )
    assert ("pembrook health", "manufacture", "fenmodex") in approved
    # The parser hangs this participle on the verb (advcl); right after the object, it
    # still describes the object.
    attached = _spo(
        _one(
            extractor,
            "The National Drug Evaluation Board approved sarvatide, manufactured "
            "by Saltmarsh Health Group, for the treatment of glaucoma in January 2020.",
        )
    )
    assert ("saltmarsh health group", "manufacture", "sarvatide") in attached
    assert not any(t[1] == "manufacture" and t[2] != "sarvatide" for t in attached)
    relative = _spo(
        _one(extractor, "Velora Systems, which acquired Beta Corp in 2019, is based in Denver.")
    )
    assert ("velora systems", "acquire", "beta corp") in relative
    assert ("velora systems", "employ", "person_3f9a0c1e") in _spo(
        _one(extractor, "Velora Systems employs PERSON_3f9a0c1e.")
    )


def test_adjective_mediated_relation(extractor: TripleExtractor) -> None:
    ex = _one(extractor, "Counsel concluded that fenmodex is subject to the Data Integrity Act.")
    assert ("fenmodex", "be_subject_to", "data integrity act") in _spo(ex)


def test_relation_arguments_ner_missed_become_names(extractor: TripleExtractor) -> None:
    # NER tags neither "Beta Works" nor the lower-case drug name; both are relation arguments
    # linked to a recognised entity, so both become NAME entities.
    made = _one(extractor, "Beta Works makes Quill Gate, which entered the market in 2015.")
    assert ("beta works", "make", "quill gate") in _spo(made)
    assert ("beta works", "NAME", "Beta Works") in made.entities
    drug = _one(extractor, "Pembrook Health makes fenmodex.")
    assert ("pembrook health", "make", "fenmodex") in _spo(drug)
    assert ("fenmodex", "NAME", "fenmodex") in drug.entities
    # Known words, a capital that only opens the sentence, and a name no verb links to a
    # recognised entity stay out.
    plain = _one(
        extractor, "Revenue grew at Velora Systems. Counsel reviewed software and revenue."
    )
    assert {label for _, label, _ in plain.entities} == {"ORG"}
    # two names, no recognised entity
    unlinked = _one(extractor, "In trials, fenmodex outperformed tollodex.")
    assert unlinked.entities == [] and unlinked.triples == []


def test_argument_names_can_be_switched_off() -> None:
    ex = TripleExtractor(KGConfig(argument_names=False))
    [extraction] = ex([Chunk("c1", "d1", "Pembrook Health makes fenmodex.", 0, 31)])
    assert not any(label == "NAME" for _, label, _ in extraction.entities)
    assert not any(t.object == "fenmodex" for t in extraction.triples)


def test_an_ner_span_that_swallowed_the_verb_is_split(extractor: TripleExtractor) -> None:
    # The small model reads "Ashcombe Power makes Thicket Energy Hub" as one ORG.
    ex = _one(
        extractor, "Ashcombe Power makes Thicket Energy Hub, which entered the market in 2011."
    )
    keys = {key for key, _, _ in ex.entities}
    assert "ashcombe power makes thicket energy hub" not in keys
    assert ("ashcombe power", "make", "thicket energy hub") in _spo(ex)


def test_identifiers_in_the_title_are_entities_of_every_chunk(extractor: TripleExtractor) -> None:
    # The body's copy was redacted (the recogniser took it for a name); the title's is not.
    ex = _one(
        extractor,
        "Employee record PERSON_41a1274f. PERSON_41c44e40 joined Fairholm Logistics.",
        title="Employee record EMP-13196",
    )
    assert ("emp-13196", "ID", "EMP-13196") in ex.entities
