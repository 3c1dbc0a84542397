"""Reader contexts from the knowledge graph:
the facts each chunk supports, its neighbours, distractors.

A generated reader example should look like what retrieval hands the reader at serving
time: the gold passage among passages about the same entities (hybrid retrieval's dense
neighbours and the graph's PageRank both favour those, as in HippoRAG, Gutiérrez et al.
2024), from other documents, with the gold passage ranked first about half the time; and
the relation facts those passages support, as the prompt lists them. Pure functions of
the graph, the chunks and a seeded `random.Random`.

    >>> facts = chunk_facts(graph)  # chunk id -> [Fact(...), ...]
    >>> rng = random.Random(0)
    >>> context = ranked_context(gold, related_distractors(
    ...     gold, entity_neighbours(graph)[gold.chunk_id], by_id, chunks, 2, rng), rng)
    >>> facts_for(context, facts)  # the facts the prompt lists, at most MAX_FACTS_PER_EXAMPLE
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from rayrag.index.graph import NON_FACT_RELATIONS
from rayrag.types import Fact, Passage


@dataclass(frozen=True)
class ChunkRecord:
    chunk_id: str
    doc_id: str
    title: str | None
    text: str

    def passage(self) -> Passage:
        return Passage(
            chunk_id=self.chunk_id, doc_id=self.doc_id, text=self.text, score=0.0, title=self.title
        )


MAX_FACTS_PER_EXAMPLE = 6
GOLD_FIRST = 0.5  # retrieval ranks the answering passage first about half the time or more


def chunk_facts(graph) -> dict[str, list[Fact]]:
    """chunk id -> the relation facts it supports (names, not keys), in a stable order."""
    g = graph.graph
    facts: dict[str, list[Fact]] = defaultdict(list)
    for u, v, key, data in sorted(g.edges(keys=True, data=True), key=lambda e: e[:3]):
        if key in NON_FACT_RELATIONS:
            continue
        subject, obj = g.nodes[u].get("name"), g.nodes[v].get("name")
        if not subject or not obj:
            continue
        fact = Fact(
            subject,
            key,
            obj,
            float(data.get("confidence", 0.0)),
            tuple(data.get("chunk_ids", ())),
            tuple(data.get("doc_ids", ())),
        )
        for chunk_id in fact.chunk_ids:
            facts[chunk_id].append(fact)
    return facts


def facts_for(context: Sequence[ChunkRecord], facts: dict[str, list[Fact]]) -> tuple[Fact, ...]:
    """The distinct facts the context's chunks support, in context order;
    at most MAX_FACTS_PER_EXAMPLE."""
    chosen: dict[tuple[str, str, str], Fact] = {}
    for c in context:
        for f in facts.get(c.chunk_id, ()):
            chosen.setdefault((f.subject, f.relation, f.object), f)
    return tuple(list(chosen.values())[:MAX_FACTS_PER_EXAMPLE])


def entity_neighbours(graph) -> dict[str, list[str]]:
    """chunk id -> the other chunks that mention one of its entities, most shared entities first.

    These are the passages hybrid retrieval puts next to the gold one (dense neighbours and
    the graph's PageRank both favour passages about the same entities), so training against
    them teaches the reader to pick the passage that answers, not just any passage on topic.
    """
    g = graph.graph
    chunk_entities: dict[str, list[str]] = defaultdict(list)
    entity_chunks: dict[str, list[str]] = {}
    for node, data in g.nodes(data=True):
        if data.get("kind") != "entity" or data.get("label") == "TITLE":
            continue
        entity_chunks[node] = sorted(data.get("chunk_ids", ()))
        for chunk_id in entity_chunks[node]:
            chunk_entities[chunk_id].append(node)
    out: dict[str, list[str]] = {}
    for chunk_id in sorted(chunk_entities):
        shared: dict[str, int] = defaultdict(int)
        for entity in chunk_entities[chunk_id]:
            for other in entity_chunks[entity]:
                if other != chunk_id:
                    shared[other] += 1
        out[chunk_id] = sorted(shared, key=lambda c: (-shared[c], c))
    return out


def ranked_context(
    gold: ChunkRecord, distractors: list[ChunkRecord], rng: random.Random
) -> list[ChunkRecord]:
    """Gold first with probability GOLD_FIRST, else at a uniform lower rank, as retrieval
    places it; a prompt cut to fit drops the lowest ranks, so gold mostly survives, as it
    does at serving time."""
    context = list(distractors)
    rng.shuffle(context)
    rank = 0 if rng.random() < GOLD_FIRST or not context else rng.randint(1, len(context))
    context.insert(rank, gold)
    return context


def related_distractors(
    gold: ChunkRecord,
    related: Sequence[str],
    by_id: dict[str, ChunkRecord],
    chunks: Sequence[ChunkRecord],
    n: int,
    rng: random.Random,
) -> list[ChunkRecord]:
    """`n` passages from other documents: drawn from the best 2n entity neighbours, then random."""
    pool = [by_id[c] for c in related if c in by_id and by_id[c].doc_id != gold.doc_id][: 2 * n]
    picked = rng.sample(pool, min(n, len(pool)))
    exclude = {gold.doc_id, *(c.doc_id for c in picked)}
    return picked + random_distractors(chunks, exclude, n - len(picked), rng)


def random_distractors(
    chunks: Sequence[ChunkRecord], exclude_docs: set[str], n: int, rng: random.Random
) -> list[ChunkRecord]:
    """`n` random chunks (or fewer) from documents not in `exclude_docs`, no chunk twice."""
    if n <= 0:
        return []
    picked: list[ChunkRecord] = []
    seen: set[int] = set()
    # Rejection sampling: cheap when gold documents are few, which they are.
    for _ in range(max(8 * n, 32)):
        i = rng.randrange(len(chunks))
        if i not in seen and chunks[i].doc_id not in exclude_docs:
            seen.add(i)
            picked.append(chunks[i])
            if len(picked) == n:
                break
    return picked
