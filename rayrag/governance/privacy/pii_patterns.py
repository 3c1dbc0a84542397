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
    "Street",
    "St",
    "Avenue",
    "Ave",
    "Road",
    "Rd",
    "Drive",
    "Dr",
    "Court",
    "Ct",
    "Lane",
    "Ln",
    "Boulevard",
    "Blvd",
    "Way",
    "Place",
    "Pl",
    "Terrace",
    "Ter",
    "Circle",
    "Cir",
    "Parkway",
    "Pkwy",
    "Highway",
    "Hwy",
    "Square",
    "Sq",
    "Trail",
    "Trl",
    "Alley",
    "Row",
    "Crescent",
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
# Evaluated with rayrag/governance/privacy/pii_eval.py on presidio-research's generated set, where
# most address tokens are European/Latin-American ("55 Školní 645", "Rua Papoula 1998\nHOLUM\n,
# nan\n 01344") and many phone numbers fail phonenumbers' region validation ("(85) 5986-8343").
# Presidio compiles patterns with IGNORECASE | MULTILINE | DOTALL, so these avoid `.`.

UNIT_WORDS = ("Apt", "Apartment", "Suite", "Ste", "Unit", "Flat", "Room", "Floor")
HONORIFICS = (
    "Mr",
    "Mrs",
    "Ms",
    "Miss",
    "Mx",
    "Dr",
    "Prof",
    "Sir",
    "Dame",
    "Madam",
    "Mme",
    "Mlle",
    "Herr",
    "Frau",
    "Sr",
    "Sra",
    "Srta",
    "Rev",
    "Fr",
)

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
    "Guatemala|Guinea|Guinea-Bissau|Guyana|Haiti|Honduras|Hungary|Iceland|India|Indonesia|Iran|"
    "Iraq|Ireland|Israel|Italy|Ivory Coast|Jamaica|Japan|Jordan|Kazakhstan|Kenya|Kiribati|"
    "North Korea|South Korea|Korea|Kosovo|Kuwait|Kyrgyzstan|Laos|Latvia|Lebanon|Lesotho|Liberia|"
    "Libya|Liechtenstein|Lithuania|Luxembourg|Macedonia|North Macedonia|Madagascar|Malawi|Malaysia|"
    "Maldives|Mali|Malta|Marshall Islands|Mauritania|Mauritius|Mexico|Micronesia|Moldova|Monaco|"
    "Mongolia|Montenegro|Morocco|Mozambique|Myanmar|Namibia|Nauru|Nepal|Netherlands|New Zealand|"
    "Nicaragua|Niger|Nigeria|Norway|Oman|Pakistan|Palau|Palestine|Panama|Papua New Guinea|Paraguay|"
    "Peru|Philippines|Poland|Portugal|Qatar|Romania|Russia|Rwanda|Saint Kitts and Nevis|"
    "Saint Lucia|Saint Vincent and the Grenadines|Samoa|San Marino|Sao Tome and Principe|"
    "Saudi Arabia|Senegal|Serbia|Seychelles|Sierra Leone|Singapore|Slovakia|Slovenia|"
    "Solomon Islands|Somalia|South Africa|South Sudan|Spain|Sri Lanka|Sudan|Suriname|Swaziland|"
    "Sweden|Switzerland|Syria|Taiwan|Tajikistan|Tanzania|Thailand|Togo|Tonga|Trinidad and Tobago|"
    "Tunisia|Turkey|Turkmenistan|Tuvalu|Uganda|Ukraine|United Arab Emirates|United Kingdom|"
    "United States|Uruguay|Uzbekistan|Vanuatu|Vatican City|Venezuela|Vietnam|Yemen|Zambia|Zimbabwe|"
    "USA|UK"
).split("|")

