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

    >>> demo = generate_demo_corpus(".rayrag/demo", seed=0)
    >>> demo.documents, demo.questions, sorted(demo.planted_pii)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from rayrag.data import demo_vocab as V
from rayrag.data.readers import write_json_atomic, write_jsonl_atomic
from rayrag.types import Document, Scalar

N_COMPANIES = 48
N_ACQUISITIONS = 16
N_OTHER_PRESS = 16
N_LEGAL = 30
N_FINANCE = 40
N_HR = 90
# Questions per template; two-hop templates first. Sized to ~150 questions, 80 two-hop.
_TWO_HOP_QUOTA = {
    "acq_product": 16,
    "acq_target_product": 16,
    "acq_founded": 16,
    "legal_agency": 12,
    "hr_product": 10,
    "product_revenue": 10,
}
_ONE_HOP_QUOTA = {
    "acquirer": 8,
    "maker": 12,
    "condition": 8,
    "reg_agency": 6,
    "reg_year": 6,
    "position": 10,
    "revenue": 8,
    "legal_reg": 6,
    "founded": 6,
}


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


@dataclass
class _Company:
    name: str
    stem: str
    sector: str
    city: str
    region: str
    founded: int
    product: str  # a drug name for pharma companies
    domain: str

    @property
    def product_kind(self) -> str:
        return "drug" if self.sector == "pharma" else "product"


@dataclass
class _World:
    """Entities, documents and the indexes questions are built from."""

    rng: random.Random
    companies: list[_Company]
    docs: list[dict[str, Any]] = field(default_factory=list)
    pii: dict[str, list[str]] = field(default_factory=dict)
    people: list[str] = field(default_factory=list)
    # (kind, company name) -> document, for the second hop of a question
    doc_of: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    facts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # template -> candidates

    def plant(self, entity_type: str, value: str) -> str:
        values = self.pii.setdefault(entity_type, [])
        if value not in values:
            values.append(value)
        return value

    def person(self) -> str:
        return self.plant("PERSON", self.people.pop())

    def fact(self, template: str, **values: Any) -> None:
        self.facts.setdefault(template, []).append(values)


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


def _drug_names(rng: random.Random, count: int) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(part) for part in V.DRUG_PARTS)
        if name not in names:
            names.append(name)
    return names


def _add_doc(
    world: _World,
    doc_id: str,
    doc_type: str,
    title: str,
    text: str,
    *,
    department: str,
    region: str,
    acl: tuple[str, ...] = ("public",),
    extra: dict[str, Scalar] | None = None,
) -> dict[str, Any]:
    rng = world.rng
    # Derived from the seeded rng, never the clock: the same seed gives the same bytes.
    stamp = datetime(2022, 1, 3, 9) + timedelta(days=rng.randrange(900), hours=rng.randrange(9))
    metadata: dict[str, Scalar] = {"doc_type": doc_type, "department": department, "region": region}
    metadata.update(extra or {})
    doc = Document(
        id=doc_id,
        text=text,
        title=title,
        acl=acl,
        metadata=metadata,
        updated_at=stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
    ).to_dict()
    world.docs.append(doc)
    return doc


def _fill(rng: random.Random, templates: tuple[str, ...], **values: Any) -> str:
    return rng.choice(templates).format(**values)


# ---------------------------------------------------------------- PII values


def _phone(rng: random.Random) -> str:
    exchange = rng.choice([e for e in range(200, 1000) if e != 555 and e % 100 != 11])
    return f"({rng.choice(V.AREA_CODES)}) {exchange}-{rng.randrange(10000):04d}"


def _ssn(rng: random.Random) -> str:
    # Area 5xx avoids the never-issued 000/666/9xx ranges; group and serial never zero.
    while True:
        ssn = f"5{rng.randrange(100):02d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
        if len(set(ssn.replace("-", ""))) > 1:
            return ssn


