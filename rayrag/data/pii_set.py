"""A generated, labelled PII set for the identifiers every redaction policy must catch.

The shared presidio-research sample holds few of them, in few shapes (cards as bare 16
digits, IPv6 only uncompressed, no IBAN with spaces). This generator writes sentences in
presidio-research's JSON format (`full_text`, `spans` with `entity_type`, `entity_value`,
`start_position`, `end_position`) with the shapes real text carries:

- CREDIT_CARD: Visa, Mastercard (51-55 and the 2-series), Amex (4-6-5), Discover, JCB,
  Diners (4-6-4); bare, spaced or dashed; Luhn-valid.
- US_SSN: valid area/group/serial, dashed, spaced or bare (bare only beside "SSN").
- IBAN_CODE: eleven countries with their BBAN shapes and real mod-97 check digits; compact
  or in groups of four.
- EMAIL_ADDRESS, PHONE_NUMBER (US and international, extensions), IP_ADDRESS (IPv4, full
  and compressed IPv6), US_DRIVER_LICENSE (state formats, always with a licence context word).
- Negative sentences with numbers that are not PII (order ids, amounts, versions, times,
  ISBNs, tracking numbers): false positives show up as precision.

Sentences mix templates that name the identifier ("card number", "IBAN") with ones that do
not, so context words are not what the recall rests on. Same seed, same bytes; the tests
ship a held-back seed's file, and `rayrag eval pii --dataset` scores any seed's.

    >>> examples = generate_pii_set(400, seed=1)
    >>> examples[0]["spans"][0]["entity_type"]
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any

FIRST = [
    "James",
    "Maria",
    "Wei",
    "Aisha",
    "Lukas",
    "Sofia",
    "Kwame",
    "Elena",
    "Ravi",
    "Hannah",
    "Diego",
    "Yuki",
    "Olga",
    "Samuel",
    "Fatima",
    "Liam",
    "Chloe",
    "Mateo",
    "Ingrid",
    "Tariq",
]
LAST = [
    "Smith",
    "Garcia",
    "Chen",
    "Okafor",
    "Novak",
    "Rossi",
    "Mensah",
    "Petrova",
    "Sharma",
    "Becker",
    "Alvarez",
    "Tanaka",
    "Ivanova",
    "Cohen",
    "Haddad",
    "Murphy",
    "Dubois",
    "Silva",
    "Larsen",
    "Nasser",
]
DOMAINS = [
    "gmail.com",
    "outlook.com",
    "yahoo.co.uk",
    "proton.me",
    "example.org",
    "mail.acme-corp.com",
    "uni-hamburg.de",
    "fastmail.fm",
    "icloud.com",
    "company.co.jp",
]


def luhn_complete(digits: str) -> str:
    """`digits` plus the Luhn check digit that makes the whole number valid."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:  # every second digit from the right, counting the check digit as position 0
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return digits + str((10 - total % 10) % 10)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _group(number: str, sizes: list[int], sep: str) -> str:
    out, at = [], 0
    for size in sizes:
        out.append(number[at : at + size])
        at += size
    return sep.join(out)


# (network, prefix chooser, length, grouping)
_CARDS: list[tuple[str, Callable[[random.Random], str], int, list[int]]] = [
    ("visa", lambda r: "4", 16, [4, 4, 4, 4]),
    ("mastercard", lambda r: str(r.randint(51, 55)), 16, [4, 4, 4, 4]),
    ("mastercard2", lambda r: str(r.randint(2221, 2720)), 16, [4, 4, 4, 4]),
    ("amex", lambda r: r.choice(["34", "37"]), 15, [4, 6, 5]),
    ("discover", lambda r: r.choice(["6011", "65"]), 16, [4, 4, 4, 4]),
    ("jcb", lambda r: str(r.randint(3528, 3589)), 16, [4, 4, 4, 4]),
    ("diners", lambda r: r.choice(["36", "38"]), 14, [4, 6, 4]),
    ("visa13", lambda r: "4", 13, [4, 4, 5]),
    ("visa19", lambda r: "4", 19, [4, 4, 4, 4, 3]),
    ("maestro", lambda r: r.choice(["5018", "6304", "0604", "6759"]), 12, [4, 4, 4]),
    ("jcb15", lambda r: "1800", 15, [4, 6, 5]),
]


