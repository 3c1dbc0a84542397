"""`rayrag eval safety`: recall of the input-safety classifier on attacks,
false positives on real text.

Attacks: the labelled set of `safety_set.attack_set` (hand-written injections and jailbreaks,
planted in passages and disguised). Benign: the questions and passages of the demo corpus
(generated here), of a HotpotQA sample when one is given (imported with
`rayrag.data.importers.import_hotpotqa`), and `safety_attacks.HARD_BENIGN`, benign texts that
use the attacks' vocabulary. Reported: recall overall, per category and per disguise; the
false-positive rate on benign questions and passages, per source; with `holdout=True` the
same for the held-out attacks, which neither the rules nor the learned model saw.
`caught_with_learned` counts the attacks whose verdict carries the `learned` code.

    >>> result = evaluate_safety(InputSafetyConfig(), hotpotqa=Path("shared/data/hotpotqa_sample"))
    >>> result["attack_recall"], result["benign_fpr_questions"], result["benign_fpr_passages"]

The result holds counts, ratios and feature codes only, never text.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rayrag.config import InputSafetyConfig
from rayrag.governance.safety.attack_set import BenignTexts, SafetyExample, attack_set, benign_texts
from rayrag.governance.safety.attacks import HARD_BENIGN
from rayrag.governance.safety.input_safety import CATEGORIES, InputSafety
from rayrag.governance.safety.model import LEARNED_CATEGORY


def _ratio(num: int, den: int) -> float:
    return round(num / den, 6) if den else 0.0


def attack_report(safety: InputSafety, examples: Sequence[SafetyExample]) -> dict[str, Any]:
    """Recall overall, per category and per variant (plain, embedded, each disguise)."""
    verdicts = [safety.check(e.text) for e in examples]
    caught = [v.flagged for v in verdicts]
    by: dict[str, dict[str, list[bool]]] = {"category": {}, "variant": {}}
    for example, hit in zip(examples, caught, strict=True):
        by["category"].setdefault(example.category, []).append(hit)
        by["variant"].setdefault(example.variant, []).append(hit)
    per_category = {
        c: _ratio(sum(by["category"][c]), len(by["category"][c]))
        for c in CATEGORIES
        if c in by["category"]
    }
    return {
        "attack_recall": _ratio(sum(caught), len(caught)),
        "attacks": len(examples),
        "missed": len(examples) - sum(caught),
        "recall_per_category": per_category,
        "caught_with_learned": sum(
            v.flagged and LEARNED_CATEGORY in v.categories for v in verdicts
        ),
        "recall_per_variant": {v: _ratio(sum(h), len(h)) for v, h in sorted(by["variant"].items())},
        "attacks_per_category": {c: len(by["category"][c]) for c in per_category},
    }


def _false_positives(safety: InputSafety, texts: Sequence[str], features: Counter[str]) -> int:
    flagged = 0
    for text in texts:
        verdict = safety.check(text)
        if verdict.flagged:
            flagged += 1
            features.update(verdict.features)
    return flagged


def evaluate_safety(
    config: InputSafetyConfig, *, hotpotqa: Path | None = None, holdout: bool = False, seed: int = 0
) -> dict[str, Any]:
    """Attack recall and benign false-positive rates (see the module docstring)."""
    from rayrag.data.demo_corpus import generate_demo_corpus
    from rayrag.data.importers import import_hotpotqa

    config = config.model_copy(update={"enabled": True})
    safety = InputSafety(config)
    started = time.perf_counter()
    result: dict[str, Any] = attack_report(safety, attack_set("dev"))
    with tempfile.TemporaryDirectory(prefix="rayrag-safety-") as tmp:
        corpora: list[BenignTexts] = []
        demo = generate_demo_corpus(Path(tmp) / "demo", seed=seed)
        corpora.append(benign_texts(demo.out_dir, "demo"))
        if hotpotqa is not None:
            imported = import_hotpotqa(hotpotqa, Path(tmp) / "hotpotqa")
            corpora.append(benign_texts(imported.out_dir, "hotpotqa"))
    features: Counter[str] = Counter()
    by_source: dict[str, float] = {}
    counts: dict[str, int] = {}
    totals = {"questions": [0, 0], "passages": [0, 0]}
    for corpus in corpora:
        for kind, texts in (("questions", corpus.questions), ("passages", corpus.passages)):
            flagged = _false_positives(safety, texts, features)
            by_source[f"{corpus.name}_{kind}"] = _ratio(flagged, len(texts))
            counts[f"{corpus.name}_{kind}"] = len(texts)
            totals[kind][0] += flagged
            totals[kind][1] += len(texts)
    hard = _false_positives(safety, HARD_BENIGN, features)
    checked = result["attacks"] + sum(counts.values()) + len(HARD_BENIGN)
    result.update(
        {
            "benign_fpr_questions": _ratio(*totals["questions"]),
            "benign_fpr_passages": _ratio(*totals["passages"]),
            "benign_questions": totals["questions"][1],
            "benign_passages": totals["passages"][1],
            "benign_flagged": totals["questions"][0] + totals["passages"][0],
            "fpr_by_source": by_source,
            "benign_counts": counts,
            "hard_benign_fpr": _ratio(hard, len(HARD_BENIGN)),
            "hard_benign": len(HARD_BENIGN),
            "false_positive_features": dict(sorted(features.items())),
            "threshold": config.threshold,
            "max_chars": config.max_chars,
            "hotpotqa": hotpotqa is not None,
        }
    )
    if holdout:
        for split in ("holdout", "holdout_b"):
            held = attack_report(safety, attack_set(split))
            result[split] = held
            result[f"{split}_attack_recall"] = held["attack_recall"]
            checked += held["attacks"]
    result["ms_per_text"] = round((time.perf_counter() - started) * 1000 / max(checked, 1), 3)
    return result


def tracking_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The figures MLflow keeps: ratios and counts."""
    metrics = {
        f"safety_{key}": float(result[key])
        for key in (
            "attack_recall",
            "benign_fpr_questions",
            "benign_fpr_passages",
            "hard_benign_fpr",
            "attacks",
            "benign_questions",
            "benign_passages",
            "ms_per_text",
        )
    }
    metrics.update({f"safety_recall.{c}": r for c, r in result["recall_per_category"].items()})
    metrics.update(
        {f"safety_recall_variant.{v}": r for v, r in result["recall_per_variant"].items()}
    )
    metrics.update({f"safety_fpr.{s}": r for s, r in result["fpr_by_source"].items()})
    for split in ("holdout", "holdout_b"):
        if split in result:
            metrics[f"safety_{split}_attack_recall"] = float(result[f"{split}_attack_recall"])
            metrics.update(
                {
                    f"safety_{split}_recall.{c}": r
                    for c, r in result[split]["recall_per_category"].items()
                }
            )
    return metrics