def _luhn_check_digit(digits: str) -> str:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 0:  # these get doubled once the check digit is appended
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return str((10 - total % 10) % 10)


def _credit_card(rng: random.Random) -> str:
    prefix = rng.choice(("4", "51", "53", "55"))  # Visa / Mastercard ranges Presidio knows
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(15 - len(prefix)))
    number = body + _luhn_check_digit(body)
    return " ".join(number[i : i + 4] for i in range(0, 16, 4))


def _iban(rng: random.Random) -> str:
    bank = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
    bban = bank + "".join(str(rng.randrange(10)) for _ in range(14))
    # ISO 13616: move country + "00" to the end, letters to numbers, 98 - (n mod 97).
    numeric = "".join(str(int(c, 36)) for c in bban + "GB00")
    return f"GB{98 - int(numeric) % 97:02d}{bban}"


def _address(rng: random.Random) -> str:
    town, state, zip_prefix = rng.choice(V.US_TOWNS)
    return (
        f"{rng.randint(12, 9899)} {rng.choice(V.STREETS)} {rng.choice(V.STREET_KINDS)}, "
        f"{town}, {state} {zip_prefix}{rng.randrange(100):02d}"
    )


def _email(person: str, domain: str) -> str:
    return person.lower().replace(" ", ".") + "@" + domain


def _contact(world: _World, domain: str) -> str:
    person = world.person()
    email = world.plant("EMAIL_ADDRESS", _email(person, domain))
    phone = world.plant("PHONE_NUMBER", _phone(world.rng))
    return f"{person}, {email}, {phone}"


# ---------------------------------------------------------------- documents


def _profiles(world: _World) -> None:
    rng = world.rng
    for i, c in enumerate(world.companies):
        blurb = V.SECTOR_BLURB[c.sector]
        article = "an" if blurb[0] in "aeiou" else "a"
        text = _fill(
            rng,
            V.PROFILE_TEXT,
            name=c.name,
            blurb=blurb,
            a_blurb=f"{article} {blurb}",
            city=c.city,
            founded=c.founded,
            ceo=world.person(),
            scientist=world.person(),
            staff=rng.randrange(120, 9000, 10),
        )
        doc = _add_doc(
            world,
            f"profile-{i:03d}",
            "company_profile",
            f"{c.name} company profile",
            text,
            department="communications",
            region=c.region,
            extra={"company": c.name},
        )
        world.doc_of["profile", c.name] = doc
        world.fact("founded", company=c, doc=doc)


def _product_docs(world: _World) -> None:
    rng = world.rng
    for i, c in enumerate(world.companies):
        year = max(c.founded + 1, rng.randint(2005, 2023))
        if c.sector == "pharma":
            condition = rng.choice(V.CONDITIONS)
            text = _fill(
                rng,
                V.DRUG_TEXT,
                agency=rng.choice(V.DRUG_AGENCIES),
                product=c.product,
                name=c.name,
                condition=condition,
                month=rng.choice(V.MONTHS),
                year=year,
                city=c.city,
                share=rng.randint(38, 81),
            )
            doc = _add_doc(
                world,
                f"drug-{i:03d}",
                "drug_approval",
                f"Approval notice: {c.product}",
                text,
                department="regulatory_affairs",
                region=c.region,
                extra={"company": c.name},
            )
            world.fact("condition", company=c, doc=doc, condition=condition)
        else:
            text = _fill(
                rng,
                V.PRODUCT_TEXT,
                product=c.product,
                name=c.name,
                city=c.city,
                year=year,
                price=rng.randrange(400, 90000, 50),
            )
            doc = _add_doc(
                world,
                f"product-{i:03d}",
                "product_sheet",
                f"{c.product} product sheet",
                text,
                department="engineering",
                region=c.region,
                extra={"company": c.name},
            )
        world.doc_of["product", c.name] = doc
        world.fact("maker", company=c, doc=doc)


