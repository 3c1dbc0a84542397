"""What the analyzer found, made into spans worth redacting: pure functions over Presidio's
`RecognizerResult`s and the text.

A PERSON span with a digit in it or an ORGANIZATION that is a field label ("SSN") is
dropped; a name span ends before its possessive ("Maria Lopez's" -> "Maria Lopez", so the
question and the documents get the same pseudonym); an address span takes its tail (unit,
city, postcode); overlapping spans resolve to the longest, then the highest score; long
texts are analysed in segments that end at sentence or line boundaries.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rayrag.index.kg_extract import IDENTIFIER_RE

if TYPE_CHECKING:  # presidio is imported lazily by the Redactor, never at import time
    from presidio_analyzer import RecognizerResult

_TAIL_STEP = re.compile(r"(?:[ \t]*\n[ \t]*|[ \t]*,[ \t]*|[ \t]+)+([^\s,]+)")


MAX_TAIL_TOKENS = 5


_NAME_TYPES = frozenset({"PERSON", "LOCATION", "NRP"})


# Field labels the NER reads as organisations ("SSN: ...", "IBAN ...", "CVV"): never a name.
_FIELD_LABELS = frozenset(
    {
        "SSN",
        "IBAN",
        "BIC",
        "SWIFT",
        "CVV",
        "CVC",
        "PIN",
        "DL",
        "VAT",
        "EUR",
        "USD",
        "GBP",
        "Driver",
        "IP",
        "TIN",
        "EIN",
    }
)


def drop_identifier_names(text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Drop name-type spans (PERSON, LOCATION, NRP) that are an identifier: the NER reads a
    short question's "EMP-11906" as a person, the same id inside its record as nothing, so the
    question's pseudonym would never match the document. A name has no digits; a record id is
    not personal data by itself (the pattern recognizers still catch SSNs, cards and IBANs).
    An identifier is the KG extractor's: upper-case letters and digits in hyphen-joined parts.
    Also dropped: a PERSON or NRP span with a digit in it ("Mobile +1-794-730-5815", "expiry
    09/27": the NER swallowing a number, which then hides the phone it is), and an
    ORGANIZATION that is a field label ("SSN", "IBAN")."""
    kept = []
    for r in results:
        value = text[r.start : r.end].strip()
        if r.entity_type in _NAME_TYPES and IDENTIFIER_RE.fullmatch(value):
            continue
        if r.entity_type in ("PERSON", "NRP") and any(c.isdigit() for c in value):
            continue
        if r.entity_type == "ORGANIZATION" and value in _FIELD_LABELS:
            continue
        kept.append(r)
    return kept


_POSSESSIVE = re.compile(r"(?:['’]s|s['’])$")


