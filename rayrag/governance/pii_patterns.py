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
* International forms, measured with `pii_eval.py` on presidio-research's generated set:
  European/Latin-American address blocks, units, military mail, postal codes, loose phone
  shapes, honorific + name, a country gazetteer, company legal forms, numeric dates, URLs.
  Each is checked against prose too (HotpotQA passages): "30 July 1970", "2000 and 2008",
  "1938-1940" or "away.Then" must stay text.
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
        rf"\b(?:\d{{1,5}}\s+)?\d{{1,6}}\s+(?:{_NOT_PROSE}{_WORD}\s+){{1,4}}(?:{suffix})\b\.?"
        r"(?:,?\s+(?:Apt|Suite|Unit|#)\.?\s*[\w-]+)?"
        r"(?:,\s*[A-Z][A-Za-z]+(?:\s[A-Z][A-Za-z]+)*,\s*[A-Z]{2}(?:\s+\d{5}(?:-\d{4})?)?)?"
    )


def person_name_pattern() -> str:
    """A gazetteer given name, an optional middle initial, a capitalised surname."""
    given = "|".join(sorted(set(GIVEN_NAMES), key=len, reverse=True))
    return rf"\b(?:{given})\s+(?:[A-Z]\.\s+)?{_SURNAME}\b"




# ---------------------------------------------------------------------- international formats
# Evaluated with rayrag/governance/pii_eval.py on presidio-research's generated set, where most
# address tokens are European/Latin-American ("55 Školní 645", "Rua Papoula 1998\nHOLUM\n, nan\n
# 01344") and many phone numbers fail phonenumbers' region validation ("(85) 5986-8343").
# Presidio compiles patterns with IGNORECASE | MULTILINE | DOTALL, so these avoid `.`.

UNIT_WORDS = ("Apt", "Apartment", "Suite", "Ste", "Unit", "Flat", "Room", "Floor")
HONORIFICS = ("Mr", "Mrs", "Ms", "Miss", "Mx", "Dr", "Prof", "Sir", "Dame", "Madam", "Mme", "Mlle",
              "Herr", "Frau", "Sr", "Sra", "Srta", "Rev", "Fr")

# Sovereign states and common short forms: a gazetteer of common words, matched case-
# insensitively because chat text often lowercases them ("moving to bahrain").
COUNTRIES = (
    "Afghanistan|Albania|Algeria|Andorra|Angola|Antigua and Barbuda|Argentina|Armenia|Australia|"
    "Austria|Azerbaijan|Bahamas|Bahrain|Bangladesh|Barbados|Belarus|Belgium|Belize|Benin|Bhutan|"
    "Bolivia|Bosnia and Herzegovina|Botswana|Brazil|Brunei|Bulgaria|Burkina Faso|Burundi|Cambodia|"
    "Cameroon|Canada|Cape Verde|Central African Republic|Chad|Chile|China|Colombia|Comoros|Congo|"
    "Costa Rica|Croatia|Cuba|Cyprus|Czech Republic|Czechia|Denmark|Djibouti|Dominica|"
    "Dominican Republic|East Timor|Ecuador|Egypt|El Salvador|Equatorial Guinea|Eritrea|Estonia|"
    "Eswatini|Ethiopia|Fiji|Finland|France|Gabon|Gambia|Georgia|Germany|Ghana|Greece|Grenada|"
    "Guatemala|Guinea|Guinea-Bissau|Guyana|Haiti|Honduras|Hungary|Iceland|India|Indonesia|Iran|Iraq|"
    "Ireland|Israel|Italy|Ivory Coast|Jamaica|Japan|Jordan|Kazakhstan|Kenya|Kiribati|North Korea|"
    "South Korea|Korea|Kosovo|Kuwait|Kyrgyzstan|Laos|Latvia|Lebanon|Lesotho|Liberia|Libya|"
    "Liechtenstein|Lithuania|Luxembourg|Macedonia|North Macedonia|Madagascar|Malawi|Malaysia|"
    "Maldives|Mali|Malta|Marshall Islands|Mauritania|Mauritius|Mexico|Micronesia|Moldova|Monaco|"
    "Mongolia|Montenegro|Morocco|Mozambique|Myanmar|Namibia|Nauru|Nepal|Netherlands|New Zealand|"
    "Nicaragua|Niger|Nigeria|Norway|Oman|Pakistan|Palau|Palestine|Panama|Papua New Guinea|Paraguay|"
    "Peru|Philippines|Poland|Portugal|Qatar|Romania|Russia|Rwanda|Saint Kitts and Nevis|Saint Lucia|"
    "Saint Vincent and the Grenadines|Samoa|San Marino|Sao Tome and Principe|Saudi Arabia|Senegal|"
    "Serbia|Seychelles|Sierra Leone|Singapore|Slovakia|Slovenia|Solomon Islands|Somalia|"
    "South Africa|South Sudan|Spain|Sri Lanka|Sudan|Suriname|Swaziland|Sweden|Switzerland|Syria|"
    "Taiwan|Tajikistan|Tanzania|Thailand|Togo|Tonga|Trinidad and Tobago|Tunisia|Turkey|Turkmenistan|"
    "Tuvalu|Uganda|Ukraine|United Arab Emirates|United Kingdom|United States|Uruguay|Uzbekistan|"
    "Vanuatu|Vatican City|Venezuela|Vietnam|Yemen|Zambia|Zimbabwe|USA|UK"
).split("|")

