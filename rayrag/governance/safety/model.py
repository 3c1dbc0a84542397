"""The input-safety classifier's learned half: a linear model over hashed n-grams.

A logistic regression over hashed word 1-2-grams and in-word character 3-5-grams of the
normalised text, trained by `python -m rayrag.governance.safety.train_classifier` on the development
attacks against benign text (weights shipped in `rayrag/governance/safety/weights.npz`, loaded once
per process). Long texts are read in overlapping word windows and the highest window counts,
so an injection planted in a long passage is not diluted by it. `InputSafety.check`
(input_safety.py) takes the larger of the rules' score and this model's, mapped onto the
rules' scale (`LearnedModel.score`).
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from rayrag.config import InputSafetyConfig

LEARNED_BUCKETS = 2**15
LEARNED_WINDOW = 32  # words per window
LEARNED_STRIDE = 16
LEARNED_CATEGORY = "learned"  # not a rule family: listed after CATEGORIES in a verdict
LEARNED_CODE = f"{LEARNED_CATEGORY}.model"
# The model's own threshold maps to the default rule threshold, so at the default the model
# flags exactly when its probability reaches the cross-validated threshold.
LEARNED_ANCHOR = InputSafetyConfig.model_fields["threshold"].default
WEIGHTS_FILE = "weights.npz"
_WORD_RE = re.compile(r"[a-z0-9']+")


def _bucket(gram: str) -> int:
    # crc32, not hash(): Python salts str hashes per process, and the weights outlive it.
    return zlib.crc32(gram.encode()) & (LEARNED_BUCKETS - 1)


def window_buckets(text: str) -> list[list[int]]:
    """The distinct hashed n-grams of each word window of an (already normalised) text."""
    words = _WORD_RE.findall(text)
    if not words:
        return []
    grams_per_word: list[list[int]] = []
    for i, word in enumerate(words):
        padded = f" {word} "
        grams = [_bucket("w:" + word)]
        if i + 1 < len(words):
            grams.append(_bucket(f"b:{word} {words[i + 1]}"))
        grams.extend(
            _bucket("c:" + padded[j : j + n]) for n in (3, 4, 5) for j in range(len(padded) - n + 1)
        )
        grams_per_word.append(grams)
    starts = range(0, max(len(words) - LEARNED_WINDOW, 0) + 1, LEARNED_STRIDE)
    windows = [
        sorted({b for grams in grams_per_word[s : s + LEARNED_WINDOW] for b in grams})
        for s in starts
    ]
    if len(words) > LEARNED_WINDOW and (len(words) - LEARNED_WINDOW) % LEARNED_STRIDE:
        windows.append(sorted({b for grams in grams_per_word[-LEARNED_WINDOW:] for b in grams}))
    return windows


@dataclass(frozen=True)
class LearnedModel:
    """Shipped weights: `probability(windows)` is the highest window's attack probability."""

    weights: np.ndarray  # (LEARNED_BUCKETS,) float32
    bias: float
    threshold: float  # model probability chosen by cross-validation on DEV (see safety_train)

    def probability(self, windows: Sequence[Sequence[int]]) -> float:
        best = -np.inf
        for buckets in windows:
            if buckets:
                logit = (
                    float(self.weights[np.asarray(buckets)].sum()) / np.sqrt(len(buckets))
                    + self.bias
                )
                best = max(best, logit)
        return 0.0 if best == -np.inf else float(1.0 / (1.0 + np.exp(-best)))

    def score(self, probability: float, anchor: float) -> float:
        """Model probability on the rules' scale, piecewise linear: the probability of a window of
        unseen n-grams (the bias alone: no evidence) -> 0, `threshold` -> `anchor`, 1 -> 1."""
        floor = 1.0 / (1.0 + np.exp(-self.bias))
        floor = floor if floor < self.threshold else 0.0
        if probability < self.threshold:
            return float(anchor * max(probability - floor, 0.0) / (self.threshold - floor))
        return float(
            anchor + (1.0 - anchor) * (probability - self.threshold) / (1.0 - self.threshold)
        )


@functools.lru_cache(maxsize=1)
def learned_model() -> LearnedModel | None:
    """The shipped weights, loaded once per process; None when the file is absent."""
    path = resources.files("rayrag.governance.safety").joinpath(WEIGHTS_FILE)
    if not path.is_file():
        return None
    with path.open("rb") as handle, np.load(handle) as data:
        return LearnedModel(
            weights=data["weights"].astype(np.float32),
            bias=float(data["bias"]),
            threshold=float(data["threshold"]),
        )
