"""Reader contexts: facts per chunk, entity neighbours, distractors, the gold passage's rank."""

from __future__ import annotations

import random

import pytest

from rayrag.index.bundle import IndexBundle
from rayrag.index.graph import NON_FACT_RELATIONS
from rayrag.training.contexts import (
    MAX_FACTS_PER_EXAMPLE,
    ChunkRecord,
    chunk_facts,
    entity_neighbours,
    facts_for,
    random_distractors,
    ranked_context,
)
from rayrag.types import Fact
from tests.training.test_train_data import make_tiny_bundle


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    bundle, _ = make_tiny_bundle(tmp_path_factory.mktemp("tiny-contexts"))
    return IndexBundle.load(bundle).graph()


def _chunks(n_docs: int, per_doc: int = 2) -> list[ChunkRecord]:
    return [
        ChunkRecord(f"doc-{d}#{c}", f"doc-{d}", None, f"text {d} {c}")
        for d in range(n_docs)
        for c in range(per_doc)
    ]


def test_chunk_facts_are_named_relation_facts_only(graph):
    facts = chunk_facts(graph)
    assert {f.relation for f in facts["doc-0#0"]} == {"make", "acquire", "lead"}
    assert all(f.relation not in NON_FACT_RELATIONS for fs in facts.values() for f in fs)
    assert any(
        f.subject == "Helix Dynamics" and f.object == "Falcon Drive" for f in facts["doc-0#0"]
    )


def test_entity_neighbours_share_an_entity_most_shared_first(graph):
    neighbours = entity_neighbours(graph)
    # PERSON_3f9a0c1e leads companies 0 and 4: their chunks are neighbours through that person
    assert "doc-4#0" in neighbours["doc-0#0"] and "doc-0#0" not in neighbours["doc-0#0"]


def test_facts_for_dedups_in_context_order_and_caps():
    chunks = _chunks(1, per_doc=2)
    fact = Fact("A", "acquire", "B", 0.9, ("doc-0#0", "doc-0#1"), ("doc-0",))
    many = [Fact("A", f"rel_{i}", "B", 0.9, ("doc-0#1",), ("doc-0",)) for i in range(10)]
    facts = {"doc-0#0": [fact], "doc-0#1": [fact, *many]}
    chosen = facts_for(chunks, facts)
    assert chosen[0] == fact and len(chosen) == MAX_FACTS_PER_EXAMPLE == len(set(chosen))


def test_random_distractors_come_from_other_documents_once_each():
    chunks = _chunks(6)
    picked = random_distractors(chunks, {"doc-0", "doc-1"}, 3, random.Random(0))
    assert len(picked) == 3 and len(set(picked)) == 3
    assert all(c.doc_id not in {"doc-0", "doc-1"} for c in picked)
    assert random_distractors(chunks, set(), 0, random.Random(0)) == []


def test_ranked_context_puts_gold_first_about_half_the_time():
    gold, *others = _chunks(4, per_doc=1)
    rng = random.Random(0)
    contexts = [ranked_context(gold, others, rng) for _ in range(400)]
    assert all(
        sorted(c.chunk_id for c in ctx) == sorted(c.chunk_id for c in [gold, *others])
        for ctx in contexts
    )
    first = sum(ctx[0] == gold for ctx in contexts) / len(contexts)
    assert 0.4 < first < 0.6
    assert {ctx.index(gold) for ctx in contexts} == {0, 1, 2, 3}
