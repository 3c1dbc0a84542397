"""Training data for the generator, built from an IndexBundle: tokenizer, LM windows, reader examples.

Two phases, as in retrieval-augmented readers trained from scratch (RETRO, Borgeaud et al.
2022; Fusion-in-Decoder, Izacard & Grave 2021): phase 1 is language modelling on the
bundle's (already redacted) chunk texts, packed GPT-style into fixed windows with `<eos>`
between chunks; phase 2 teaches the model to read a prompt (`prompt.build_training_example`)
and copy the answer out of its context. Reader examples come from a QA file (gold passages
from the supporting documents plus distractors) or, without one, from the knowledge graph's
relation triples turned into templated questions whose answer is in the provenance chunk
(the "KG-to-QA" augmentation of e.g. Bordes et al. 2015's SimpleQuestions).

Everything is a pure function of the bundle, the QA file and `config.seed`.

    >>> data = TrainDataBuilder(cfg).run(IndexBundle.load("bundle"), qa_path=None)
    >>> data.lm.train_inputs.shape, len(data.reader.train), data.reader.source
    ((96, 257), 380, 'graph')
"""

from __future__ import annotations

import random
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
from rayrag.types import Fact, Passage

# Edges that are not facts a question can ask about (HippoRAG's structural edges).
NON_FACT_RELATIONS = frozenset({"co_occurs", "mentions", "synonym"})
MAX_FACTS_PER_EXAMPLE = 6
# Past tense of the verbs the SVO extractor emits that do not take -ed.
_IRREGULAR_PAST = {
    "be": "was", "begin": "began", "build": "built", "buy": "bought", "find": "found",
    "give": "gave", "have": "had", "hold": "held", "lead": "led", "make": "made", "pay": "paid",
    "run": "ran", "sell": "sold", "take": "took", "win": "won", "write": "wrote", "leave": "left",
    "meet": "met", "send": "sent", "spend": "spent", "teach": "taught", "bring": "brought",
}


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


# -- graph QA -------------------------------------------------------------------------------


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


def graph_questions(subject: str, relation: str, obj: str, subject_label: str,
                    object_label: str) -> tuple[str, str]:
    """(forward question -> obj, inverse question -> subject) for one relation triple.

    "acquire": "What did Helix Corp acquire?" / "What acquired Brightwater Labs?".
    """
    words = relation_words(relation) or [relation]
    negated = words[0] == "not" and len(words) > 1
    verb_words = words[1:] if negated else words
    wh_object = "Who" if object_label == "PERSON" else "What"
    wh_subject = "Who" if subject_label == "PERSON" else "What"
    base = " ".join(words)
    forward = f"{wh_object} did {subject} {base}?"
    past = " ".join([past_tense(verb_words[0]), *verb_words[1:]])
    inverse = f"{wh_subject} {'did not ' + ' '.join(verb_words) if negated else past} {obj}?"
    return forward, inverse


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
            examples = self.graph_examples(bundle.graph(), chunks, facts)
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
            context = gold + _distractors(chunks, gold_docs, k - len(gold), rng)
            rng.shuffle(context)
            examples.append(QAExample(pair.question, answer, tuple(c.passage() for c in context),
                                      _facts_for(context, facts), group=pair.id))
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
        examples: list[QAExample] = []
        for u, v, key in edges:
            subject, obj = g.nodes[u].get("name"), g.nodes[v].get("name")
            if not subject or not obj:
                continue
            forward, inverse = graph_questions(subject, key, obj, g.nodes[u].get("label", ""),
                                               g.nodes[v].get("label", ""))
            provenance = [by_id[c] for c in g.edges[u, v, key].get("chunk_ids", []) if c in by_id]
            for question, answer, unique in ((forward, obj, out_degree[(u, key)] == 1),
                                             (inverse, subject, in_degree[(v, key)] == 1)):
                gold = next((c for c in provenance if answer in c.text or answer in (c.title or "")), None)
                if not unique or gold is None:
                    continue
                context = [gold, *_distractors(chunks, {gold.doc_id}, k - 1, rng)]
                rng.shuffle(context)
                examples.append(QAExample(question, answer, tuple(c.passage() for c in context),
                                          _facts_for(context, facts), group=f"{u}|{key}|{v}"))
        rng.shuffle(examples)
        return examples[: self.config.train.max_graph_qa]

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


def chunk_facts(graph) -> dict[str, list[Fact]]:
    """chunk id -> the relation facts it supports (names, not keys), in a stable order."""
    g = graph.graph
    facts: dict[str, list[Fact]] = defaultdict(list)
    for u, v, key, data in sorted(g.edges(keys=True, data=True), key=lambda e: e[:3]):
        if key in NON_FACT_RELATIONS:
            continue
        subject, obj = g.nodes[u].get("name"), g.nodes[v].get("name")
        if not subject or not obj:
            continue
        fact = Fact(subject, key, obj, float(data.get("confidence", 0.0)),
                    tuple(data.get("chunk_ids", ())), tuple(data.get("doc_ids", ())))
        for chunk_id in fact.chunk_ids:
            facts[chunk_id].append(fact)
    return facts


def _facts_for(context: Sequence[ChunkRecord], facts: dict[str, list[Fact]]) -> tuple[Fact, ...]:
    chosen: dict[tuple[str, str, str], Fact] = {}
    for c in context:
        for f in facts.get(c.chunk_id, ()):
            chosen.setdefault((f.subject, f.relation, f.object), f)
    return tuple(list(chosen.values())[:MAX_FACTS_PER_EXAMPLE])


def _distractors(chunks: Sequence[ChunkRecord], exclude_docs: set[str], n: int,
                 rng: random.Random) -> list[ChunkRecord]:
    if n <= 0:
        return []
    picked: list[ChunkRecord] = []
    seen: set[int] = set()
    # Rejection sampling: cheap when gold documents are few, which they are.
    for _ in range(max(8 * n, 32)):
        i = rng.randrange(len(chunks))
        if i not in seen and chunks[i].doc_id not in exclude_docs:
            seen.add(i)
            picked.append(chunks[i])
            if len(picked) == n:
                break
    return picked