def trim_possessives(text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Name-type spans without a trailing possessive: spaCy reads "Maria Lopez's" as the
    person, and the pseudonym of "maria lopez's" would not match the one her own documents
    carry ("Maria Lopez is ..."). "James'" keeps its s: only the apostrophe goes."""
    from presidio_analyzer import RecognizerResult

    out = []
    for r in results:
        value = text[r.start : r.end]
        if r.entity_type in _NAME_TYPES and len(value) > 3 and _POSSESSIVE.search(value):
            cut = 2 if value[-2] in "'’" else 1
            r = RecognizerResult(
                r.entity_type,
                r.start,
                r.end - cut,
                r.score,
                r.analysis_explanation,
                r.recognition_metadata,
            )
        out.append(r)
    return out


def _tail_token(token: str) -> bool:
    """A word an address ends with: a place name (capitalised, any script), a region code,
    a postal code, or the "nan" of an empty field in generated data."""
    if token == "nan" or (token.isdigit() and 4 <= len(token) <= 6):
        return True
    word = token.rstrip(".")
    letters = word.replace("-", "").replace("'", "").replace("’", "")
    return bool(letters) and letters.isalpha() and word[0].isupper()


def extend_address_tails(text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Street addresses run on into their city, region, postal code and country ("12 Main
    Street Apt. 4\nSpringfield\n, IL\n 62704"), which the patterns and the NER see only in
    part: extend each STREET_ADDRESS span over up to MAX_TAIL_TOKENS such words that follow
    it, separated by spaces, commas or line breaks. A sentence end ("." then space) stops it."""
    if not any(r.entity_type == "STREET_ADDRESS" for r in results):
        return results
    from presidio_analyzer import RecognizerResult

    extended = []
    for result in results:
        if result.entity_type == "STREET_ADDRESS" and not text[result.start : result.end].endswith(
            (". ", ".")
        ):
            end, taken = result.end, 0
            while taken < MAX_TAIL_TOKENS:
                match = _TAIL_STEP.match(text, end)
                if match is None or not _tail_token(match.group(1)):
                    break
                end, taken = match.end(), taken + 1
                if match.group(1).endswith(".") and len(match.group(1).rstrip(".")) > 3:
                    break  # "Springfield." ends a sentence
            if end != result.end:
                result = RecognizerResult(
                    result.entity_type,
                    result.start,
                    end,
                    result.score,
                    result.analysis_explanation,
                    result.recognition_metadata,
                )
        extended.append(result)
    return extended


def _merge_same_type(results: Sequence[RecognizerResult]) -> list[RecognizerResult]:
    """Overlapping spans of one entity type become their union (the highest score).

    Two recognizers often see the same person differently ("Lucas" by NER, "Lucas Rivera"
    by the gazetteer); choosing one would leave the rest of the name in the text."""
    from presidio_analyzer import RecognizerResult

    merged: list[RecognizerResult] = []
    by_type: dict[str, list[RecognizerResult]] = {}
    for result in results:
        by_type.setdefault(result.entity_type, []).append(result)
    for spans in by_type.values():
        spans.sort(key=lambda r: (r.start, -r.end))
        current = spans[0]
        for span in spans[1:]:
            if span.start < current.end:
                if span.end > current.end or span.score > current.score:
                    current = RecognizerResult(
                        current.entity_type,
                        current.start,
                        max(current.end, span.end),
                        max(current.score, span.score),
                        current.analysis_explanation,
                        current.recognition_metadata,
                    )
            else:
                merged.append(current)
                current = span
        merged.append(current)
    return merged


def resolve_overlaps(results: Sequence[RecognizerResult]) -> list[RecognizerResult]:
    """Non-overlapping spans: same-type overlaps merge into their union, then across types
    the highest score wins, then the longest, then the first.

    Greedy over the ranked spans with a sorted interval list: O(n log n) plus insertions,
    so documents with thousands of hits stay cheap.
    """
    results = _merge_same_type(results) if results else []
    ranked = sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start, r.entity_type))
    starts: list[int] = []
    ends: list[int] = []
    chosen: list[RecognizerResult] = []
    for result in ranked:
        if result.end <= result.start:
            continue
        slot = bisect.bisect_right(starts, result.start)
        if slot > 0 and ends[slot - 1] > result.start:
            continue  # overlaps the chosen span that starts at or before it
        if slot < len(starts) and starts[slot] < result.end:
            continue  # overlaps the chosen span that starts after it
        starts.insert(slot, result.start)
        ends.insert(slot, result.end)
        chosen.insert(slot, result)
    return chosen


def segments(text: str, limit: int) -> list[tuple[int, int]]:
    """Cut `text` into [start, end) pieces of at most `limit` chars at natural boundaries.

    Entities rarely cross a blank line or a sentence end, so cuts prefer those (searched in
    the second half of each window); an empty text has no pieces.
    """
    pieces: list[tuple[int, int]] = []
    start = 0
    while len(text) - start > limit:
        cut = -1
        for separator in ("\n\n", "\n", ". ", " "):
            found = text.rfind(separator, start + limit // 2, start + limit)
            if found != -1:
                cut = found + len(separator)
                break
        if cut == -1:
            cut = start + limit
        pieces.append((start, cut))
        start = cut
    if start < len(text):
        pieces.append((start, len(text)))
    return pieces


def normalise(value: str) -> str:
    """The form a pseudonym is computed over: NFKC, casefolded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())