# Words that occur between two numbers in prose ("2000 and 2008", "30 July 1970", "79 films
# between 1915") but not in street names; a street word may be none of them.
PROSE_WORDS = (
    "and", "or", "to", "of", "in", "the", "a", "an", "for", "from", "with", "between", "as", "by",
    "until", "on", "at", "is", "was", "were", "are", "be", "been", "than", "per", "about", "over",
    "under", "after", "before", "since", "during", "into", "out", "up", "down", "more", "less",
    "people", "years", "year", "times", "points", "goals", "games", "matches", "films", "episodes",
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December", "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep",
    "Sept", "Oct", "Nov", "Dec", "AD", "BC", "BCE", "CE", "season", "seasons", "km", "mi", "kg",
    "m", "ft", "miles", "kilometres", "kilometers", "metres", "meters", "feet", "percent", "million",
    "billion", "thousand", "hundred", "its", "his", "her", "their", "students", "votes", "through",
    "that", "which", "who", "when", "where", "also", "has", "had", "have", "will", "would",
    "population", "off", "accumulating", "runs",
)
_NOT_PROSE = r"(?!(?:" + "|".join(PROSE_WORDS) + r")\b)"
_ANY_WORD = _NOT_PROSE + r"[^\W\d_][\w'’-]*\.?"  # a word in any script, maybe abbreviated ("Str.")
_HSPACE = r"[ \t]+"


def international_address_pattern() -> str:
    """Number, 1–5 words, number ("55 Školní 645", "09 R Cachoeira 112"; a second leading
    number is a building: "21 170 London Place"), then an optional unit ("Apt. 626") and up
    to four short address lines (city, ", LA", "Mali 44998"), quoted or bulleted or not."""
    unit = "|".join(UNIT_WORDS)
    line = r"[ \t>?*•-]*,?[ \t]*[\w'’.-]+(?:[ \t]+[\w'’.-]+){0,4}[ \t]*"
    return (
        rf"\b(?:\d{{1,5}}{_HSPACE})?\d{{1,5}}{_HSPACE}(?:{_ANY_WORD}{_HSPACE}){{1,5}}\d{{1,5}}[a-z]?\b\.?"
        rf"(?=[ \t]*(?:$|[,;\n]|\.(?:\s|$)|(?:{unit})\b|[^\W\d_]+[ \t]*(?:$|[,\n])))"
        rf"(?:(?:,?{_HSPACE}|[ \t]*\n[ \t>?*•-]*)(?:{unit})\.?[ \t]*#?\d{{1,5}}\b)?"
        rf"(?:(?:[ \t]*\n|,){line}){{0,4}}"
    )


def military_address_pattern() -> str:
    """US military mail: "PSC 8950, Box 4847\nAPO AP 62737", "USS Dam\nFPO AE 94560"."""
    return (
        r"\b(?:(?:PSC|CMR|Unit)[ \t]+\d{1,5},?[ \t]+Box[ \t]+\d{1,5}|USNS?[ \t]+[^\W\d_]+)"
        r"[ \t]*[\n,][ \t]*(?:APO|FPO|DPO)[ \t]+A[AEP][ \t]+\d{5}\b"
    )


def line_end_postal_code_pattern() -> str:
    """A 5-digit code after a word and ending its line ("Greece 79976"): the last line of an
    address block (state or country, then the code)."""
    return r"(?<=[^\W\d_][ \t])\d{5}(?:-\d{4})?(?=[ \t]*$)"