def _acquisitions(world: _World) -> None:
    rng = world.rng
    for i, (buyer, target) in enumerate(_acquisition_pairs(world)):
        year = rng.randint(max(2012, buyer.founded + 1, target.founded + 1), 2024)
        text = _fill(
            rng,
            V.ACQUISITION_TEXT,
            city=buyer.city,
            month=rng.choice(V.MONTHS),
            year=year,
            buyer=buyer.name,
            target=target.name,
            value=rng.randrange(40, 2400, 5),
            contact=_contact(world, buyer.domain),
        )
        doc = _add_doc(
            world,
            f"press-{i:03d}",
            "press_release",
            f"{buyer.name} acquires {target.name}",
            text,
            department="communications",
            region=buyer.region,
            extra={"company": buyer.name},
        )
        world.fact("acquisition", buyer=buyer, target=target, doc=doc)


def _acquisition_pairs(world: _World) -> list[tuple[_Company, _Company]]:
    """Buyer/target pairs within a sector; buyers and targets are disjoint and each target
    is bought once, so "the company that acquired X" names exactly one company."""
    pairs: list[tuple[_Company, _Company]] = []
    sectors = sorted(V.SECTOR_SUFFIXES)
    for turn, sector in enumerate(sectors):
        members = world.rng.sample(
            [c for c in world.companies if c.sector == sector],
            len([c for c in world.companies if c.sector == sector]),
        )
        deals = N_ACQUISITIONS // len(sectors) + (turn < N_ACQUISITIONS % len(sectors))
        pairs.extend(zip(members[:deals], members[deals : 2 * deals], strict=True))
    return pairs


def _other_press(world: _World) -> None:
    rng = world.rng
    for i in range(N_OTHER_PRESS):
        c, partner = rng.sample(world.companies, 2)
        text = _fill(
            rng,
            V.OTHER_PRESS_TEXT,
            name=c.name,
            partner=partner.name,
            city=c.city,
            new_city=rng.choice(V.CITIES[rng.choice(sorted(V.CITIES))]),
            contact=_contact(world, c.domain),
        )
        _add_doc(
            world,
            f"press-{N_ACQUISITIONS + i:03d}",
            "press_release",
            f"{c.name} announcement",
            text,
            department="communications",
            region=c.region,
            extra={"company": c.name},
        )


def _regulations(world: _World) -> None:
    rng = world.rng
    for i, (name, sector, agency) in enumerate(V.REGULATIONS):
        year = rng.randint(2008, 2022)
        text = _fill(
            rng,
            V.REGULATION_TEXT,
            regulation=name,
            agency=agency,
            year=year,
            sector=sector,
            duty=V.REGULATION_DUTIES[sector],
            fine=rng.randint(2, 60),
        )
        doc = _add_doc(
            world,
            f"regulation-{i:03d}",
            "regulation_summary",
            name,
            text,
            department="regulatory_affairs",
            region="global",
        )
        world.fact("regulation", name=name, agency=agency, year=year, doc=doc)


def _legal_opinions(world: _World) -> None:
    rng = world.rng
    for i, c in enumerate(rng.sample(world.companies, N_LEGAL)):
        regulation = rng.choice([r for r in V.REGULATIONS if r[1] == c.sector])[0]
        text = _fill(
            rng,
            V.LEGAL_TEXT,
            name=c.name,
            counsel=world.person(),
            firm=rng.choice(V.LAW_FIRMS),
            product=c.product,
            regulation=regulation,
            phone=world.plant("PHONE_NUMBER", _phone(rng)),
        )
        # Every fifth opinion concerns employment practice, so HR may read it too.
        acl = ("legal", "hr") if i % 5 == 0 else ("legal",)
        doc = _add_doc(
            world,
            f"legal-{i:03d}",
            "legal_opinion",
            f"Legal opinion: {c.product}",
            text,
            department="legal",
            region=c.region,
            acl=acl,
            extra={"company": c.name},
        )
        world.fact("legal", company=c, regulation=regulation, doc=doc)


