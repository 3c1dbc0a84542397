"""Token-level evaluation of the `Redactor`'s PII detection on a labelled PII set.

Follows presidio-research's evaluator (`presidio_evaluator.evaluation`): text is cut into
word and punctuation tokens; a token is gold PII when it overlaps a labelled span and
predicted PII when it overlaps a span the analyzer found (after `resolve_overlaps`, the
spans the redactor would act on, kept entities included: detection is scored, not policy).
The headline is PII vs not-PII of any type, with F-beta at beta=2 because a missed value
leaks while an extra redaction only costs readability; per entity type there is recall
(by gold type) and precision (by predicted type). `redacted` repeats the headline for the
spans the configured operators change (entities set to `keep` left out).

    >>> result = evaluate_pii(Path("presidio_generated_large.json"), RedactionConfig())
    >>> result["f2"], result["per_entity"]["PERSON"]["recall"]

The result holds counts and ratios only, never dataset text (callers log it to MLflow).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayrag.config import RedactionConfig
from rayrag.errors import ConfigError, DataError

FORMATS = ("presidio",)
BETA = 2.0

# presidio-research's generated sets label with Faker-style names; each maps to the entity type
# that carries the same information in rayrag/Presidio terms. Every gold type counts as PII
# for the overall score (a labelled span is something the set's authors consider identifying).
#   ADDRESS     -> STREET_ADDRESS  rayrag's street-address recognizer (Presidio has none)
#   DOMAIN_NAME -> URL             Presidio's URL recognizer ("http://www.example.de/")
#   PREFIX      -> PERSON          an honorific ("Dr.", "Mrs.") is part of the name mention
#   TITLE       -> TITLE           a job title: a quasi-identifier rayrag does not analyse
#   DATE_TIME   -> CALENDAR_DATE   the set's dates are birth dates and timestamps, which rayrag
#                                  finds as CALENDAR_DATE (Presidio's DATE_TIME adds years,
#                                  weekdays)
#   the rest keep their names (PERSON, LOCATION, ORGANIZATION, PHONE_NUMBER, US_SSN, ...)
ENTITY_MAPPING: dict[str, str] = {
    "PERSON": "PERSON",
    "PREFIX": "PERSON",
    "TITLE": "TITLE",
    "ADDRESS": "STREET_ADDRESS",
    "STREET_ADDRESS": "STREET_ADDRESS",
    "LOCATION": "LOCATION",
    "GPE": "LOCATION",
    "ORGANIZATION": "ORGANIZATION",
    "DATE_TIME": "CALENDAR_DATE",
    "DOMAIN_NAME": "URL",
    "URL": "URL",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "US_SSN": "US_SSN",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "IBAN_CODE": "IBAN_CODE",
    "IP_ADDRESS": "IP_ADDRESS",
}

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class Span:
    """A labelled or detected entity: type and [start, end) character offsets."""

    entity_type: str
    start: int
    end: int


@dataclass(frozen=True)
class Example:
    text: str
    spans: tuple[Span, ...]


def map_entity(label: str) -> str:
    """The rayrag entity type of a dataset label (unknown labels keep their name)."""
    return ENTITY_MAPPING.get(label, label)


def tokenize(text: str) -> list[tuple[int, int]]:
    """[start, end) of each word (``\\w+``) and each punctuation character;
    spaces are not tokens."""
    return [(m.start(), m.end()) for m in _TOKEN.finditer(text)]


def token_labels(tokens: Sequence[tuple[int, int]], spans: Sequence[Span]) -> list[str | None]:
    """Per token, the type of the first span it overlaps (None: not PII)."""
    ordered = sorted(spans, key=lambda s: (s.start, s.end))
    labels: list[str | None] = []
    for start, end in tokens:
        label = None
        for span in ordered:
            if span.start >= end:
                break
            if span.end > start:
                label = span.entity_type
                break
        labels.append(label)
    return labels


def load_dataset(path: Path, fmt: str = "presidio", limit: int | None = None) -> list[Example]:
    """Examples of a presidio-research JSON file (a list of {"full_text", "spans": [...]})."""
    if fmt not in FORMATS:
        raise ConfigError(
            f"unknown PII dataset format {fmt!r} (--format); supported: {', '.join(FORMATS)}"
        )
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be > 0, got {limit} (--limit)")
    if not path.is_file():
        raise ConfigError(f"PII dataset not found: {path} (--dataset)")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path} is not JSON ({type(exc).__name__} at char {getattr(exc, 'pos', '?')})"
        ) from None
    if not isinstance(records, list) or not records:
        raise DataError(f"{path}: expected a non-empty JSON list of records (--format presidio)")
    examples: list[Example] = []
    for index, record in enumerate(records[:limit] if limit else records):
        try:
            text = record["full_text"]
            spans = tuple(
                Span(str(s["entity_type"]), int(s["start_position"]), int(s["end_position"]))
                for s in record["spans"]
            )
        except (TypeError, KeyError, ValueError):
            raise DataError(
                f"{path}: record {index} lacks full_text or spans with entity_type/start_position/"
                "end_position (--format presidio)"
            ) from None
        if not isinstance(text, str) or any(not 0 <= s.start < s.end <= len(text) for s in spans):
            raise DataError(f"{path}: record {index} has a span outside its text")
        examples.append(Example(text, spans))
    return examples


def f_beta(precision: float, recall: float, beta: float = BETA) -> float:
    if precision == 0 and recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def score(examples: Sequence[Example], predictions: Sequence[Sequence[Span]]) -> dict[str, Any]:
    """Token counts and P/R/F2, overall (any type) and per entity type."""
    tp = fp = fn = tokens = 0
    gold_total: Counter[str] = Counter()  # gold label -> tokens
    gold_found: Counter[str] = Counter()  # gold label -> tokens predicted as any PII
    gold_typed: Counter[str] = Counter()  # gold label -> tokens predicted as its mapped type
    pred_total: Counter[str] = Counter()  # predicted type -> tokens
    pred_right: Counter[str] = Counter()  # predicted type -> tokens whose gold maps to it
    for example, predicted in zip(examples, predictions, strict=True):
        toks = tokenize(example.text)
        tokens += len(toks)
        for gold, pred in zip(
            token_labels(toks, example.spans), token_labels(toks, predicted), strict=True
        ):
            if gold is not None:
                gold_total[gold] += 1
                if pred is not None:
                    tp += 1
                    gold_found[gold] += 1
                    gold_typed[gold] += pred == map_entity(gold)
                else:
                    fn += 1
            elif pred is not None:
                fp += 1
            if pred is not None:
                pred_total[pred] += 1
                pred_right[pred] += gold is not None and map_entity(gold) == pred
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    per_entity: dict[str, dict[str, Any]] = {}
    for label in sorted(gold_total):
        per_entity[label] = {
            "mapped_to": map_entity(label),
            "tokens": gold_total[label],
            "recall": _ratio(gold_found[label], gold_total[label]),
            "typed_recall": _ratio(gold_typed[label], gold_total[label]),
        }
    predicted = {
        kind: {"tokens": pred_total[kind], "precision": _ratio(pred_right[kind], pred_total[kind])}
        for kind in sorted(pred_total)
    }
    return {
        "precision": precision,
        "recall": recall,
        "f2": f_beta(precision, recall),
        "tokens": tokens,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "per_entity": per_entity,
        "per_predicted": predicted,
    }


def detection_config(config: RedactionConfig) -> RedactionConfig:
    """`config` with every operator set to replace: detection is the same,
    and no keys are needed."""
    return config.model_copy(
        update={
            "enabled": True,
            "default_operator": "replace",
            "operators": {entity: "replace" for entity in config.entities},
        }
    )


def detect(texts: Sequence[str], config: RedactionConfig) -> list[list[Span]]:
    """The spans the Redactor would act on, for each text (kept entities included)."""
    from rayrag.governance.privacy.redaction import Redactor
    from rayrag.governance.privacy.spans import resolve_overlaps

    redactor = Redactor(detection_config(config))
    found = redactor.analyze_batch(list(texts))
    return [
        [Span(r.entity_type, r.start, r.end) for r in resolve_overlaps(results)]
        for results in found
    ]


def evaluate_pii(
    dataset: Path,
    config: RedactionConfig,
    fmt: str = "presidio",
    limit: int | None = None,
    detector: Callable[[Sequence[str], RedactionConfig], list[list[Span]]] = detect,
) -> dict[str, Any]:
    """Token-level P/R/F2 of the Redactor's detections on a labelled PII file."""
    examples = load_dataset(dataset, fmt, limit)
    predictions = detector([e.text for e in examples], config)
    result = score(examples, predictions)
    # What each policy actually changes: spans of the types it keeps stay in the text.
    by_policy = {}
    for policy in config.policy_names:
        redacted = score(
            examples,
            [
                [
                    span
                    for span in spans
                    if config.policy_operator(policy, span.entity_type) != "keep"
                ]
                for spans in predictions
            ],
        )
        by_policy[policy] = {
            key: redacted[key] for key in ("precision", "recall", "f2", "tp", "fp", "fn")
        }
    result["redacted"] = by_policy[config.default_policy]
    result["redacted_by_policy"] = by_policy
    result.update(
        {"examples": len(examples), "format": fmt, "beta": BETA, "entities": list(config.entities)}
    )
    return result
