"""Answer support: is the answer stated in the evidence *in the relation the question asks*?

Token overlap between an answer and its passages (the old groundedness) cannot tell right
from wrong: a reader that copies the question's own entity ("Which company acquired Tarrow
Power?" -> "Tarrow Power") is perfectly "grounded". This check reads like a crude
entailment test, in the spirit of the lexical baselines of RTE and FEVER (Glickman et al.
2005; Thorne et al. 2018) and of answer-sentence support in QA verification (Chen et al.
2021, "Can NLI Models Verify QA Systems' Predictions?"): the answer must occur in an
evidence sentence, and that sentence — joined, for a two-hop question, with one more
sentence that shares an entity with it (the bridge) — must carry the question's own terms.

    support = max over evidence sentences s, and over s2 = nothing or a sentence of another
              passage or a fact sharing a name with s's passage, of
              |answer terms in s| / |answer terms| x |question terms in s + s2| / |question terms|
              (a sentence's terms include its passage's title, when the caller gives titles)

Terms are content words (no stopwords, no question words), a common suffix off and cut to
their first `STEM_CHARS` characters, a crude stemmer that makes "acquired", "acquires" and
"acquisition" one term, and "maker" and "makes" another. The answer's own terms are not question terms; an answer all of
whose terms the question already has scores 0 (it answers nothing). Pure functions, no
model: the Guard calls `answer_support`.

    >>> answer_support("Which company acquired Tarrow Power?", "Hollowell Power",
    ...                ["Hollowell Power acquired Tarrow Power in 2019."], stop_words)
    1.0
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

STEM_CHARS = 5
_WORD = re.compile(r"[\w$%.,-]*\w")
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")
_NAME = re.compile(r"\b[A-Z][\w&.-]*(?:\s+[A-Z][\w&.-]*)*")
QUESTION_WORDS = frozenset({"what", "which", "who", "whom", "whose", "when", "where", "why", "how",
                            "year", "company", "much", "many"})


SUFFIXES = ("ations", "ation", "ments", "ment", "ings", "ing", "ers", "er", "ies", "es", "ed", "s")


# Irregular past forms of verbs questions and passages use ("made by" / "makes").
IRREGULAR = {"made": "make", "built": "build", "sold": "sell", "bought": "buy", "held": "hold", "led": "lead",
             "paid": "pay", "began": "begin", "begun": "begin", "grew": "grow", "grown": "grow", "took": "take",
             "taken": "take", "gave": "give", "given": "give", "wrote": "write", "written": "write", "won": "win"}


def stem(word: str) -> str:
    """A crude stemmer: irregular past forms to their verb, the longest common English suffix
    off, a final silent "e" off, then the first STEM_CHARS letters ("made", "make", "maker",
    "makes" -> "mak"; "acquired", "acquisition" -> "acqui")."""
    word = IRREGULAR.get(word, word)
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word[:STEM_CHARS]


def terms(text: str, stop_words: frozenset[str]) -> set[str]:
    """Content terms of `text`: lowercased words minus stopwords and question words, stemmed."""
    out = set()
    for word in _WORD.findall(text.casefold()):
        word = word.strip(".,")
        if word and word not in stop_words and word not in QUESTION_WORDS:
            out.add(stem(word) if word.isalpha() else word)
    return out


def sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE.split(text)) if s]


def names(text: str) -> set[str]:
    """Capitalised word runs ("Hollowell Power"): the entities a bridge can go through."""
    return {m.group(0) for m in _NAME.finditer(text) if len(m.group(0)) > 2}


def answer_support(question: str, answer: str, passages: Sequence[str], stop_words: frozenset[str],
                   facts: Iterable[str] = (), titles: Sequence[str | None] = ()) -> float:
    """max over evidence sentences U (and bridges U2) of answer coverage x question coverage;
    0.0 for an answer without terms or one that only repeats the question. `titles[i]`, when
    given, is passage i's title: it names what every sentence of the passage is about ("It
    was founded in 2012." under "Dravik Health Group company profile"), so its terms count
    for each of them. See the module docstring."""
    answer_terms = terms(answer, stop_words)
    question_terms = terms(question, stop_words)
    if not answer_terms or (question_terms and answer_terms <= question_terms):
        return 0.0
    asked = question_terms - answer_terms
    groups = [*passages, *facts]
    units = [(i, s) for i, p in enumerate(groups) for s in sentences(p)]
    unit_terms = [terms(s, stop_words) for _, s in units]
    topic = [terms(t, stop_words) if t else set() for t in titles] + [set()] * (len(groups) - len(titles))
    heading_terms = [topic[i] for i, _ in units]
    # A bridge goes through an entity the question does not name (the question's own entity
    # would join any two sentences about it) and that is not the answer.
    asked_names = {n for n in names(question)} | names(answer)
    group_names = [{n for n in names(p) if n not in asked_names and n not in question} for p in groups]
    best = 0.0
    for k, (group, _) in enumerate(units):
        answer_share = len(answer_terms & unit_terms[k]) / len(answer_terms)
        if answer_share <= best:
            continue
        context = unit_terms[k] | heading_terms[k]
        covered = len(asked & context)
        if covered < len(asked):  # a bridge: a sentence elsewhere that names what U's passage names
            for k2, (group2, text2) in enumerate(units):
                if group2 != group and group_names[group] & names(text2):
                    covered = max(covered, len(asked & (context | unit_terms[k2] | heading_terms[k2])))
        question_share = covered / len(asked) if asked else 1.0
        best = max(best, answer_share * question_share)
    return best


_YEAR = re.compile(r"\b(1[5-9]|20)\d\d\b")
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[^\W\d_]")
_ASKS_YEAR = re.compile(r"^\s*(in what year|what year|when)\b", re.IGNORECASE)
_ASKS_NUMBER = re.compile(r"^\s*(how (much|many)|what (revenue|share|percentage|amount|price|number|margin))\b",
                          re.IGNORECASE)
_ASKS_THING = re.compile(r"^\s*(which|who|whom|what)\b", re.IGNORECASE)


def answer_type_ok(question: str, answer: str) -> bool:
    """Whether the answer has the shape the question's wh-phrase asks for: a year for "In what
    year" / "When", a figure for "How much" / "What revenue", words (not only figures) for any
    other "Which/Who/What" question. True when the question asks nothing this can check.

    Why: support reads terms, not types; "In what year did the Rule take effect?" -> "tech
    companies" can sit in the one sentence that holds all the question's terms."""
    if _ASKS_YEAR.match(question):
        return bool(_YEAR.search(answer))
    if _ASKS_NUMBER.match(question):
        return bool(_DIGIT.search(answer))
    if _ASKS_THING.match(question):
        return bool(_LETTER.search(answer))
    return True
