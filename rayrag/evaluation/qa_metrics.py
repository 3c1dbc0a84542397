"""Answer-quality metrics as pure functions: exact match, token F1, citation precision, leaks.

Exact match and F1 follow the SQuAD v1.1 evaluation script (Rajpurkar et al. 2016), as
HotpotQA's does: lower-case, drop punctuation, drop the articles a/an/the, collapse
whitespace; F1 is over the bag of normalised tokens; both take the best over the gold
answers (a question may have aliases). Citation precision follows ALCE (Gao et al. 2023) in
spirit, at the document level our gold data has: of the documents an answer cites, the
share that are gold supports. A leak is a planted canary string (PII the corpus holds)
appearing verbatim in an answer.

    >>> exact_match("The Helix Corp.", ["helix corp"]), round(
    ...     token_f1("Helix Corp Labs", ["Helix Corp"]), 3
    ... )
    (1.0, 0.8)
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer."""
    if not answers:
        raise ValueError("exact match needs at least one gold answer")
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def _f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not pred or not gold:
        return float(pred == gold)  # both empty: 1; one empty: 0 (as the SQuAD script)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """Best token-level F1 over the gold answers."""
    if not answers:
        raise ValueError("F1 needs at least one gold answer")
    return max(_f1(prediction, a) for a in answers)


def citation_precision(cited_doc_ids: Iterable[str], gold_doc_ids: Iterable[str]) -> float | None:
    """Share of the distinct cited documents that are gold supports; None when nothing is
    cited (undefined, left out of the mean rather than counted as 0 or 1)."""
    cited = set(cited_doc_ids)
    if not cited:
        return None
    return len(cited & set(gold_doc_ids)) / len(cited)


def leaked(text: str, canaries: Iterable[str]) -> list[str]:
    """The canaries that occur in `text` (case-insensitive, whitespace-normalised)."""
    flat = " ".join(text.lower().split())
    return [c for c in canaries if c and " ".join(c.lower().split()) in flat]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between order statistics, as numpy's
    default; 0.0 for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the defined values; None when there are none."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None