def _finance_memos(world: _World) -> None:
    rng = world.rng
    for i, c in enumerate(rng.sample(world.companies, N_FINANCE)):
        fiscal = rng.randint(2020, 2024)
        revenue = f"${rng.randrange(150, 99000) / 10:,.1f} million"
        preparer = world.person()
        text = _fill(
            rng,
            V.FINANCE_TEXT,
            name=c.name,
            fiscal=fiscal,
            revenue=revenue,
            growth=rng.randint(-8, 35),
            margin=rng.randint(4, 31),
            iban=world.plant("IBAN_CODE", _iban(rng)),
            card=world.plant("CREDIT_CARD", _credit_card(rng)),
            preparer=preparer,
            email=world.plant("EMAIL_ADDRESS", _email(preparer, c.domain)),
        )
        # Every eighth memo is shared with legal for disclosure review.
        acl = ("finance", "legal") if i % 8 == 0 else ("finance",)
        doc = _add_doc(
            world,
            f"finance-{i:03d}",
            "finance_memo",
            f"{c.name} fiscal {fiscal} memo",
            text,
            department="finance",
            region=c.region,
            acl=acl,
            extra={"company": c.name},
        )
        world.fact("revenue", company=c, fiscal=fiscal, revenue=revenue, doc=doc)


def _hr_records(world: _World) -> None:
    rng = world.rng
    for i in range(N_HR):
        c = rng.choice(world.companies)
        department = rng.choice(sorted(V.JOB_TITLES))
        position = rng.choice(V.JOB_TITLES[department])
        employee_id = f"EMP-{10000 + i * 37 + rng.randrange(37)}"  # increasing, so unique
        person = world.person()
        card = ""
        if i % 3 == 0:
            card = f" Corporate card on file: {world.plant('CREDIT_CARD', _credit_card(rng))}."
        text = _fill(
            rng,
            V.HR_TEXT,
            employee_id=employee_id,
            person=person,
            name=c.name,
            joined=rng.randint(max(c.founded, 2000), 2023),
            position=position,
            department=department.replace("_", " "),
            city=c.city,
            review=rng.choice(("exceeds expectations", "meets expectations", "strong")),
            email=world.plant("EMAIL_ADDRESS", _email(person, c.domain)),
            phone=world.plant("PHONE_NUMBER", _phone(rng)),
            address=world.plant("STREET_ADDRESS", _address(rng)),
            ssn=world.plant("US_SSN", _ssn(rng)),
            card=card,
        )
        doc = _add_doc(
            world,
            f"hr-{i:03d}",
            "hr_record",
            f"Employee record {employee_id}",
            text,
            department=department,
            region=c.region,
            acl=("hr",),
            extra={"company": c.name},
        )
        world.fact("employee", company=c, employee_id=employee_id, position=position, doc=doc)


# ---------------------------------------------------------------- questions


class _Candidate(NamedTuple):
    question: str
    answer: str
    docs: list[dict[str, Any]]  # gold evidence, bridge document first
    region: str


def _questions(world: _World) -> list[dict[str, Any]]:
    candidates = _question_candidates(world)
    rows: list[dict[str, Any]] = []
    for template, quota in (_TWO_HOP_QUOTA | _ONE_HOP_QUOTA).items():
        for candidate in world.rng.sample(candidates[template], quota):
            rows.append(_qa_row(len(rows), candidate))
    return rows


