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

A two-hop question names its entity inside a clause that describes the bridge ("the company
*that acquired Avenra Logistics*", "the *maker of cordidex*"; `inner_clause`). Its answer
must sit in a sentence that states the *outer* relation (the question's terms outside that
clause: "made", "product"), the clause's terms may come from the bridge sentence s2:

    question share = |outer terms in s| / |outer terms| x |inner terms in s + s2| / |inner terms|

so the bridge itself ("Cresthill Power", from "Cresthill Power acquired Avenra Logistics")
or the acquisition's year for "In what year was the company that acquired X founded?" is
not supported: its sentence answers the inner question, not the one asked.

Terms are content words (no stopwords but relation verbs spaCy lists as such, like "made"; no
question words), a common suffix off and cut to
their first `STEM_CHARS` characters, a crude stemmer that makes "acquired", "acquires" and
"acquisition" one term, and "maker" and "makes" another. The answer's own terms are not question
terms; an answer all of whose terms the question already has scores 0 (it answers nothing). Pure
functions, no model: the Guard calls `answer_support`.

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
_NAME = re.compile(r"\b[A-Z](?:[\w&-]|\.(?=\w))*(?:[ \t]+[A-Z](?:[\w&-]|\.(?=\w))*)*")
QUESTION_WORDS = frozenset(
    {
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "year",
        "company",
        "much",
        "many",
    }
)


# Relation verbs spaCy lists as stopwords: "Which product is made by ..." asks for "made".
RELATION_VERBS = frozenset(
    {
        "made",
        "make",
        "makes",
        "making",
        "give",
        "gave",
        "given",
        "gives",
        "take",
        "took",
        "taken",
        "takes",
        "call",
        "called",
        "calls",
        "serve",
        "serves",
        "served",
        "show",
        "shows",
        "showed",
        "shown",
        "used",
        "uses",
        "built",
        "build",
        "builds",
    }
)
_WH_HEAD = re.compile(r"^\s*(?:in\s+|for\s+)?(?:which|what|whose)\s+(\w+)", re.IGNORECASE)

SUFFIXES = ("ations", "ation", "ments", "ment", "ings", "ing", "ers", "er", "ies", "es", "ed", "s")


# Irregular past forms of verbs questions and passages use ("made by" / "makes").
IRREGULAR = {
    "made": "make",
    "built": "build",
    "sold": "sell",
    "bought": "buy",
    "held": "hold",
    "led": "lead",
    "paid": "pay",
    "began": "begin",
    "begun": "begin",
    "grew": "grow",
    "grown": "grow",
    "took": "take",
    "taken": "take",
    "gave": "give",
    "given": "give",
    "wrote": "write",
    "written": "write",
    "won": "win",
}


# Verbs that state the same relation as a shorter one: "the maker of cordidex" is stated by
# "manufactured by"; "the company that acquired X" by "bought X". Prefixes, matched after IRREGULAR.
SYNONYM_PREFIXES = (("manufactur", "make"), ("purchas", "acquire"), ("buy", "acquire"))


def stem(word: str) -> str:
    """A crude stemmer: irregular past forms to their verb, a few synonyms to one verb, the
    longest common English suffix off, a final silent "e" off, then the first STEM_CHARS
    letters ("made", "make", "maker", "manufactures" -> "mak"; "acquired", "acquisition" ->
    "acqui")."""
    word = IRREGULAR.get(word, word)
    word = next((verb for prefix, verb in SYNONYM_PREFIXES if word.startswith(prefix)), word)
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
        if (
            word
            and (word not in stop_words or word in RELATION_VERBS)
            and word not in QUESTION_WORDS
        ):
            out.add(stem(word) if word.isalpha() else word)
    return out


def sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE.split(text)) if s]


def names(text: str) -> set[str]:
    """Capitalised word runs ("Hollowell Power"): the entities a bridge can go through."""
    return {m.group(0) for m in _NAME.finditer(text) if len(m.group(0)) > 2}


_INNER_MARKER = re.compile(
    r"(?<=\w)\s+(that|which|who|whose)\b|(?:^|(?<=\w)\s+)(?=the\s+(\w+(?:er|or))\s+of\b)",
    re.IGNORECASE,
)
_NOT_AGENTS = frozenset(
    {
        "number",
        "order",
        "other",
        "quarter",
        "water",
        "center",
        "letter",
        "corner",
        "chapter",
        "member",
        "matter",
        "cover",
        "sector",
        "factor",
        "color",
        "error",
        "minor",
        "major",
    }
)
_CAPITALISED = re.compile(r"(?:\s+[A-Z][\w&.-]*)+")
# "In which year ...", "For whom ...": a wh-word after a preposition asks, it relates no clause.
_PREPOSITIONS = frozenset(
    {
        "in",
        "for",
        "of",
        "to",
        "at",
        "on",
        "by",
        "with",
        "from",
        "into",
        "during",
        "under",
        "after",
        "before",
        "about",
        "than",
        "as",
        "between",
        "over",
        "through",
    }
)
# A clause that holds the question's own wh-word ("a consultant who has worked with the mayor of
# *what* city?") is where the question asks, not a description of its bridge.
_WH_WORD = re.compile(r"\b(?:what|which|who|whom|whose|when|where|how)\b", re.IGNORECASE)


