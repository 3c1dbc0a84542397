"""Question wording for generated reader examples: graph triples and sentences as questions.

Relation triples become templated questions (the "KG-to-QA" augmentation of e.g. Bordes et
al. 2015's SimpleQuestions), the question word chosen by the answer's entity type ("Which
company acquired X?") and the relation's verb conjugated; sentences become questions about
one of their spans, the "identity mapping" cloze-to-question of Lewis et al. 2019
("Unsupervised Question Answering by Cloze Translation"). Pure string functions; which
triples and spans are asked about is `TrainDataBuilder`'s business.

    >>> graph_questions("Helix Corp", "acquire", "Brightwater Labs", "ORG", "ORG")
    ('Which company did Helix Corp acquire?', 'Which company acquired Brightwater Labs?')
    >>> sentence_question("Helix Corp acquired Brightwater Labs in 2019.", 0, 10, "Which company")
    'Which company acquired Brightwater Labs in 2019?'
"""

from __future__ import annotations

import re

# Past tense of the verbs the SVO extractor emits that do not take -ed.
_IRREGULAR_PAST = {
    "be": "was",
    "begin": "began",
    "build": "built",
    "buy": "bought",
    "find": "found",
    "give": "gave",
    "have": "had",
    "hold": "held",
    "lead": "led",
    "make": "made",
    "pay": "paid",
    "run": "ran",
    "sell": "sold",
    "take": "took",
    "win": "won",
    "write": "wrote",
    "leave": "left",
    "meet": "met",
    "send": "sent",
    "spend": "spent",
    "teach": "taught",
    "bring": "brought",
}


def relation_words(relation: str) -> list[str]:
    return [w for w in relation.split("_") if w]


def past_tense(verb: str) -> str:
    if verb in _IRREGULAR_PAST:
        return _IRREGULAR_PAST[verb]
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and len(verb) > 1 and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


# The question word a triple's answer calls for, by the answer entity's NER label (spaCy's
# scheme): real questions name the kind of thing asked for ("Which company acquired X?").
WH_BY_LABEL = {
    "PERSON": "Who",
    "ORG": "Which company",
    "GPE": "Which city",
    "LOC": "Which place",
    "FAC": "Which site",
    "PRODUCT": "Which product",
    "LAW": "Which regulation",
    "WORK_OF_ART": "Which work",
    "EVENT": "Which event",
    "DATE": "When",
    "NORP": "Which group",
}
WH_DEFAULT = "What"
# Relations whose object is a kind of thing the NER label gets wrong (products and job
# titles are often tagged ORG): the relation decides the forward question's word.
WH_BY_RELATION_OBJECT = {
    "make": "Which product",
    "manufacture": "Which product",
    "produce": "Which product",
    "join_as": "Which role",
}


# Spans a sentence question can ask about beyond the graph's entities (Lewis et al. 2019's
# cloze answers): years, amounts of money, percentages.
SPAN_PATTERNS = (
    (re.compile(r"\$[\d,]+(?:\.\d+)?(?: (?:million|billion))?"), "How much"),
    (re.compile(r"\b\d{1,3}%"), "What share"),
    (re.compile(r"\b(?:18|19|20)\d\d\b"), "In what year"),
)
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
MAX_SENTENCE_QA_WORDS = 30  # a longer sentence makes a question unlike anything asked


def wh_phrase(label: str) -> str:
    """ "Which company" for ORG, "Who" for PERSON, ... "What" for anything else."""
    return WH_BY_LABEL.get(label, WH_DEFAULT)