def card(rng: random.Random) -> str:
    _, prefix, length, sizes = rng.choice(_CARDS)
    start = prefix(rng)
    number = luhn_complete(start + _digits(rng, length - len(start) - 1))
    sep = rng.choice(["", " ", "-", " ", "-"])
    return number if not sep else _group(number, sizes, sep)


def ssn(rng: random.Random, bare: bool = False) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    group, serial = rng.randint(1, 99), rng.randint(1, 9999)
    parts = (f"{area:03d}", f"{group:02d}", f"{serial:04d}")
    return "".join(parts) if bare else rng.choice(["-", "-", " "]).join(parts)


# country -> BBAN shape: n digits, a upper letters, c upper alphanumerics
_IBAN_BBAN = {
    "GB": "4a14n",
    "DE": "18n",
    "FR": "10n11c2n",
    "ES": "20n",
    "IT": "1a10n12c",
    "NL": "4a10n",
    "BE": "12n",
    "CH": "5n12c",
    "AT": "16n",
    "IE": "4a14n",
    "PL": "24n",
}


def _bban(rng: random.Random, shape: str) -> str:
    out, count = [], ""
    for ch in shape:
        if ch.isdigit():
            count += ch
            continue
        alphabet = {
            "n": string.digits,
            "a": string.ascii_uppercase,
            "c": string.ascii_uppercase + string.digits,
        }[ch]
        out.append("".join(rng.choice(alphabet) for _ in range(int(count))))
        count = ""
    return "".join(out)


def iban(rng: random.Random) -> str:
    country = rng.choice(sorted(_IBAN_BBAN))
    bban = _bban(rng, _IBAN_BBAN[country])
    rearranged = bban + country + "00"
    check = 98 - int("".join(str(int(ch, 36)) for ch in rearranged)) % 97
    code = f"{country}{check:02d}{bban}"
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4)) if rng.random() < 0.5 else code


def email(rng: random.Random) -> str:
    first, last = rng.choice(FIRST).lower(), rng.choice(LAST).lower()
    local = rng.choice(
        [
            f"{first}.{last}",
            f"{first[0]}{last}",
            f"{first}_{last}{rng.randint(1, 99)}",
            f"{first}+news",
            f"{last}.{first[0]}",
        ]
    )
    return f"{local}@{rng.choice(DOMAINS)}"


def _us_number(rng: random.Random) -> tuple[str, str, str]:
    area = f"{rng.randint(2, 9)}{rng.choice([d for d in range(100) if d % 11 != 0 or d == 0]):02d}"
    return area, f"{rng.randint(2, 9)}{_digits(rng, 2)}", _digits(rng, 4)


def phone(rng: random.Random) -> str:
    a, b, c = _us_number(rng)
    shapes = [
        f"({a}) {b}-{c}",
        f"{a}-{b}-{c}",
        f"{a}.{b}.{c}",
        f"+1 {a} {b} {c}",
        f"+1-{a}-{b}-{c}",
        f"1-800-{b}-{c}",
        f"{a}-{b}-{c} x{rng.randint(10, 9999)}",
        f"({a}){b}-{c}",
        f"001-{a}-{b}-{c}x{rng.randint(10, 999)}",
        f"+1-{a}-{b}-{c}x{rng.randint(10, 9999)}",
        f"{a}.{b}.{c}x{rng.randint(10, 999)}",
        f"+44 20 {_digits(rng, 4)} {_digits(rng, 4)}",
        f"+44 7{_digits(rng, 3)} {_digits(rng, 6)}",
        f"+49 30 {_digits(rng, 7)}",
        f"+33 1 {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)}",
        f"+61 2 {_digits(rng, 4)} {_digits(rng, 4)}",
        f"+91 {rng.randint(7, 9)}{_digits(rng, 4)} {_digits(rng, 5)}",
    ]
    return rng.choice(shapes)