def inner_clause(question: str, mentions: Iterable[str] = ()) -> str:
    """The clause of a two-hop question that describes its bridge, "" for a one-hop question.

    It starts at a relative pronoun after a noun ("the company that acquired X") or at an
    agent noun with "of" ("the maker of X", "the director of X") and ends after the first
    entity mention (`mentions`: the linked names, any case) that follows, with the rest of its
    capitalised run; with no mention found, it runs to the end of the question. A clause that
    holds a wh-word of its own is where the question asks ("... who has worked with the mayor of
    what city?"), not a bridge: skipped. Lexical, not parsed: the small spaCy parser attaches these
    clauses differently question to question."""
    for match in _INNER_MARKER.finditer(question):
        agent = match.group(2)
        if agent is not None and agent.casefold() in _NOT_AGENTS:
            continue
        before = question[: match.start()].split()
        if match.group(1) is not None and before and before[-1].casefold() in _PREPOSITIONS:
            continue
        start = match.end() if match.group(1) is None else match.start(1)
        rest = question[start:]
        folded = rest.casefold()
        ends = [
            folded.find(m.casefold()) + len(m)
            for m in mentions
            if m and folded.find(m.casefold()) >= 0
        ]
        if not ends:
            clause = rest.rstrip(" ?.!")
            if _WH_WORD.search(clause, 0 if match.group(1) is None else len(match.group(1))):
                continue
            return clause
        end = min(ends)
        tail = _CAPITALISED.match(rest, end)
        if tail is not None:
            end = tail.end()
        clause = rest[:end]
        if _WH_WORD.search(clause, 0 if match.group(1) is None else len(match.group(1))):
            continue
        return clause
    return ""


def question_parts(
    question: str,
    inner: str,
    stop_words: frozenset[str],
    answer_terms: set[str] | frozenset[str] = frozenset(),
) -> tuple[set[str], set[str]]:
    """(inner clause terms, outer relation terms) of a two-hop question, neither holding the
    answer's; (set(), all its terms) when it is one-hop or asks nothing outside the clause.
    The wh-phrase's noun ("Which *product*") is in neither: it names the answer's type, which
    passages seldom state (`answer_type_ok` checks the shape)."""
    asked = terms(question, stop_words) - set(answer_terms)
    inner_terms = terms(inner, stop_words) & asked if inner else set()
    head = _WH_HEAD.match(question)
    outer = asked - inner_terms - (terms(head.group(1), stop_words) if head else set())
    if not inner_terms or not outer:
        return set(), asked
    return inner_terms, outer


