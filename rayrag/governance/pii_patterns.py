"""Patterns for PII that Presidio's stock recognizers miss, as plain regular expressions.

`redaction.py` (the only module that imports presidio) wraps these in Presidio
`PatternRecognizer`s:

* STREET_ADDRESS — US-style street addresses ("4204 Park Avenue, Tulsa, OK 74197").
  Presidio ships no street-address recognizer, and spaCy tags at most the city as a
  location, so the house number and street would survive redaction.
* PERSON (gazetteer) — a common given name followed by a capitalised surname
  ("Media contact: Lucas Rivera"). The small spaCy NER model misses names in terse
  contexts such as signatures and contact lines; a given-name gazetteer is the classic
  complement (the approach of name dictionaries in clinical de-identification, e.g.
  the MIT deid package). Given names that are also common English words (Will, May,
  Grant, Hope, ...) are left out so sentences are not mangled.
"""

from __future__ import annotations

import re

STREET_SUFFIXES = (
    "Street", "St", "Avenue", "Ave", "Road", "Rd", "Drive", "Dr", "Court", "Ct", "Lane", "Ln",
    "Boulevard", "Blvd", "Way", "Place", "Pl", "Terrace", "Ter", "Circle", "Cir", "Parkway",
    "Pkwy", "Highway", "Hwy", "Square", "Sq", "Trail", "Trl", "Alley", "Row", "Crescent",
)

# Common given names across English-speaking, Hispanic, European, African and Asian
# naming traditions. Deliberately excludes names that are everyday words.
GIVEN_NAMES = (
    "Aaron Abigail Adam Adrian Ahmed Aiden Aisha Alan Albert Alejandro Alex Alexander Alexandra "
    "Alice Alicia Alison Amanda Amber Amelia Amir Amy Ana Andrea Andrew Angela Anna Anne Anthony "
    "Antonio Arjun Ashley Ayesha Barbara Benjamin Beth Betty Brandon Brenda Brian Bruce Bryan "
    "Caleb Camila Carlos Carmen Carol Caroline Catherine Charles Charlotte Chen Cheng Chloe "
    "Christian Christina Christine Christopher Cindy Claire Daniel Daniela David Deborah Debra "
    "Denise Dennis Diana Diego Dmitri Donald Donna Dorothy Douglas Dylan Edward Elena Eli "
    "Elijah Elizabeth Ella Emily Emma Eric Erica Ethan Eugene Evelyn Fatima Fernando Fiona "
    "Francisco Gabriel Gabriela Gary George Gloria Gregory Hannah Harold Harper Hassan Heather "
    "Helen Henry Hiroshi Ibrahim Ingrid Isaac Isabel Isabella Ivan Jacob Jacqueline James Janet "
    "Janice Jason Javier Jeffrey Jennifer Jeremy Jessica Joan Jonathan Jorge Jose Joseph Joshua "
    "Juan Judith Julia Julie Justin Karen Katherine Kathleen Kelly Kenji Kenneth Kevin Kimberly "
    "Kwame Kyle Laura Lauren Leila Leonardo Liam Lily Linda Lisa Logan Lucas Lucia Luis Luke "
    "Madison Maria Marie Marilyn Martha Martin Mary Mason Matthew Maya Megan Mei Melissa Mia "
    "Michael Michelle Miguel Mohammed Muhammad Nancy Natalie Nathan Nicholas Nicole Noah Nora "
    "Obinna Olivia Omar Oscar Pablo Pamela Patricia Patrick Paul Paula Pedro Peter Priya Rachel "
    "Rafael Rahul Raj Rebecca Ricardo Richard Robert Roberto Ronald Ryan Samantha Samuel Sandra "
    "Sara Sarah Scott Sean Sebastian Sergei Sharon Shirley Sofia Sophia Stephanie Stephen Steven "
    "Susan Takeshi Teresa Thomas Timothy Tyler Valentina Victoria Vincent Virginia Walter Wei "
    "William Yuki Zachary Zainab Zoe"
).split()

_SURNAME = r"[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?"
_WORD = r"[A-Z][A-Za-z]+"


def street_address_pattern() -> str:
    """House number, 1–4 capitalised words, a street suffix; optional unit, city, state, ZIP."""
    suffix = "|".join(STREET_SUFFIXES)
    return (
        rf"\b\d{{1,6}}\s+(?:{_WORD}\s+){{1,4}}(?:{suffix})\b\.?"
        r"(?:,?\s+(?:Apt|Suite|Unit|#)\.?\s*[\w-]+)?"
        r"(?:,\s*[A-Z][A-Za-z]+(?:\s[A-Z][A-Za-z]+)*,\s*[A-Z]{2}(?:\s+\d{5}(?:-\d{4})?)?)?"
    )


def person_name_pattern() -> str:
    """A gazetteer given name, an optional middle initial, a capitalised surname."""
    given = "|".join(sorted(set(GIVEN_NAMES), key=len, reverse=True))
    return rf"\b(?:{given})\s+(?:[A-Z]\.\s+)?{_SURNAME}\b"


# Compiled once for callers that check text without Presidio (tests, audits).
STREET_ADDRESS_RE = re.compile(street_address_pattern())
PERSON_NAME_RE = re.compile(person_name_pattern())