def _question_candidates(world: _World) -> dict[str, list[_Candidate]]:
    """Every question the world can answer, per template; quotas pick from these."""
    facts, doc_of = world.facts, world.doc_of
    cand: dict[str, list[_Candidate]] = {k: [] for k in _TWO_HOP_QUOTA | _ONE_HOP_QUOTA}

    def add(template: str, question: str, answer: object, docs: list[dict], region: str) -> None:
        cand[template].append(_Candidate(question, str(answer), docs, region))

    for a in facts["acquisition"]:
        buyer, target, press = a["buyer"], a["target"], a["doc"]
        buyer_product, target_product = (
            doc_of["product", buyer.name],
            doc_of["product", target.name],
        )
        add(
            "acq_product",
            f"Which {buyer.product_kind} is made by the company that acquired {target.name}?",
            buyer.product,
            [press, buyer_product],
            buyer.region,
        )
        add(
            "acq_target_product",
            f"Which company acquired the maker of {target.product}?",
            buyer.name,
            [target_product, press],
            buyer.region,
        )
        add(
            "acq_founded",
            f"In what year was the company that acquired {target.name} founded?",
            buyer.founded,
            [press, doc_of["profile", buyer.name]],
            buyer.region,
        )
        add("acquirer", f"Which company acquired {target.name}?", buyer.name, [press], buyer.region)
    regulations = {r["name"]: r for r in facts["regulation"]}
    for legal in facts["legal"]:
        c, reg = legal["company"], regulations[legal["regulation"]]
        add(
            "legal_agency",
            f"Which agency issued the regulation that counsel found applies to {c.product}?",
            reg["agency"],
            [legal["doc"], reg["doc"]],
            c.region,
        )
        add(
            "legal_reg",
            f"Which regulation did counsel conclude applies to {c.product}?",
            reg["name"],
            [legal["doc"]],
            c.region,
        )
    for e in facts["employee"]:
        c, employee = e["company"], e["employee_id"]
        add(
            "hr_product",
            f"Which {c.product_kind} is made by the company that employs {employee}?",
            c.product,
            [e["doc"], doc_of["product", c.name]],
            c.region,
        )
        add(
            "position",
            f"What position does employee {employee} hold?",
            e["position"],
            [e["doc"]],
            c.region,
        )
    for r in facts["revenue"]:
        c = r["company"]
        add(
            "product_revenue",
            f"What revenue did the maker of {c.product} report for fiscal {r['fiscal']}?",
            r["revenue"],
            [doc_of["product", c.name], r["doc"]],
            c.region,
        )
        add(
            "revenue",
            f"What revenue did {c.name} report for fiscal {r['fiscal']}?",
            r["revenue"],
            [r["doc"]],
            c.region,
        )
    for m in facts["maker"]:
        c = m["company"]
        add("maker", f"Which company manufactures {c.product}?", c.name, [m["doc"]], c.region)
    for m in facts["condition"]:
        c = m["company"]
        add(
            "condition",
            f"What condition is {c.product} approved to treat?",
            m["condition"],
            [m["doc"]],
            c.region,
        )
    for p in facts["founded"]:
        c = p["company"]
        add("founded", f"In what year was {c.name} founded?", c.founded, [p["doc"]], c.region)
    for r in facts["regulation"]:
        add(
            "reg_agency", f"Which agency issued the {r['name']}?", r["agency"], [r["doc"]], "global"
        )
        add(
            "reg_year",
            f"In what year did the {r['name']} take effect?",
            r["year"],
            [r["doc"]],
            "global",
        )
    return cand


def _qa_row(index: int, candidate: _Candidate) -> dict[str, Any]:
    question, answer, docs, region = candidate
    # The answer must be readable in the gold evidence, or the question is unanswerable.
    answer_docs = [d for d in docs if answer in d["text"]]
    if not answer_docs:
        raise RuntimeError(f"demo QA {index}: answer not in its supporting documents")
    return {
        "id": f"demo-q{index:03d}",
        "question": question,
        "answers": [answer],
        "supporting_ids": [d["id"] for d in docs],
        "metadata": {
            "hops": len(docs),
            # The answer-bearing document's type is the slice: it is what retrieval must find.
            "doc_type": answer_docs[-1]["metadata"]["doc_type"],
            "region": region,
            # "restricted" when some gold document is not public: answerable only with groups.
            "access": "public" if all("public" in d["acl"] for d in docs) else "restricted",
        },
    }