def answer_support(
    question: str,
    answer: str,
    passages: Sequence[str],
    stop_words: frozenset[str],
    facts: Iterable[str] = (),
    titles: Sequence[str | None] = (),
    inner: str = "",
    anchors: Iterable[str] = (),
) -> float:
    """max over evidence sentences U (and bridges U2) of answer coverage x question coverage;
    0.0 for an answer without terms or one that only repeats the question. `titles[i]`, when
    given, is passage i's title: it names what every sentence of the passage is about ("It
    was founded in 2012." under "Dravik Health Group company profile"), so its terms count
    for each of them. `anchors`: the entities the question names (the graph's links); a
    one-hop answer's own sentence or title must name them, a bridge may not lend them ("What
    condition is X approved to treat?" is not answered by the condition of drug Y, whose sheet
    shares a maker with X's). See the module docstring."""
    answer_terms = terms(answer, stop_words)
    question_terms = terms(question, stop_words)
    if not answer_terms or (question_terms and answer_terms <= question_terms):
        return 0.0
    asked = question_terms - answer_terms
    anchor_terms = set().union(*(terms(a, stop_words) for a in anchors)) & asked
    inner_terms, outer = question_parts(question, inner, stop_words, answer_terms)
    # The clause's own relation ("acquired", "maker"; its lower-case words) must be stated:
    # the question entity's own profile shares its name, not that it was acquired.
    inner_relation = (
        terms(" ".join(w for w in inner.split() if not w[:1].isupper()), stop_words) & inner_terms
    )
    groups = [*passages, *facts]
    units = [(i, s) for i, p in enumerate(groups) for s in sentences(p)]
    unit_terms = [terms(s, stop_words) for _, s in units]
    topic = [terms(t, stop_words) if t else set() for t in titles] + [set()] * (
        len(groups) - len(titles)
    )
    heading_terms = [topic[i] for i, _ in units]
    # A bridge goes through an entity the question does not name (the question's own entity
    # would join any two sentences about it) and that is not the answer.
    asked_names = {n for n in names(question)} | names(answer)
    group_names = [
        {n for n in names(p) if n not in asked_names and n not in question} for p in groups
    ]
    unit_names = [names(text) for _, text in units]

    def bridged(k: int) -> list[set[str]]:  # U's terms, then U's with each bridge sentence's
        context = unit_terms[k] | heading_terms[k]
        group = units[k][0]
        return [context] + [
            context | unit_terms[k2] | heading_terms[k2]
            for k2, (group2, _) in enumerate(units)
            if group2 != group and group_names[group] & unit_names[k2]
        ]

    best = 0.0
    for k in range(len(units)):
        answer_share = len(answer_terms & unit_terms[k]) / len(answer_terms)
        if answer_share <= best:
            continue
        context = unit_terms[k] | heading_terms[k]
        if inner_terms:
            outer_share = len(outer & context) / len(outer)
            if answer_share * outer_share <= best:
                continue
            covered = max(
                (len(inner_terms & r) for r in bridged(k) if inner_relation <= r), default=0
            )
            best = max(best, answer_share * outer_share * covered / len(inner_terms))
            continue
        covered = len(asked & context)
        if covered < len(asked):  # a bridge: a sentence elsewhere that names what U's passage names
            lendable = asked - (anchor_terms - context)  # never the question's own entity
            covered = max(len(lendable & r) for r in bridged(k))
        question_share = covered / len(asked) if asked else 1.0
        best = max(best, answer_share * question_share)
    return best


_BE = frozenset({"is", "was", "are", "were", "been", "being", "be"})
_PASSIVE_REACH = 5  # words from the form of "be" to its participle ("is the Rule's drug approved")


def agentless_passive(question: str, relation_terms: set[str], stop_words: frozenset[str]) -> bool:
    """Whether the question uses the relation in the passive with no "by" agent ("What
    condition is X *approved* to treat?"): its answer is then not the relation's subject (the
    agency that approved X), whatever else it is.

    Lexical (a form of "be", then within a few words a participle, "-ed"/"-en" or an irregular
    past form, whose stem is one of the relation's terms): the small parser tags the same template
    as passive, attribute or adjectival clause from one drug name to the next."""
    words = re.findall(r"[\w-]+", question.casefold())
    for i, word in enumerate(words):
        if word not in _BE:
            continue
        for j in range(i + 1, min(i + 1 + _PASSIVE_REACH, len(words))):
            participle = words[j].endswith(("ed", "en", "wn")) or words[j] in IRREGULAR
            if participle and terms(words[j], stop_words) & relation_terms:
                return j + 1 >= len(words) or words[j + 1] != "by"
    return False


def answers_inner_clause(
    question: str,
    answer: str,
    passages: Sequence[str],
    stop_words: frozenset[str],
    titles: Sequence[str | None] = (),
    inner: str = "",
) -> bool:
    """Whether the answer is what a two-hop question's inner clause describes (its bridge):
    some evidence sentence (with its passage's title) holds all the answer's terms and all the
    clause's, and not all of the outer relation's. False for a one-hop question.

    Why: "Which drug is made by the company that employs EMP-10467?" -> "Kelvane
    Pharmaceuticals" is supported in the outer relation ("manufactured by Kelvane") but in
    the wrong slot; the employee record ("joined Kelvane ...", under "EMP-10467") shows it is
    the company the clause describes, not what that company makes."""
    answer_terms = terms(answer, stop_words)
    if not inner or not answer_terms:
        return False
    inner_terms, outer = question_parts(question, inner, stop_words, answer_terms)
    if not inner_terms:
        return False
    topic = [terms(t, stop_words) if t else set() for t in titles] + [set()] * (
        len(passages) - len(titles)
    )
    for i, passage in enumerate(passages):
        for sentence in sentences(passage):
            context = terms(sentence, stop_words) | topic[i]
            if (
                answer_terms <= terms(sentence, stop_words)
                and inner_terms <= context
                and not outer <= context
            ):
                return True
    return False


_YEAR = re.compile(r"\b(1[5-9]|20)\d\d\b")
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[^\W\d_]")
_ASKS_YEAR = re.compile(r"^\s*(in what year|what year|when)\b", re.IGNORECASE)
_ASKS_NUMBER = re.compile(
    r"^\s*(how (much|many)|what (revenue|share|percentage|amount|price|number|margin))\b",
    re.IGNORECASE,
)
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
