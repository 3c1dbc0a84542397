"""Tests for rayrag.data.demo_corpus: determinism, sizes, gold QA, ACLs, planted PII."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import phonenumbers
import pytest

from rayrag.data.demo_corpus import DemoCorpus, generate_demo_corpus
from rayrag.data.readers import read_corpus, read_qa

GROUPS = {"public", "hr", "finance", "legal"}
DOC_TYPES = {
    "company_profile",
    "product_sheet",
    "drug_approval",
    "press_release",
    "regulation_summary",
    "legal_opinion",
    "finance_memo",
    "hr_record",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCorpus:
    return generate_demo_corpus(tmp_path_factory.mktemp("demo"), seed=0)


@pytest.fixture(scope="module")
def docs(demo: DemoCorpus):
    result = read_corpus(demo.corpus_path, strict=True)  # the corpus obeys its own contract
    return {d.id: d for d in result.documents}


@pytest.fixture(scope="module")
def qa(demo: DemoCorpus):
    return read_qa(demo.qa_path)


def _files(demo: DemoCorpus) -> list[bytes]:
    return [p.read_bytes() for p in (demo.corpus_path, demo.qa_path, demo.planted_pii_path)]


def test_same_seed_gives_identical_bytes(demo: DemoCorpus, tmp_path: Path) -> None:
    again = generate_demo_corpus(tmp_path / "again", seed=0)
    assert _files(again) == _files(demo)


def test_different_seed_differs(demo: DemoCorpus, tmp_path: Path) -> None:
    other = generate_demo_corpus(tmp_path / "other", seed=1)
    assert other.corpus_path.read_bytes() != demo.corpus_path.read_bytes()
    assert other.qa_path.read_bytes() != demo.qa_path.read_bytes()


def test_counts(demo: DemoCorpus, docs, qa) -> None:
    assert 250 <= demo.documents == len(docs) <= 350
    assert 130 <= demo.questions == len(qa) <= 170
    two_hop = [p for p in qa if p.metadata["hops"] == 2]
    assert demo.two_hop_questions == len(two_hop) >= 60
    assert {p.metadata["hops"] for p in qa} == {1, 2}
    assert json.loads(demo.planted_pii_path.read_text()) == demo.planted_pii


def test_every_answer_is_in_its_gold_evidence(docs, qa) -> None:
    for pair in qa:
        assert pair.supporting_ids and set(pair.supporting_ids) <= set(docs)
        assert len(pair.supporting_ids) == pair.metadata["hops"]
        texts = [docs[i].text for i in pair.supporting_ids]
        assert any(pair.answers[0] in t for t in texts), pair.id


def test_two_hop_questions_need_the_bridge(docs, qa) -> None:
    # The answer sits in the second document; the first only names the bridge entity.
    for pair in (p for p in qa if p.metadata["hops"] == 2):
        bridge, target = (docs[i] for i in pair.supporting_ids)
        assert bridge.id != target.id
        assert pair.answers[0] in target.text
        if not pair.answers[0].isdigit():  # years may recur by chance (phone digits)
            assert pair.answers[0] not in bridge.text, pair.id


def test_qa_metadata_slices(docs, qa) -> None:
    for pair in qa:
        assert pair.metadata["doc_type"] in DOC_TYPES
        assert isinstance(pair.metadata["region"], str) and pair.metadata["region"]
    assert len({p.metadata["doc_type"] for p in qa}) >= 6
    assert len({p.metadata["region"] for p in qa}) >= 4


def test_acl_groups(docs) -> None:
    by_type: dict[str, set[tuple[str, ...]]] = {}
    for doc in docs.values():
        assert set(doc.acl) <= GROUPS
        by_type.setdefault(doc.metadata["doc_type"], set()).add(doc.acl)
    assert by_type["hr_record"] == {("hr",)}
    assert all("finance" in acl for acl in by_type["finance_memo"])
    assert all("legal" in acl for acl in by_type["legal_opinion"])
    for public_type in DOC_TYPES - {"hr_record", "finance_memo", "legal_opinion"}:
        assert by_type[public_type] == {("public",)}
    assert sum(len(d.acl) == 2 for d in docs.values()) >= 5


def test_document_metadata_and_timestamps(docs) -> None:
    assert set(Counter(d.metadata["doc_type"] for d in docs.values())) == DOC_TYPES
    for doc in docs.values():
        assert {"doc_type", "department", "region"} <= set(doc.metadata)
        assert doc.title
        datetime.strptime(doc.updated_at, "%Y-%m-%dT%H:%M:%SZ")


def test_planted_pii_is_in_the_raw_corpus(demo: DemoCorpus, docs) -> None:
    all_text = "\n".join(d.text for d in docs.values())
    expected = {
        "PERSON",
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "US_SSN",
        "CREDIT_CARD",
        "STREET_ADDRESS",
    }
    assert expected <= set(demo.planted_pii)
    for entity_type, values in demo.planted_pii.items():
        assert len(values) >= 20, entity_type
        for value in values:
            assert value in all_text, (entity_type, value)
    hr_docs = [d for d in docs.values() if d.metadata["doc_type"] == "hr_record"]
    assert all(any(p in d.text for p in demo.planted_pii["US_SSN"]) for d in hr_docs)


def test_questions_and_answers_never_carry_pii(demo: DemoCorpus, qa) -> None:
    planted = [v for values in demo.planted_pii.values() for v in values]
    last_names = {p.split()[-1] for p in demo.planted_pii["PERSON"]}
    for pair in qa:
        for value in planted:
            assert value not in pair.question and value not in pair.answers[0]
        assert not last_names & set(re.findall(r"\w+", pair.answers[0])), pair.id


def _luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def test_planted_pii_has_formats_presidio_accepts(demo: DemoCorpus) -> None:
    pii = demo.planted_pii
    for ssn in pii["US_SSN"]:
        assert re.fullmatch(r"5\d\d-\d\d-\d{4}", ssn)
        assert ssn[4:6] != "00" and ssn[7:] != "0000" and len(set(ssn.replace("-", ""))) > 1
    for card in pii["CREDIT_CARD"]:
        assert re.fullmatch(r"(4\d{3}|5[1-5]\d\d)( \d{4}){3}", card) and _luhn_ok(card)
    for phone in pii["PHONE_NUMBER"]:
        assert phonenumbers.is_valid_number(phonenumbers.parse(phone, "US")), phone
    for email in pii["EMAIL_ADDRESS"]:
        assert re.fullmatch(r"[a-z]+\.[a-z]+@[a-z]+\.com", email)
    for iban in pii.get("IBAN_CODE", []):
        moved = iban[4:] + iban[:4]
        assert int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    for address in pii["STREET_ADDRESS"]:
        assert re.fullmatch(r"\d+ \w+ \w+, \w+, [A-Z]{2} \d{5}", address)