# Words that occur between two numbers in prose ("2000 and 2008", "30 July 1970", "79 films
# between 1915") but not in street names; a street word may be none of them.
PROSE_WORDS = (
    "and",
    "or",
    "to",
    "of",
    "in",
    "the",
    "a",
    "an",
    "for",
    "from",
    "with",
    "between",
    "as",
    "by",
    "until",
    "on",
    "at",
    "is",
    "was",
    "were",
    "are",
    "be",
    "been",
    "than",
    "per",
    "about",
    "over",
    "under",
    "after",
    "before",
    "since",
    "during",
    "into",
    "out",
    "up",
    "down",
    "more",
    "less",
    "people",
    "years",
    "year",
    "times",
    "points",
    "goals",
    "games",
    "matches",
    "films",
    "episodes",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Sept",
    "Oct",
    "Nov",
    "Dec",
    "AD",
    "BC",
    "BCE",
    "CE",
    "season",
    "seasons",
    "km",
    "mi",
    "kg",
    "m",
    "ft",
    "miles",
    "kilometres",
    "kilometers",
    "metres",
    "meters",
    "feet",
    "percent",
    "million",
    "billion",
    "thousand",
    "hundred",
    "its",
    "his",
    "her",
    "their",
    "students",
    "votes",
    "through",
    "that",
    "which",
    "who",
    "when",
    "where",
    "also",
    "has",
    "had",
    "have",
    "will",
    "would",
    "population",
    "off",
    "accumulating",
    "runs",
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
        # a bare range ("1100-1104"); "(85) 5986-8343" keeps its area code
        r"(?!\d{3,4}[-–]\d{3,4}(?![-–. ]?\d))"
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
    return (
        r"(?-i:\b[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:com|"
        r"org|net|edu|gov|io|info|biz)\b)(?![.@\w])"
    )


COMPANY_SUFFIXES = (
    "Ltd",
    "Limited",
    "Inc",
    "LLC",
    "LLP",
    "PLC",
    "Corp",
    "Corporation",
    "Co",
    "GmbH",
    "AG",
    "SA",
    "BV",
    "NV",
    "Group",
    "Holdings",
    "Partners",
    "and Sons",
)


def company_pattern() -> str:
    """Capitalised words before a legal-form suffix ("Smith Ltd.", "Qado Energy Inc."), or
    the surname-list form of firms ("Davis, Reynolds and Williamson", "Mayo-Walters")."""
    suffix = "|".join(s.replace(" ", r"[ \t]+") for s in COMPANY_SUFFIXES)
    name = r"[A-Z][\w&'’-]*"
    return (
        rf"\b{name}(?:[ \t]+{name}){{0,3}},?[ \t]+(?:{suffix})\b\.?"
        rf"|\b{_SURNAME},[ \t]+{_SURNAME},?[ \t]+and[ \t]+{_SURNAME}\b"
    )


# ---------------------------------------------------------------- checked identifiers
# Cards, IBANs and IP addresses carry their own proof: a Luhn digit, mod-97 check digits, the
# address grammar. A candidate shape is matched loosely and kept only when the check holds,
# which is what lets these outrank the loose phone shape a spaced card number also fits
# ("2221 0000 0000 0009"): Presidio's card regex knows no 2-series Mastercard and its IPv6
# regex no compressed form ("2001:db8::1").


def card_candidate_pattern() -> str:
    """12-19 digits, bare or in groups split by one kind of separator (space or dash)."""
    return (
        r"(?<![\w.+-])(?:\d{12,19}|"
        r"\d{4}(?:([ -])\d{4,6})(?:\1\d{4,5}){1,2}(?:\1\d{1,3})?)(?![\w-]|\.\d)"
    )


MAESTRO_12 = ("50", "56", "57", "58", "6304", "6390", "67", "0604")  # 12-digit Maestro ranges


def issuer_plausible(digits: str) -> bool:
    """An issuer's number length and prefix: 13-19 digits starting 2-6 (Mastercard 2-series,
    Amex/JCB/Diners, Visa, Mastercard, Discover), 15-digit JCB "1800", 12-digit Maestro."""
    if len(digits) == 12:
        return digits.startswith(MAESTRO_12)
    if digits.startswith("1800"):
        return len(digits) == 15
    return digits[0] in "23456" and 13 <= len(digits) <= 19


def luhn_valid(value: str) -> bool:
    """A card number: an issuer's length and prefix and a valid Luhn check."""
    text = "".join(c for c in value if c.isdigit())
    digits = [int(c) for c in text]
    if not text or not issuer_plausible(text):
        return False
    if len(set(digits)) == 1:  # "0000 0000 0000 0000" passes Luhn and is a placeholder
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 else d
    return total % 10 == 0


# ISO 13616 lengths of the IBAN per country (the registry's, as of 2024).
IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BR": 29,
    "BY": 28,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NL": 18,
    "NO": 15,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "SA": 24,
    "SC": 31,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
}


def iban_candidate_pattern() -> str:
    """A country code, two check digits and the BBAN: compact, or in groups of four split
    by spaces (any case: "gb82 west 1234 5698 7654 32")."""
    return r"(?i)\b[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)\b"


def iban_valid(value: str) -> bool:
    """The country's length and the ISO 7064 mod-97 check (the remainder is 1)."""
    code = value.replace(" ", "").upper()
    if IBAN_LENGTHS.get(code[:2]) != len(code) or not code.isalnum():
        return False
    rearranged = code[4:] + code[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def ip_candidate_pattern() -> str:
    """An IPv4 dotted quad, or hex groups with at least two colons (IPv6, full or with "::")."""
    return (
        r"(?<![\w.:])(?:(?:\d{1,3}\.){3}\d{1,3}"
        r"|(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?)(?![\w:]|\.\d)"
    )


def ip_valid(value: str) -> bool:
    """A real address by Python's `ipaddress` grammar; "14:02:33" and "1.2.3" are not."""
    import ipaddress

    if value.count(":") >= 2 and not any(c.isalnum() for c in value.replace(":", "")):
        return False  # "::" alone
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


LICENCE_CONTEXT = (
    r"(?:driver'?s?|driving|drivers)[ \t]+licen[cs]e|\bDL\b|licen[cs]e"
    r"(?=[ \t]*(?:no\b|number|num\b|#|:|id\b))"
)


def driver_licence_pattern() -> str:
    """A US driver's licence number right after a licence phrase ("driver's license number
    D123-456-78-901-2", "DL# A1234567", "license no. 12 345 678"): the states' shapes (7-13
    digits, letters then digits, dashed or spaced groups) are too common alone to redact, so
    the phrase is required. The number is group `value`, checked by `licence_number_valid`."""
    value = r"[A-Z0-9]{1,15}(?:[- ][A-Z0-9]{1,6}){0,5}"
    filler = r"(?:[ \t]*(?:number|num|no\.?|nr\.?|id|#|is|was|:|,|\(|of))*[ \t]*"
    return rf"(?i:{LICENCE_CONTEXT}){filler}(?P<value>(?-i:{value}))(?![\w-])"


def licence_number_valid(value: str) -> bool:
    """At least five digits, and the last group holds one (so a trailing word is cut off)."""
    last = re.split(r"[- ]", value)[-1]
    return sum(c.isdigit() for c in value) >= 5 and any(c.isdigit() for c in last)


# Compiled once for callers that check text without Presidio (tests, audits).
STREET_ADDRESS_RE = re.compile(street_address_pattern())
PERSON_NAME_RE = re.compile(person_name_pattern())
