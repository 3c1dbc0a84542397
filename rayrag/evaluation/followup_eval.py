"""Follow-up questions from a QA set, and how well `followup.rewrite_followup` restores them.

A conversation is built from two one-hop questions of the set that chain: the first one's
answer is the entity the second one asks about ("Which company acquired Avenra Logistics?"
-> "Helix Corp"; "In what year was Helix Corp founded?"). The follow-up is the second
question with that entity replaced by a reference ("In what year was it founded?", "... was
the company founded?"); the expected standalone question is the second question itself, and
its gold documents are the target of retrieval. Built from any QA file whose answers are
names (the demo corpus of any seed), so the figure is not tied to one hand-written list.

Reported: `rewrite_exact` (the rewrite equals the original question up to case, punctuation
and articles), and with a retriever
`hit@k` of the gold documents for the raw follow-up, the rewrite, and the original question
(the ceiling).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rayrag.answering.followup import rewrite_followup

# How a follow-up refers back, by what the entity is: rotated over the set.
_REFERENCES = {
    "company": ("it", "the company"),
    "other": ("it", "it"),
}
_COMPANY_HINTS = ("company", "manufactures", "acquired", "employs", "founded")


@dataclass(frozen=True)
class FollowUp:
    """One conversation: the earlier turns, the follow-up and what it should become."""

    history: tuple[tuple[str, str], ...]
    followup: str
    expected: str
    gold_ids: tuple[str, ...]
    qa_id: str


def followups_from_qa(rows: Sequence[dict[str, Any]], limit: int | None = None) -> list[FollowUp]:
    """Chained pairs of one-hop questions -> follow-ups, in the QA file's order."""
    one_hop = [r for r in rows if r.get("metadata", {}).get("hops", 1) == 1 and r.get("answers")]
    out: list[FollowUp] = []
    used: set[str] = set()
    for first in one_hop:
        entity = first["answers"][0]
        if not entity or not entity[0].isupper():
            continue
        pattern = re.compile(rf"(?:\bthe )?\b{re.escape(entity)}\b")
        for second in one_hop:
            if second is first or second["id"] in used or not pattern.search(second["question"]):
                continue
            kind = "company" if any(h in first["question"] for h in _COMPANY_HINTS) else "other"
            reference = _REFERENCES[kind][len(out) % 2]
            followup = pattern.sub(reference, second["question"], count=1)
            followup = followup[0].upper() + followup[1:]
            out.append(
                FollowUp(
                    history=(("user", first["question"]), ("assistant", entity)),
                    followup=followup,
                    expected=second["question"],
                    gold_ids=tuple(second["supporting_ids"]),
                    qa_id=second["id"],
                )
            )
            used.add(second["id"])
        if limit is not None and len(out) >= limit:
            break
    return out[:limit] if limit is not None else out


def same_question(a: str, b: str) -> bool:
    """Equal up to case, punctuation and articles (SQuAD's answer normalisation)."""

    def norm(text: str) -> str:
        text = re.sub(r"[^\w\s]", " ", text.lower())
        return " ".join(w for w in text.split() if w not in ("a", "an", "the"))

    return norm(a) == norm(b)


def evaluate_followups(
    items: Sequence[FollowUp],
    retrieve: Callable[[str], Sequence[str]] | None = None,
    k: int = 5,
) -> dict[str, Any]:
    """`rewrite_exact` over `items`; with `retrieve` (question -> ranked doc ids) the gold
    hit rate in the top `k` for the raw follow-up, the rewrite and the original question."""
    if not items:
        return {"n": 0, "rewrite_exact": None}
    rewrites = [rewrite_followup(i.history, i.followup) for i in items]
    result: dict[str, Any] = {
        "n": len(items),
        "rewrite_exact": round(
            sum(same_question(r.question, i.expected) for r, i in zip(rewrites, items, strict=True))
            / len(items),
            4,
        ),
        "rewritten": round(sum(r.rewritten for r in rewrites) / len(items), 4),
    }
    if retrieve is not None:
        for name, questions in (
            ("raw", [i.followup for i in items]),
            ("rewritten", [r.question for r in rewrites]),
            ("original", [i.expected for i in items]),
        ):
            hits = 0
            for question, item in zip(questions, items, strict=True):
                ranked = list(retrieve(question))[:k]
                hits += all(g in ranked for g in item.gold_ids)
            result[f"hit@{k}_{name}"] = round(hits / len(items), 4)
    return result
