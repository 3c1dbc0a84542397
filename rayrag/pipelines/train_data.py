"""Training data for the generator, built from an IndexBundle: tokenizer, LM windows, reader examples.

Two phases, as in retrieval-augmented readers trained from scratch (RETRO, Borgeaud et al.
2022; Fusion-in-Decoder, Izacard & Grave 2021): phase 1 is language modelling on the
bundle's (already redacted) chunk texts, packed GPT-style into fixed windows with `<eos>`
between chunks; phase 2 teaches the model to read a prompt (`prompt.build_training_example`)
and copy the answer out of its context. Reader examples come from a QA file (gold passages
from the supporting documents plus distractors) or, without one, from the knowledge graph's
relation triples turned into templated questions whose answer is in the provenance chunk
(the "KG-to-QA" augmentation of e.g. Bordes et al. 2015's SimpleQuestions), worded by the
answer's entity type ("Which company acquired X?"), plus sentence (cloze) questions from
every chunk (Lewis et al. 2019), worded by `questions`. Graph-built contexts look like
retrieved ones (`reader_contexts`): the gold passage among passages that share its
entities, ranked first about half the time.

Everything is a pure function of the bundle, the QA file and `config.seed`.

    >>> data = TrainDataBuilder(cfg).run(IndexBundle.load("bundle"), qa_path=None)
    >>> data.lm.train_inputs.shape, len(data.reader.train), data.reader.source
    ((96, 257), 380, 'graph')
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rayrag.config import RAGConfig
from rayrag.data.readers import QAPair, read_qa
from rayrag.errors import DataError
from rayrag.generator.model import IGNORE_INDEX
from rayrag.generator.prompt import build_training_example
from rayrag.generator.tokenizer import RayragTokenizer, train_tokenizer
from rayrag.pipelines.bundle import IndexBundle
from rayrag.pipelines.questions import (
    SENTENCE_SPLIT,
    SPAN_PATTERNS,
    graph_question_forms,
    sentence_question,
    wh_phrase,
)
from rayrag.pipelines.reader_contexts import (
    NON_FACT_RELATIONS,
    chunk_facts,
    entity_neighbours,
    facts_for,
    random_distractors,
    ranked_context,
    related_distractors,
)
from rayrag.types import Fact, Passage

# Redaction pseudonyms ("PERSON_3f9a0c1e"): no user asks for one, and a hash is the hardest
# thing to copy; as answers they would teach the reader a prior ("PERSON_...") over reading.
PSEUDONYM = re.compile(r"^[A-Z_]+_[0-9a-f]{6,}$")


@dataclass(frozen=True)
class ChunkRecord:
    chunk_id: str
    doc_id: str
    title: str | None
    text: str

    def passage(self) -> Passage:
        return Passage(chunk_id=self.chunk_id, doc_id=self.doc_id, text=self.text, score=0.0,
                       title=self.title)


@dataclass(frozen=True)
class QAExample:
    """A question whose answer is in `passages` (in prompt order); `group` keeps related
    questions (one triple's forward and inverse form) on the same side of the split."""

    question: str
    answer: str
    passages: tuple[Passage, ...]
    facts: tuple[Fact, ...]
    group: str


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
    tokenizer: RayragTokenizer
    token_order: np.ndarray  # (generator.vocab_size,) ids, most frequent first
    lm: LMData
    reader: ReaderData
    counts: dict[str, int] = field(default_factory=dict)


# -- LM packing -----------------------------------------------------------------------------


def pack_sequences(streams: Sequence[Sequence[int]], seq_len: int, eos_id: int,
                   pad_id: int) -> tuple[np.ndarray, np.ndarray]:
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
        block = np.asarray(flat[: n_full * width], dtype=np.int64).reshape(n_full, width)  # (N, S+1)
        inputs[:n_full] = block
        labels[:n_full] = block
    if rows > n_full:
        tail = np.asarray(flat[n_full * width:], dtype=np.int64)
        inputs[n_full, :rest] = tail
        labels[n_full, :rest] = tail
    return inputs, labels


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

    def run(self, bundle: IndexBundle | str | Path, qa_path: str | Path | None = None,
            tokenizer: RayragTokenizer | None = None) -> TrainingData:
        """`tokenizer` given (LoRA on a base checkpoint) = reuse it instead of training one."""
        if not isinstance(bundle, IndexBundle):
            bundle = IndexBundle.load(bundle)
        chunks = self.chunk_records(bundle)
        if not chunks:
            raise DataError(f"bundle {bundle.path} has no chunks to train on")
        gen = self.config.generator
        texts = [c.text for c in chunks]
        if tokenizer is None:
            titles = sorted({c.title for c in chunks if c.title})
            tokenizer = train_tokenizer([*titles, *texts], gen.vocab_size)
        if tokenizer.vocab_size > gen.vocab_size:
            raise DataError(f"tokenizer has {tokenizer.vocab_size} tokens, more than "
                            f"generator.vocab_size {gen.vocab_size}")
        token_order = tokenizer.token_order(texts, vocab_size=gen.vocab_size)
        lm = self.lm_data(chunks, tokenizer)
        facts = chunk_facts(bundle.graph())
        if qa_path is not None:
            examples = self.qa_examples(read_qa(qa_path), chunks, facts)
            source = "qa"
        else:
            # Both kinds are capped together: triple questions first in line, as they ask
            # about facts the way users do; sentence questions fill the rest.
            graph = bundle.graph()
            examples = self.graph_examples(graph, chunks, facts)
            examples += self.sentence_examples(graph, chunks, facts)[: self.config.train.max_graph_qa - len(examples)]
            random.Random(self.config.seed).shuffle(examples)
            source = "graph"
        reader = self.reader_data(examples, tokenizer, source)
        if not reader.train:
            raise DataError(f"no reader training examples from the {'QA file' if qa_path else 'knowledge graph'} "
                            f"(examples {len(examples)}, too long for train.seq_len {reader.skipped})")
        counts = {"chunks": len(chunks), "tokenizer_vocab": tokenizer.vocab_size,
                  "lm_train_windows": len(lm.train_inputs), "lm_val_windows": len(lm.val_inputs),
                  "lm_train_tokens": lm.tokens, "reader_examples": len(examples),
                  "reader_train": len(reader.train), "reader_val": len(reader.val),
                  "reader_skipped": reader.skipped}
        return TrainingData(tokenizer, token_order, lm, reader, counts)

    # -- pieces (public so tests can feed them hand-made data) -------------------------------

    @staticmethod
    def chunk_records(bundle: IndexBundle) -> list[ChunkRecord]:
        table = bundle.chunks()
        cols = {name: table.column(name).to_pylist() for name in ("chunk_id", "doc_id", "title", "text")}
        return [ChunkRecord(cid, did, title or None, text)
                for cid, did, title, text in zip(cols["chunk_id"], cols["doc_id"], cols["title"],
                                                 cols["text"], strict=True) if text]

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
        return LMData(train_inputs, train_labels, val_inputs, val_labels,
                      tokens=int((train_labels != IGNORE_INDEX).sum()))

    def qa_examples(self, pairs: Sequence[QAPair], chunks: Sequence[ChunkRecord],
                    facts: dict[str, list[Fact]]) -> list[QAExample]:
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
                    gold.append(next((c for c in candidates if answer and answer in c.text), candidates[0]))
            if not gold or not answer.strip():
                continue  # no supporting text in this bundle (or no answer): nothing to read
            gold = gold[:k]
            gold_docs = set(pair.supporting_ids)
            context = gold + random_distractors(chunks, gold_docs, k - len(gold), rng)
            rng.shuffle(context)
            examples.append(QAExample(pair.question, answer, tuple(c.passage() for c in context),
                                      facts_for(context, facts), group=pair.id))
        return examples

    def graph_examples(self, graph, chunks: Sequence[ChunkRecord],
                       facts: dict[str, list[Fact]]) -> list[QAExample]:
        """Templated questions from relation triples whose answer is unique and readable.

        A forward question is asked only when the subject has one object under the
        relation (and the inverse only when the object has one subject), so the answer
        is not a coin flip; the context holds a provenance chunk that spells the answer.
        """
        g = graph.graph
        by_id = {c.chunk_id: c for c in chunks}
        edges = sorted((u, v, key) for u, v, key in g.edges(keys=True) if key not in NON_FACT_RELATIONS)
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
            forward, inverse = graph_question_forms(subject, key, obj, g.nodes[u].get("label", ""),
                                                    g.nodes[v].get("label", ""))
            provenance = [by_id[c] for c in g.edges[u, v, key].get("chunk_ids", []) if c in by_id]
            for questions, answer, unique in ((forward, obj, out_degree[(u, key)] == 1),
                                              (inverse, subject, in_degree[(v, key)] == 1)):
                gold = next((c for c in provenance if answer in c.text or answer in (c.title or "")), None)
                if not unique or gold is None or PSEUDONYM.match(answer):
                    continue
                for question in questions:
                    # Each phrasing gets its own context, so the model sees the gold passage
                    # among different related passages at different ranks.
                    context = ranked_context(gold, related_distractors(
                        gold, neighbours.get(gold.chunk_id, ()), by_id, chunks, k - 1, rng), rng)
                    examples.append(QAExample(question, answer, tuple(c.passage() for c in context),
                                              facts_for(context, facts), group=f"{u}|{key}|{v}"))
        rng.shuffle(examples)
        return examples[: self.config.train.max_graph_qa]

    def sentence_examples(self, graph, chunks: Sequence[ChunkRecord],
                          facts: dict[str, list[Fact]]) -> list[QAExample]:
        """Cloze questions from every chunk's sentences (Lewis et al. 2019, "Unsupervised
        Question Answering by Cloze Translation"): each graph entity, year, amount or share
        the sentence mentions becomes the answer of the sentence turned into a question.

        They cover what relation triples do not (dates, figures, roles, conditions) and teach
        the reader the general skill: find the sentence the question paraphrases, copy the span.
        """
        g = graph.graph
        by_id = {c.chunk_id: c for c in chunks}
        entities: dict[str, list[tuple[str, str]]] = defaultdict(list)  # chunk id -> (surface form, label)
        for _, data in sorted(g.nodes(data=True), key=lambda n: n[0]):
            if data.get("kind") != "entity" or not data.get("name") or data.get("label") == "TITLE":
                continue
            for chunk_id in data.get("chunk_ids", ()):
                forms = [data["name"], *(f for counts in data.get("forms", {}).values() for f in counts)]
                for form in dict.fromkeys(forms):
                    entities[chunk_id].append((form, data.get("label", "")))
        rng = random.Random(self.config.seed + 1)
        k = self.config.train.context_passages
        neighbours = entity_neighbours(graph)
        examples: list[QAExample] = []
        for chunk in chunks:
            for sentence in SENTENCE_SPLIT.split(chunk.text):
                spans: dict[tuple[int, int], str] = {}
                for form, label in entities.get(chunk.chunk_id, ()):
                    for match in re.finditer(rf"(?<!\w){re.escape(form)}(?!\w)", sentence):
                        spans.setdefault(match.span(), wh_phrase(label))
                for pattern, wh in SPAN_PATTERNS:
                    for match in pattern.finditer(sentence):
                        spans.setdefault(match.span(), wh)
                for (start, end), wh in sorted(spans.items()):
                    question = sentence_question(sentence, start, end, wh)
                    if question is None or PSEUDONYM.match(sentence[start:end]):
                        continue
                    context = ranked_context(chunk, related_distractors(
                        chunk, neighbours.get(chunk.chunk_id, ()), by_id, chunks, k - 1, rng), rng)
                    examples.append(QAExample(question, sentence[start:end], tuple(c.passage() for c in context),
                                              facts_for(context, facts), group=chunk.chunk_id))
        rng.shuffle(examples)
        return examples

    def reader_data(self, examples: Sequence[QAExample], tokenizer: RayragTokenizer,
                    source: str) -> ReaderData:
        """Tokenise; split by group so a triple's two questions land on the same side."""
        groups = sorted({e.group for e in examples})
        order = np.random.default_rng([self.config.seed, 2]).permutation(len(groups))
        val_groups = {groups[i] for i in order[: split_count(len(groups), self.config.train.val_fraction)]}
        max_len = self.config.train.seq_len + 1
        train, val, skipped = [], [], 0
        for e in examples:
            try:
                pair = build_training_example(e.question, e.passages, e.facts, e.answer, tokenizer, max_len)
            except DataError:
                skipped += 1
                continue
            (val if e.group in val_groups else train).append(pair)
        return ReaderData(train, val, source, skipped)
