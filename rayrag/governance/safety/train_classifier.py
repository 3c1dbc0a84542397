"""Train the learned half of the input-safety classifier:
`python -m rayrag.governance.safety.train_classifier`.

A logistic regression (scikit-learn, liblinear, fixed seed) over the hashed n-grams of
`input_safety.window_buckets`, trained only on development data:

- positives: the plain DEV attacks of `safety_attacks` (disguises are undone at run time by
  `normalise` and the views, so the model learns the words, not the tricks);
- negatives: the word windows of the demo corpus's questions and passages, of the paragraphs of
  Python's own reference documentation (`pydoc_data.topics`, shipped with CPython: varied English
  prose that says "ignore", "system", "instructions", "must"), and of `HARD_BENIGN`.

The demo corpus alone is too narrow a picture of benign text: trained on it, the model took any
prose unlike it for an attack (measured: docs/DECISIONS.md); the documentation paragraphs
were added for that reason, the one change made after looking at a HotpotQA figure.

The held-out attacks (HOLDOUT, HOLDOUT_B) and HotpotQA are never read here: they stay the test
sets of `rayrag eval safety --holdout`. The model's threshold is chosen by 5-fold cross-validation
on this data (`choose_threshold`): no out-of-fold demo window flagged, and the best
out-of-fold recall minus false-positive rate on `HARD_BENIGN`.
The weights go to `rayrag/governance/safety/weights.npz` (float16, deterministic for a fixed seed).

    # rewrite the shipped weights
    python -m rayrag.governance.safety.train_classifier
    # only print the cross-validated figures
    python -m rayrag.governance.safety.train_classifier --check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from rayrag.governance.safety.attacks import DEV, HARD_BENIGN
from rayrag.governance.safety.input_safety import normalise
from rayrag.governance.safety.model import LEARNED_BUCKETS, WEIGHTS_FILE, window_buckets

SEED = 0
C = 4.0  # inverse L2 strength
FOLDS = 5


def training_windows(seed: int = SEED) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """(windows, labels, is_hard_benign): hashed n-gram sets of DEV attacks (label 1) and benign
    dev text (label 0); the mask marks the windows of `HARD_BENIGN`."""
    from rayrag.data.demo_corpus import generate_demo_corpus
    from rayrag.governance.safety.attack_set import benign_texts

    with tempfile.TemporaryDirectory(prefix="rayrag-safety-train-") as tmp:
        demo = benign_texts(generate_demo_corpus(Path(tmp) / "demo", seed=seed).out_dir, "demo")
    windows: list[list[int]] = []
    labels: list[int] = []
    hard: list[bool] = []
    for texts, label, is_hard in (
        ([t for _, t in DEV], 1, False),
        (demo.questions + demo.passages + reference_paragraphs(), 0, False),
        (list(HARD_BENIGN), 0, True),
    ):
        for text in texts:
            for buckets in window_buckets(normalise(text)):
                windows.append(buckets)
                labels.append(label)
                hard.append(is_hard)
    return windows, np.asarray(labels), np.asarray(hard)


def reference_paragraphs() -> list[str]:
    """Paragraphs (8 words or more) of CPython's reference documentation, in a fixed order."""
    from pydoc_data.topics import topics

    return [
        para
        for key in sorted(topics)
        for para in re.split(r"\n\s*\n", topics[key])
        if len(para.split()) >= 8
    ]


def data_digest(
    windows: list[list[int]], labels: np.ndarray, hard: np.ndarray, seed: int = SEED
) -> str:
    """sha256 of the training windows and labels: equal digests must give equal weights (the
    documentation text changes between Python versions, so the digest says when it did)."""
    digest = hashlib.sha256(repr((C, FOLDS, LEARNED_BUCKETS, seed)).encode())
    for buckets, label, is_hard in zip(windows, labels, hard, strict=True):
        digest.update(f"{label}{int(is_hard)}:{','.join(map(str, buckets))};".encode())
    return digest.hexdigest()


def _matrix(windows: list[list[int]]) -> Any:
    from scipy.sparse import csr_matrix

    indptr = np.cumsum([0] + [len(w) for w in windows])
    indices = np.concatenate([np.asarray(w, dtype=np.int64) for w in windows])
    data = np.concatenate([np.full(len(w), 1.0 / np.sqrt(len(w))) for w in windows])
    return csr_matrix((data, indices, indptr), shape=(len(windows), LEARNED_BUCKETS))


def _fit(x: Any, y: np.ndarray, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        C=C, solver="liblinear", class_weight="balanced", random_state=seed, max_iter=1000
    ).fit(x, y)


def train(seed: int = SEED) -> dict[str, Any]:
    """Weights, bias, threshold and the cross-validated figures behind the threshold."""
    from sklearn.model_selection import StratifiedKFold

    windows, y, hard = training_windows(seed)
    x = _matrix(windows)
    oof = np.zeros(len(y))
    for fit_rows, test_rows in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(x, y):
        oof[test_rows] = _fit(x[fit_rows], y[fit_rows], seed).predict_proba(x[test_rows])[:, 1]
    threshold = choose_threshold(oof, y, hard)
    model = _fit(x, y, seed)
    weights = model.coef_[0].astype(np.float16)
    return {
        "weights": weights,
        "bias": np.float64(model.intercept_[0]),
        "threshold": np.float64(threshold),
        "digest": data_digest(windows, y, hard, seed),
        "cv": {
            "positives": int(y.sum()),
            "negative_windows": int((y == 0).sum()),
            "oof_recall": round(float((oof[y == 1] >= threshold).mean()), 4),
            "oof_ordinary_fpr": round(float((oof[(y == 0) & ~hard] >= threshold).mean()), 4),
            "oof_hard_benign_fpr": round(float((oof[hard] >= threshold).mean()), 4),
            "threshold": round(threshold, 4),
        },
    }


def choose_threshold(oof: np.ndarray, y: np.ndarray, hard: np.ndarray) -> float:
    """The grid threshold with the best out-of-fold (recall - hard-benign FPR), among those that
    flag no out-of-fold ordinary window (demo corpus, documentation: it must never be flagged)."""
    best, best_gain = 0.95, -1.0
    ordinary_max = float(oof[(y == 0) & ~hard].max())
    for t in np.round(np.arange(0.30, 0.96, 0.01), 2):
        gain = float((oof[y == 1] >= t).mean() - (oof[hard] >= t).mean())
        if t > ordinary_max and gain > best_gain + 1e-9:
            best, best_gain = float(t), gain
    return best


def write(path: Path, trained: dict[str, Any]) -> None:
    """The arrays are the same for the same digest; the zip's bytes are not (member timestamps)."""
    with path.open("wb") as handle:
        np.savez_compressed(
            handle,
            weights=trained["weights"],
            bias=trained["bias"],
            threshold=trained["threshold"],
            digest=np.str_(trained["digest"]),
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name(WEIGHTS_FILE))
    parser.add_argument(
        "--check", action="store_true", help="print the cross-validated figures only"
    )
    args = parser.parse_args(argv)
    trained = train()
    if not args.check:
        write(args.out, trained)
    print(json.dumps(trained["cv"]))


if __name__ == "__main__":
    main()