def present_tense(verb: str) -> str:
    """Third person singular: "acquire" -> "acquires", "issue" -> "issues",
    "supply" -> "supplies"."""
    if verb == "be":
        return "is"
    if verb == "have":
        return "has"
    if verb.endswith(("s", "x", "z", "ch", "sh", "o")):
        return verb + "es"
    if verb.endswith("y") and len(verb) > 1 and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def graph_question_forms(
    subject: str, relation: str, obj: str, subject_label: str, object_label: str
) -> tuple[list[str], list[str]]:
    """(forward forms -> obj, inverse forms -> subject) for one relation triple, best first.

    The question word follows the answer's entity type and the verb is conjugated, so
    "acquire" gives "Which company did Helix Corp acquire?" (and, for a one-word verb, the
    passive "Which company is acquired by Helix Corp?") and the inverse forms
    "Which company acquired Brightwater Labs?" / "Which company acquires Brightwater Labs?".
    """
    words = relation_words(relation) or [relation]
    negated = words[0] == "not" and len(words) > 1
    verb_words = words[1:] if negated else words
    wh_object = WH_BY_RELATION_OBJECT.get(relation) or wh_phrase(object_label)
    wh_subject = wh_phrase(subject_label)
    base = " ".join(verb_words)
    rest = " ".join(verb_words[1:])
    if negated:
        return [f"{wh_object} did {subject} not {base}?"], [f"{wh_subject} did not {base} {obj}?"]
    forward = [f"{wh_object} did {subject} {base}?", f"{wh_object} does {subject} {base}?"]
    if len(verb_words) == 1:  # the passive, as often asked: "Which product is made by Helix Corp?"
        forward.append(f"{wh_object} is {past_tense(base)} by {subject}?")
    inverse = [
        f"{wh_subject} {' '.join([tense(verb_words[0]), rest]).strip()} {obj}?"
        for tense in (past_tense, present_tense)
    ]
    return forward, inverse


def sentence_question(sentence: str, start: int, end: int, wh: str) -> str | None:
    """The sentence as a question about its span [start, end) (Lewis et al. 2019's
    "identity mapping" cloze-to-question): "Helix Corp acquired Brightwater Labs in 2019."
    asked about "Helix Corp" -> "Which company acquired Brightwater Labs in 2019?"; a span
    inside the sentence keeps its place: "Helix Corp acquired which company in 2019?".
    None when the question would give the answer away or be too long."""
    before, answer, after = (
        sentence[:start].strip(),
        sentence[start:end],
        sentence[end:].rstrip(" .!?;:"),
    )
    if answer.lower() in (before + after).lower():
        return None  # the answer is spelled in the question itself
    if before:
        # "In what year" leads its clause; in place it reads "in what year" after a preposition.
        question = f"{before} {wh[0].lower() + wh[1:]}{after}?"
    else:
        question = f"{wh}{after}?"
    question = re.sub(
        r"\b(in|on|at|of|by|from|to) in what year\b", r"\1 what year", question, flags=re.IGNORECASE
    )
    if len(question.split()) > MAX_SENTENCE_QA_WORDS or len(question.split()) < 3:
        return None
    return question


def graph_questions(
    subject: str, relation: str, obj: str, subject_label: str, object_label: str
) -> tuple[str, str]:
    """(forward question -> obj, inverse question -> subject): the first of `graph_question_forms`.

    "acquire": "Which company did Helix Corp acquire?" / "Which company acquired Brightwater Labs?".
    """
    forward, inverse = graph_question_forms(subject, relation, obj, subject_label, object_label)
    return forward[0], inverse[0]


# The noun a description names an entity by, from its NER label ("the company that ...").
NOUN_BY_LABEL = {
    "ORG": "company",
    "PERSON": "person",
    "GPE": "city",
    "LOC": "place",
    "LAW": "regulation",
    "PRODUCT": "product",
    "FAC": "site",
    "EVENT": "event",
    "NORP": "group",
    "WORK_OF_ART": "work",
}


def agent_noun(verb: str) -> str:
    """ "make" -> "maker", "acquire" -> "acquirer", "issue" -> "issuer", "employ" -> "employer"."""
    return verb + "r" if verb.endswith("e") else verb + "er"


def relation_descriptions(
    relation: str, other: str, label: str, *, subject_side: bool
) -> list[str]:
    """Ways to name an entity by one of its relation facts, for bridge questions.

    The entity is the fact's subject (`subject_side`) or object; `other` is the fact's other
    end. (C, acquire, X) describes C as "the company that acquired X" or "the acquirer of X";
    (Y, acquire, C) describes C as "the company that Y acquired". Negated relations give none.
    """
    words = relation_words(relation) or [relation]
    if words[0] == "not":
        return []
    noun = NOUN_BY_LABEL.get(label, "one")
    verb = " ".join([past_tense(words[0]), *words[1:]])
    if subject_side:
        out = [f"the {noun} that {verb} {other}"]
        if len(words) == 1:
            out.append(f"the {agent_noun(words[0])} of {other}")
        return out
    return [f"the {noun} that {other} {verb}"]
