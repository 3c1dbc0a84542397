"""Follow-up questions made standalone before retrieval: "What does it make?" after
"Which company acquired Avenra Logistics?" / "Helix Corp" becomes "What does Helix Corp make?".

Retrieval sees one question, not a conversation, and a pronoun retrieves nothing. The rule
(coreference by recency, as in the CoQA/QuAC query-rewriting baselines): a follow-up that
refers back (`it`, `its`, `they`, `their`, `them`, `the company`, `this product`, ...) and
names no entity before it has that reference replaced by the most recent entity of the
conversation — the last answer when it is a name, else the last name the earlier questions
used. Names are capitalised word runs (the corpus's companies, products, regulations) or
the previous answer as given. A question that names its own entity, or has nothing to
refer back to, is returned unchanged. No text is logged; the caller reports the rewrite.

    >>> history = [("user", "Which company acquired Avenra Logistics?"), ("assistant", "Helix")]
    >>> rewrite_followup(history, "In what year was it founded?").question
    'In what year was Helix founded?'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# A reference back to an earlier entity, longest first so "the company's" wins over "the".
_NOUNS = r"(?:company|firm|maker|manufacturer|product|drug|regulation|rule|agency|employee)"
_REFERENCE = re.compile(
    rf"\b(?:(?:the|this|that) {_NOUNS}(?P<nposs>'s)?|(?P<poss>its|their)|it|they|them)\b",
    re.IGNORECASE,
)
# Capitalised runs: "Helix Corp", "Granite Process Engine", "EU Data Act" (inner "of"/"and").
_NAME = re.compile(r"\b[A-Z][\w&.-]*(?:\s+(?:of\s+|and\s+|for\s+)?[A-Z0-9][\w&.-]*)*")
_WH_WORDS = {
    "Which",
    "What",
    "Who",
    "Whom",
    "Whose",
    "When",
    "Where",
    "Why",
    "How",
    "In",
    "Is",
    "Are",
    "Was",
    "Were",
    "Did",
    "Does",
    "Do",
    "The",
    "A",
    "An",
    "And",
    "Tell",
    "Name",
    "Please",
    "Can",
    "Could",
    "List",
    "Give",
}


@dataclass(frozen=True)
class Rewrite:
    """The standalone question, whether it differs from the follow-up, and what it names."""

    question: str
    rewritten: bool
    antecedent: str | None = None


def rewrite_followup(history: Sequence[tuple[str, str]], question: str) -> Rewrite:
    """`question` made standalone from the earlier turns `history` ((role, text), oldest
    first; roles "user" and "assistant", others ignored)."""
    question = question.strip()
    match = _REFERENCE.search(question)
    # A name before the reference is its antecedent ("Did Helix Corp say what it makes?").
    if match is None or _names(question[: match.start()], skip_first=True):
        return Rewrite(question, False)
    antecedent = _antecedent(history)
    if antecedent is None:
        return Rewrite(question, False)
    possessive = bool(match.group("poss") or match.group("nposs"))
    replacement = f"{antecedent}'s" if possessive else antecedent
    start, end = match.span()
    standalone = question[:start] + replacement + question[end:]
    if start == 0:  # "Its revenue?" -> "Helix Corp's revenue?"
        standalone = replacement + question[end:]
    return Rewrite(standalone, True, antecedent)


def _antecedent(history: Sequence[tuple[str, str]]) -> str | None:
    """The most recent entity: an answer that is a name, else the last name in a question."""
    for role, text in reversed(history):
        text = text.strip()
        if role == "assistant":
            answer = _answer_name(text)
            if answer:
                return answer
        elif role == "user":
            names = _names(text, skip_first=True)
            if names:
                return names[-1]
    return None


def _answer_name(text: str) -> str | None:
    """The answer itself when it is a short name ("Helix Corp", "tollodex" is not: lower
    case), without citation markers or a final full stop."""
    text = re.sub(r"\s*\[\d{1,3}\]", "", text).strip().rstrip(".")
    if not text or len(text.split()) > 6 or not text[0].isupper() or text[0].isdigit():
        return None
    names = _names(text, skip_first=False)
    return names[0] if names and names[0] == text else None


def _names(text: str, skip_first: bool) -> list[str]:
    """Capitalised runs in `text`, in order; with `skip_first`, a sentence-initial question
    word ("Which", "In") does not start a name."""
    found = []
    for match in _NAME.finditer(text):
        words = match.group(0).split()
        while words and skip_first and words[0] in _WH_WORDS:
            words = words[1:]
        name = " ".join(words).rstrip(".")
        if name and not name.isdigit():
            found.append(name)
    return found