def unit_pattern() -> str:
    """A bare apartment or suite number ("Suite 992", "Apt. 441")."""
    return rf"\b(?:{'|'.join(UNIT_WORDS)})\.?[ \t]*#?\d{{1,5}}\b"


def postal_code_pattern() -> str:
    """A 5-digit postal code (US ZIP+4 included; 4 digits would be years); weak alone,
    context words ("zip", "postal", "address") lift it."""
    return r"(?<![\d.,/:-])\b\d{5}(?:-\d{4})?\b(?![\d.,/:-]\d)"


def phone_pattern() -> str:
    """Loose phone shapes with at least 7 digits: "(85) 5986-8343", "0431 19 97 94",
    "833.719.3994x1887"; dates (slashes) and card numbers (no separators) stay out."""
    return (
        r"(?<![\w/.-])(?=(?:[^\d\n]{0,3}\d){7})"
        r"(?!(?:1[5-9]|20)\d\d[ ]?[-–][ ]?(?:(?:1[5-9]|20)\d\d|\d\d)\b)(?!\d{4}-\d\d-\d\d\b)"
        r"(?!\d{3,4}[-–]\d{3,4}(?![-–. ]?\d))"  # a bare range ("1100-1104"); "(85) 5986-8343" keeps its area code
        r"(?:\+\d{1,3}[ .-]?|00\d[ .-]?|001-)?(?:\(\d{1,4}\)[ .-]?)?"
        r"\d{2,4}(?:[ .-]\d{2,5}){1,3}(?:[ \t]?(?:x|ext\.?)[ \t]?\d{1,5})?\b(?![/-]\d)"
    )


def honorific_name_pattern() -> str:
    """An honorific and the one or two capitalised words after it ("Dr. Ana Ruiz", "mrs. Lee")."""
    # Case-sensitive except the honorific itself: the recognizer drops IGNORECASE.
    return rf"\b(?i:{'|'.join(HONORIFICS)})\b\.?[ \t]+{_SURNAME}(?:[ \t]+{_SURNAME})?"


def country_pattern() -> str:
    names = sorted(COUNTRIES, key=len, reverse=True)
    return r"\b(?:" + "|".join(re.escape(n).replace(r"\ ", r"[ \t]+") for n in names) + r")\b"


def numeric_date_pattern() -> str:
    """Full numeric dates and timestamps: 3/23/1940, 23.03.1940, 1993-01-04 14:56:41."""
    return (
        r"\b(?:\d{1,2}[/.]\d{1,2}[/.](?:19|20)\d{2}|(?:19|20)\d{2}-\d{2}-\d{2}"
        r"(?:[ T]\d{2}:\d{2}(?::\d{2})?)?)\b"
    )


def url_pattern() -> str:
    """A URL with a scheme or a www host ("http://www.TextFiction.de/"), up to whitespace,
    without trailing sentence punctuation."""
    return r"\b(?:https?://|ftp://|www\d{0,3}\.)[^\s<>\"'()]*[^\s<>\"'().,;:!?]"


def bare_domain_pattern() -> str:
    """A lowercase host under a common generic TLD ("marketgadgets.com"); case-sensitive so
    that sentences joined without a space ("date.It") are not domains."""
    return r"(?-i:\b[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:com|org|net|edu|gov|io|info|biz)\b)(?![.@\w])"


COMPANY_SUFFIXES = ("Ltd", "Limited", "Inc", "LLC", "LLP", "PLC", "Corp", "Corporation", "Co",
                    "GmbH", "AG", "SA", "BV", "NV", "Group", "Holdings", "Partners", "and Sons")


def company_pattern() -> str:
    """Capitalised words before a legal-form suffix ("Smith Ltd.", "Qado Energy Inc."), or
    the surname-list form of firms ("Davis, Reynolds and Williamson", "Mayo-Walters")."""
    suffix = "|".join(s.replace(" ", r"[ \t]+") for s in COMPANY_SUFFIXES)
    name = r"[A-Z][\w&'’-]*"
    return (
        rf"\b{name}(?:[ \t]+{name}){{0,3}},?[ \t]+(?:{suffix})\b\.?"
        rf"|\b{_SURNAME},[ \t]+{_SURNAME},?[ \t]+and[ \t]+{_SURNAME}\b"
    )


# Compiled once for callers that check text without Presidio (tests, audits).
STREET_ADDRESS_RE = re.compile(street_address_pattern())
PERSON_NAME_RE = re.compile(person_name_pattern())