def ip(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.45:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    if kind < 0.7:
        return ":".join(groups)
    if kind < 0.8:
        return f"2001:db8::{rng.randint(1, 0xFFFF):x}"
    if kind < 0.9:
        return f"fe80::{':'.join(groups[4:])}"
    cut = rng.randint(1, 5)  # a run of zero groups folded into "::"
    return ":".join(groups[:cut]) + "::" + ":".join(groups[cut + rng.randint(1, 2) :])


def driver_licence(rng: random.Random) -> str:
    letter, letters = (
        rng.choice(string.ascii_uppercase),
        "".join(rng.choices(string.ascii_uppercase, k=2)),
    )
    return rng.choice(
        [
            f"{_digits(rng, 2)}-{_digits(rng, 3)}-{_digits(rng, 4)}",  # Colorado
            f"{letters}{_digits(rng, 6)}{letter}",  # Idaho
            (
                f"{letter}-{_digits(rng, 3)}-{_digits(rng, 3)}-{_digits(rng, 3)}-{_digits(rng, 3)}"
            ),  # Maryland
            f"{letter}{_digits(rng, 4)} {_digits(rng, 5)} {_digits(rng, 5)}",  # New Jersey
            f"{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 3)}",  # Pennsylvania
            f"{_digits(rng, 6)}-{_digits(rng, 3)}",  # Wyoming
            f"{letter}{_digits(rng, 7)}",  # California
            _digits(rng, 9),  # New York, many states
            f"{_digits(rng, 3)} {_digits(rng, 3)} {_digits(rng, 3)}",
            _digits(rng, 8),  # Texas
            (
                f"{letter}{_digits(rng, 3)}-{_digits(rng, 3)}-"
                f"{_digits(rng, 2)}-{_digits(rng, 3)}-{_digits(rng, 1)}"
            ),  # Florida
            f"{letter}{_digits(rng, 3)}-{_digits(rng, 4)}-{_digits(rng, 4)}",  # Illinois
            f"{letter}{_digits(rng, 12)}",  # Michigan, Minnesota
        ]
    )


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


# Templates: {X} is the labelled value, {N} a labelled PERSON. Half name the identifier's kind.
TEMPLATES: dict[str, tuple[Callable[[random.Random], str], list[str]]] = {
    "CREDIT_CARD": (
        card,
        [
            "Please charge my card {X} for the renewal.",
            "Card number: {X}, expiry 09/27.",
            "{N} paid with {X} yesterday.",
            "The refund goes back to {X} within five days.",
            "Use {X} for the hotel deposit.",
            "My Visa is {X} if the first one fails.",
            "Billing failed on {X}; please update it.",
            "{X}",
            "Payment method on file ends in the number {X}.",
            "Reservation guaranteed by {X} (CVV sent separately).",
        ],
    ),
    "US_SSN": (
        ssn,
        [
            "My social security number is {X}.",
            "SSN: {X}",
            "{N}'s SSN {X} was on the form.",
            "Tax ID {X} was rejected by the portal.",
            "Please verify {X} against the payroll record.",
            "The applicant listed {X} as their social.",
            "Employee {N}, social security no. {X}, starts Monday.",
            "{X} belongs to the claimant.",
        ],
    ),
    "IBAN_CODE": (
        iban,
        [
            "Wire the deposit to IBAN {X}.",
            "Account: {X}",
            "{N} asked us to pay into {X}.",
            "Our bank details changed to {X} from next month.",
            "Transfer to {X}, reference INV-2291.",
            "Refunds are sent to {X}.",
            "IBAN {X} (BIC DEUTDEFF)",
            "Please use {X} for the rent.",
        ],
    ),
    "EMAIL_ADDRESS": (
        email,
        [
            "Write to {X} for details.",
            "{N} <{X}>",
            "Contact: {X}",
            "cc {X} on the thread please",
            "Her address is {X}.",
            "Send the invoice to {X} by Friday.",
            "{X} replied within the hour.",
            "Unsubscribe {X} from the list.",
        ],
    ),
    "PHONE_NUMBER": (
        phone,
        [
            "Call me at {X}.",
            "Phone: {X}",
            "{N} can be reached on {X} after six.",
            "Mobile {X}",
            "Text {X} when you arrive.",
            "Our support line is {X}.",
            "Fax the form to {X}.",
            "{X} is the number on the booking.",
            "Leave a message on {X} if no one answers.",
        ],
    ),
    "IP_ADDRESS": (
        ip,
        [
            "The login came from {X}.",
            "Blocked {X} after five failed attempts.",
            "Host {X} responded slowly.",
            "{N} connected from {X} at 03:12.",
            "Requests from {X} exceeded the limit.",
            "Server address: {X}",
            "Ping {X} to check the route.",
            "Traffic to {X} was dropped by the firewall.",
        ],
    ),
    "US_DRIVER_LICENSE": (
        driver_licence,
        [
            "Driver's license number {X}",
            "{N}'s driver license: {X}",
            "DL# {X}",
            "Her driving licence number is {X}.",
            "License no. {X} was scanned at the desk.",
            "The driver's licence {X} expires next year.",
            "Provide your driver license ({X}) at pickup.",
            "Driver license id: {X}",
            "{N} showed a driving licence, number {X}.",
        ],
    ),
}

NEGATIVES = [
    "Order #{D6} ships on 12/04 and costs $1,249.99.",
    "Version 2.10.3 fixed the crash reported in ticket 4471.",
    "The meeting moved to 10:30 in room 3B.",
    "ISBN 978-0-306-40615-7 is out of print.",
    "Tracking number 1Z999AA10123456784 shows the parcel in transit.",
    "Invoice INV-{D6} totals 3,480 EUR.",
    "We sold {D4} units in Q3, up 12% from 2023.",
    "Flight BA{D4} departs at 07:45 from gate 22.",
    "The product code is SKU-{D6}-B.",
    "Model XR-{D4} draws 1.5 kW at 230 V.",
    "Chapter 11 starts on page {D3}.",
    "The sensor read 21.7 degrees at 14:02:33.",
]


def generate_pii_set(n: int, seed: int = 0, negative_share: float = 0.15) -> list[dict[str, Any]]:
    """`n` labelled sentences (presidio-research format), about `negative_share` of them
    without PII; identifier types in equal shares."""
    rng = random.Random(seed)
    kinds = sorted(TEMPLATES)
    out = []
    for i in range(n):
        if rng.random() < negative_share:
            text = (
                rng.choice(NEGATIVES)
                .replace("{D6}", _digits(rng, 6))
                .replace("{D4}", _digits(rng, 4))
                .replace("{D3}", str(rng.randint(100, 999)))
            )
            out.append({"full_text": text, "spans": [], "template_id": None, "metadata": None})
            continue
        kind = kinds[i % len(kinds)]
        make, templates = TEMPLATES[kind]
        template_id = rng.randrange(len(templates))
        text, spans = _fill(
            templates[template_id], {"X": (kind, make(rng)), "N": ("PERSON", _name(rng))}
        )
        out.append(
            {
                "full_text": text,
                "spans": spans,
                "template_id": f"{kind}:{template_id}",
                "metadata": None,
            }
        )
    return out


def _fill(template: str, values: dict[str, tuple[str, str]]) -> tuple[str, list[dict[str, Any]]]:
    text, spans, at = "", [], 0
    while True:
        start = template.find("{", at)
        if start < 0:
            return text + template[at:], spans
        end = template.index("}", start)
        text += template[at:start]
        kind, value = values[template[start + 1 : end]]
        spans.append(
            {
                "entity_type": kind,
                "entity_value": value,
                "start_position": len(text),
                "end_position": len(text) + len(value),
            }
        )
        text += value
        at = end + 1
