"""The bundled demo corpus: ~300 fictional business documents, ~150 gold QA pairs, planted PII.

A small, deterministic world of companies, products, drugs and regulations written as
press releases, company profiles, product sheets, drug approval notices, regulation
summaries, HR records, finance memos and legal opinions. It exercises every stage:
spaCy-friendly sentences ("Aldermoor Systems acquired Brightwater Data in 2019.") for the
knowledge graph, ACL groups (public/hr/finance/legal) for access control, metadata slices
(department, region, doc_type) for disaggregated evaluation, and planted PII (names,
e-mails, US phones, SSNs, Luhn-valid cards, IBANs, street addresses) for redaction tests.

Multi-hop questions (HotpotQA-style bridge questions) join two documents through a
company, product, drug or regulation name, never through a person: PERSON names are
pseudonymised by the redactor, and answers must survive redaction.

The pieces: `demo_world.py` (companies, people, planted identifiers), `demo_documents.py`
(the document kinds), `demo_questions.py` (the QA pairs and their quotas), `demo_vocab.py`
(names and prose templates). This module draws them in a fixed order and writes the files.

    >>> demo = generate_demo_corpus(".rayrag/demo", seed=0)
    >>> demo.documents, demo.questions, sorted(demo.planted_pii)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from rayrag.data import demo_vocab as V
from rayrag.data.demo_documents import (
    _acquisitions,
    _finance_memos,
    _hr_records,
    _legal_opinions,
    _other_press,
    _product_docs,
    _profiles,
    _regulations,
)
from rayrag.data.demo_questions import _questions
from rayrag.data.demo_world import (
    N_COMPANIES,
    _Company,
    _drug_names,
    _World,
)
from rayrag.data.readers import write_json_atomic, write_jsonl_atomic


@dataclass(frozen=True)
class DemoCorpus:
    """Where the demo corpus was written, what it holds, and the PII planted in it."""

    out_dir: Path
    corpus_path: Path
    qa_path: Path
    planted_pii_path: Path
    documents: int
    questions: int
    two_hop_questions: int
    planted_pii: dict[str, list[str]]


def generate_demo_corpus(out_dir: str | Path, *, seed: int = 0) -> DemoCorpus:
    """Write corpus.jsonl, qa.jsonl and planted_pii.json; the same seed gives the same bytes."""
    world = _build_world(random.Random(seed))
    for writer in (
        _profiles,
        _product_docs,
        _acquisitions,
        _other_press,
        _regulations,
        _legal_opinions,
        _finance_memos,
        _hr_records,
    ):
        writer(world)
    questions = _questions(world)
    out = Path(out_dir)
    corpus_path, qa_path, pii_path = (
        out / "corpus.jsonl",
        out / "qa.jsonl",
        out / "planted_pii.json",
    )
    write_jsonl_atomic(corpus_path, world.docs)
    write_jsonl_atomic(qa_path, questions)
    write_json_atomic(pii_path, world.pii)
    return DemoCorpus(
        out_dir=out,
        corpus_path=corpus_path,
        qa_path=qa_path,
        planted_pii_path=pii_path,
        documents=len(world.docs),
        questions=len(questions),
        two_hop_questions=sum(q["metadata"]["hops"] == 2 for q in questions),
        planted_pii={k: list(v) for k, v in world.pii.items()},
    )


# ---------------------------------------------------------------- the world


def _build_world(rng: random.Random) -> _World:
    stems = rng.sample(V.STEMS, N_COMPANIES)
    sectors = ["pharma", "tech", "industrial"] * (N_COMPANIES // 3)
    rng.shuffle(sectors)
    words = rng.sample(V.PRODUCT_WORDS, len(V.PRODUCT_WORDS))
    drugs = _drug_names(rng, sectors.count("pharma"))
    companies = []
    for stem, sector in zip(stems, sectors, strict=True):
        region = rng.choice(sorted(V.CITIES))
        product = (
            drugs.pop()
            if sector == "pharma"
            else f"{words.pop()} {rng.choice(V.PRODUCT_NOUNS[sector])}"
        )
        companies.append(
            _Company(
                name=f"{stem} {rng.choice(V.SECTOR_SUFFIXES[sector])}",
                stem=stem,
                sector=sector,
                city=rng.choice(V.CITIES[region]),
                region=region,
                founded=rng.randint(1968, 2015),
                product=product,
                domain=f"{stem.lower()}.com",
            )
        )
    world = _World(rng=rng, companies=companies)
    world.people = [f"{first} {last}" for first in V.FIRST_NAMES for last in V.LAST_NAMES]
    rng.shuffle(world.people)
    return world


# ---------------------------------------------------------------- PII values


# ---------------------------------------------------------------- documents


# ---------------------------------------------------------------- questions
