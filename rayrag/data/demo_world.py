"""The demo corpus's world: its companies and people, the documents' bookkeeping, and the planted
identifiers (phones, SSNs, Luhn-valid cards, mod-97 IBANs, addresses, e-mails).

Everything draws from one seeded `random.Random`, in a fixed order, so a seed gives the same
bytes; the document kinds (`demo_documents.py`) and the questions (`demo_questions.py`) read
and extend the `_World` built here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rayrag.data import demo_vocab as V
from rayrag.types import Document, Scalar

N_COMPANIES = 48


N_ACQUISITIONS = 16


N_OTHER_PRESS = 16


N_LEGAL = 30


N_FINANCE = 40


N_HR = 90


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
