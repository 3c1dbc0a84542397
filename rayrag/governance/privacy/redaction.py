"""PII redaction with Microsoft Presidio: with `presidio_setup` and `spans`,
the only door to presidio.

Documents are redacted once at ingest and questions on every request, so both paths run
through one `Redactor`: Presidio's `AnalyzerEngine` (regex/checksum recognizers plus spaCy
NER; built in `presidio_setup.py`) finds spans of the configured entity types, `spans.py`
makes them worth redacting (overlaps, possessives, address tails), and Presidio's
`AnonymizerEngine` applies a per-entity operator (the README's Governance section):

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

Everything runs offline (`presidio_setup.py`). Keys come from the environment at `warm_up()`;
counts, spans and errors never carry the text or the keys.

    >>> redactor = Redactor(RedactionConfig())        # RAYRAG_HMAC_KEY must be set
    >>> result = redactor.redact("Mail jane.doe@example.com or call 212-555-0199.")
    >>> result.text, result.counts
    ('Mail <EMAIL_ADDRESS> or call ********0199.', {'EMAIL_ADDRESS': 1, 'PHONE_NUMBER': 1})
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rayrag.config import RedactionConfig, RedactionOperator
from rayrag.errors import RedactionError
from rayrag.governance.privacy.presidio_setup import _build_analyzer
from rayrag.governance.privacy.spans import (
    drop_identifier_names,
    extend_address_tails,
    normalise,
    resolve_overlaps,
    segments,
    trim_possessives,
)
from rayrag.types import RedactedQuestion

if TYPE_CHECKING:  # presidio is imported lazily in warm_up, never at import time
    from presidio_analyzer import RecognizerResult

logger = logging.getLogger(__name__)

PSEUDONYM_HEX_CHARS = 8
MASK_KEEP_CHARS = 4
MIN_HMAC_KEY_BYTES = 16
AES_KEY_BYTES = (16, 24, 32)


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
        self._operators = {
            policy: self._operator_configs(policy) for policy in self.config.policy_names
        }
        self._anonymizer = AnonymizerEngine()
        self._batch_analyzer = BatchAnalyzerEngine(analyzer_engine=analyzer)
        self._analyzer = analyzer  # last: marks the redactor as warm
        logger.info(
            "redactor ready: %d entity types, spaCy pipeline %s",
            len(self.config.analysed_entities),
            ",".join(analyzer.nlp_engine.nlp["en"].pipe_names),
        )

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
        kwargs = {
            "language": "en",
            "entities": list(self.config.analysed_entities),
            "score_threshold": self.config.score_threshold,
        }
        nlp = self._analyzer.nlp_engine.nlp["en"]
        try:
            if batched:
                pipes = (
                    nlp.select_pipes(disable=list(disable)) if disable else contextlib.nullcontext()
                )
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
                RecognizerResult(
                    r.entity_type,
                    r.start + offset,
                    r.end + offset,
                    r.score,
                    r.analysis_explanation,
                    r.recognition_metadata,
                )
                if offset
                else r
                for r in found
            )
        return [
            extend_address_tails(text, trim_possessives(text, drop_identifier_names(text, found)))
            for text, found in zip(texts, results, strict=True)
        ]

    # ------------------------------------------------------------------ redaction

    def redact(self, text: str, policy: str | None = None) -> RedactionResult:
        """Redact one text (a query, a short document)
        under `policy` (default: `default_policy`)."""
        return self._redact(_checked([text]), batched=False, policies=[self._policy(policy)])[0]

    def redact_batch(
        self, texts: Sequence[str], policies: Sequence[str] | None = None
    ) -> list[RedactionResult]:
        """Redact many texts, each under its policy (default: `default_policy` for all); same
        output as `redact` on each, faster for many documents."""
        checked = _checked(texts)
        chosen = (
            [self._policy(None)] * len(checked)
            if policies is None
            else [self._policy(p) for p in policies]
        )
        if len(chosen) != len(checked):
            raise RedactionError(f"{len(checked)} texts but {len(chosen)} policies")
        return self._redact(checked, batched=True, policies=chosen)

    def redact_forms(
        self, texts: Sequence[str], policies: Sequence[str]
    ) -> list[dict[str, RedactionResult]]:
        """Each text redacted under each of `policies` from one Presidio analysis: a question
        searched over collections redacted differently needs each one's form."""
        chosen = [self._policy(p) for p in policies]
        checked = _checked(texts)
        if not self.config.enabled:
            return [{policy: RedactionResult(text=text) for policy in chosen} for text in checked]
        found = self._analyze(checked, batched=len(checked) > 1)
        return [
            {policy: self._anonymize(i, text, spans, policy) for policy in chosen}
            for i, (text, spans) in enumerate(zip(checked, found, strict=True))
        ]

    def _policy(self, policy: str | None) -> str:
        name = policy or self.config.default_policy
        if name not in self.config.policy_names:
            raise RedactionError(
                f"unknown redaction policy {name!r} (known: {', '.join(self.config.policy_names)})"
            )
        return name

    def _redact(
        self, texts: list[str], batched: bool, policies: list[str]
    ) -> list[RedactionResult]:
        if not self.config.enabled:
            return [RedactionResult(text=text) for text in texts]
        found = self._analyze(texts, batched=batched)
        return [
            self._anonymize(index, text, results, policy)
            for index, (text, results, policy) in enumerate(
                zip(texts, found, policies, strict=True)
            )
        ]

    def _anonymize(
        self, index: int, text: str, found: list[RecognizerResult], policy: str
    ) -> RedactionResult:
        # Kept entities drop out before overlap resolution, so a span that is both a kept
        # LOCATION and a redacted PERSON is redacted: privacy wins a tie.
        chosen = resolve_overlaps(
            [r for r in found if self.operator_for(r.entity_type, policy) != "keep"]
        )
        if not chosen:
            return RedactionResult(text=text)
        try:
            # No whitespace merging: "Ann Lee\nBob Hart" stays two people with two pseudonyms.
            engine_result = self._anonymizer.anonymize(
                text=text,
                analyzer_results=chosen,
                operators=self._operators[policy],
                merge_entities_with_spaces=False,
            )
        except Exception as exc:  # never echo the value an operator failed on
            raise RedactionError(
                f"anonymization failed for text {index} ({type(exc).__name__})"
            ) from None
        spans = tuple(
            RedactedSpan(
                item.entity_type, item.start, item.end, self.operator_for(item.entity_type, policy)
            )
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
                text = (
                    text[: span.start]
                    + self.decrypt_value(text[span.start : span.end])
                    + text[span.end :]
                )
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
        self.strictest = (
            max(self.policies, key=lambda p: (len(self.config.policy_entities(p)), p))
            if self.policies
            else ""
        )

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
            out.append(
                RedactedQuestion(
                    text=strict.text,
                    forms={p: r.text for p, r in results.items()},
                    counts=dict(strict.counts),
                )
            )
        return out


# ---------------------------------------------------------------------- helpers


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
        raise RedactionError(
            f"environment variable {env} must hold at least {MIN_HMAC_KEY_BYTES} bytes"
        )
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
