"""Training data from a bundle: LM packing, graph-generated and QA-file reader examples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from rayrag.config import load_config
from rayrag.generator.model import IGNORE_INDEX
from rayrag.generator.prompt import ANSWER_PREFIX
from rayrag.index import bundle as bundle_io
from rayrag.index.graph import NON_FACT_RELATIONS, KnowledgeGraph
from rayrag.index.kg_extract import ChunkExtraction, entity_key
from rayrag.training.contexts import chunk_facts, entity_neighbours
from rayrag.training.data import QAExample, TrainDataBuilder, pack_sequences, split_count
from rayrag.types import Triple

COMPANIES = [
    "Helix Dynamics",
    "Orion Works",
    "Sable Analytics",
    "Tidewater Energy",
    "Crescent Robotics",
    "Juniper Foods",
    "Marlow Textiles",
    "Quarry Logistics",
]
PRODUCTS = [
    "Falcon Drive",
    "Ember Scanner",
    "Nimbus Ledger",
    "Harbor Turbine",
    "Atlas Gripper",
    "Meadow Snack",
    "Velvet Loom",
    "Cargo Beacon",
]
TARGETS = [
    "Brightwater Labs",
    "Pinecrest Media",
    "Redfern Chemicals",
    "Silverline Rail",
    "Kestrel Optics",
    "Willow Farms",
    "Granite Mills",
    "Harbor Freight Lines",
]
PEOPLE = ["PERSON_3f9a0c1e", "PERSON_0b7e44d2", "PERSON_9c1d2e3f", "PERSON_a1b2c3d4"]


def make_tiny_bundle(root: Path) -> tuple[Path, Path]:
    """A bundle of eight one-chunk documents and its graph, written without Ray or spaCy;
    plus a QA file. Each company makes one product and acquired one target (unique answers);
    each person leads two companies (the forward question is ambiguous and must be skipped)."""
    rows, extractions, qa = [], [], []
    for i, (company, product, target) in enumerate(zip(COMPANIES, PRODUCTS, TARGETS, strict=True)):
        person = PEOPLE[i % len(PEOPLE)]
        doc_id, chunk_id = f"doc-{i}", f"doc-{i}#0"
        text = (
            f"{company} makes {product}, sold in many markets. In {2010 + i} {company} acquired "
            f"{target} for cash. {person} leads {company}."
        )
        rows.append(
            {
                "row_id": i,
                "chunk_id": chunk_id,
                "doc_id": doc_id,
                "title": f"{company} profile",
                "text": text,
                "start": 0,
                "end": len(text),
                "acl": ["public"],
                "metadata": "{}",
            }
        )
        ents = [
            (entity_key(company), "ORG", company),
            (entity_key(product), "PRODUCT", product),
            (entity_key(target), "ORG", target),
            (entity_key(person), "PERSON", person),
        ]
        triples = [
            Triple(ents[0][0], "make", ents[1][0], chunk_id, doc_id, 0.9),
            Triple(ents[0][0], "acquire", ents[2][0], chunk_id, doc_id, 0.9),
            Triple(ents[3][0], "lead", ents[0][0], chunk_id, doc_id, 0.9),
            Triple(ents[1][0], "co_occurs", ents[2][0], chunk_id, doc_id, 0.3),
        ]
        extractions.append(ChunkExtraction(chunk_id, doc_id, ("public",), ents, triples))
        qa.append(
            {
                "id": f"q{i}",
                "question": f"Who makes {product}?",
                "answers": [company],
                "supporting_ids": [doc_id],
            }
        )
    qa.append(
        {
            "id": "q-missing",
            "question": "Who is absent?",
            "answers": ["Nobody"],
            "supporting_ids": ["not-in-bundle"],
        }
    )
    graph = KnowledgeGraph.build(extractions)
    out = root / "bundle"
    bundle_io.write_bundle(
        out,
        {
            bundle_io.CHUNKS: bundle_io.write_table(
                pa.Table.from_pylist(rows, schema=bundle_io.CHUNK_SCHEMA)
            ),
            bundle_io.DOCUMENTS: bundle_io.write_table(bundle_io.DOCUMENT_SCHEMA.empty_table()),
            bundle_io.VECTORS: lambda path: path.write_bytes(b"unused by training"),
            bundle_io.GRAPH: graph.save,
            bundle_io.PII_REPORT: bundle_io.write_json_file({"counts": {}}),
        },
        {"format_version": bundle_io.FORMAT_VERSION, "bundle_id": "b-tiny"},
    )
    qa_path = root / "qa.jsonl"
    qa_path.write_text("".join(json.dumps(q) + "\n" for q in qa), encoding="utf-8")
    return out, qa_path


def tiny_data_config(**train):
    overrides = [
        "generator.vocab_size=512",
        "generator.adaptive_softmax_cutoffs=[128, 300]",
        "train.seq_len=160",
        "train.context_passages=2",
        "train.val_fraction=0.25",
    ]
    return load_config(None, overrides + [f"train.{k}={v}" for k, v in train.items()])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-train-data")
    bundle, qa = make_tiny_bundle(root)
    return bundle_io.IndexBundle.load(bundle), qa


def test_pack_sequences_joins_with_eos_and_pads_the_tail():
    inputs, labels = pack_sequences([[5, 6, 7], [8, 9]], seq_len=3, eos_id=2, pad_id=0)
    # flat stream 5 6 7 <eos> 8 9 <eos>: one full window of seq_len + 1, then a padded tail
    assert inputs.tolist() == [[5, 6, 7, 2], [8, 9, 2, 0]]
    assert labels.tolist() == [[5, 6, 7, 2], [8, 9, 2, IGNORE_INDEX]]
    # a one-token tail predicts nothing and is dropped
    inputs, _ = pack_sequences([[5, 6, 7]], seq_len=3, eos_id=2, pad_id=0)
    assert inputs.shape == (1, 4)


def test_split_count_holds_out_at_least_one_of_two_or_more():
    assert split_count(100, 0.05) == 5 and split_count(10, 0.01) == 1
    assert split_count(1, 0.5) == 0 and split_count(10, 0.0) == 0


def test_lm_data_splits_by_chunk_and_keeps_every_token(tiny):
    bundle, _ = tiny
    data = TrainDataBuilder(tiny_data_config()).run(bundle)
    assert data.token_order.shape == (512,) and sorted(data.token_order.tolist()) == list(
        range(512)
    )
    tok = data.tokenizer
    builder = TrainDataBuilder(tiny_data_config(seq_len=32))
    lm = builder.lm_data(builder.chunk_records(bundle), tok)
    streams = tok.encode_batch([r["text"] for r in bundle.chunks().to_pylist()])
    expected = sum(len(s) + 1 for s in streams)  # + <eos> per chunk
    real = int((lm.train_labels != IGNORE_INDEX).sum() + (lm.val_labels != IGNORE_INDEX).sum())
    assert real == expected and lm.tokens == int((lm.train_labels != IGNORE_INDEX).sum())
    assert lm.train_inputs.shape[1] == 33 and len(lm.val_inputs) >= 1  # 2 of 8 chunks held out
    # labels equal inputs where real: the model shifts them itself
    keep = lm.train_labels != IGNORE_INDEX
    assert np.array_equal(lm.train_inputs[keep], lm.train_labels[keep])


def test_graph_questions_are_answerable_from_their_context(tiny):
    bundle, _ = tiny
    cfg = tiny_data_config()
    builder = TrainDataBuilder(cfg)
    chunks = builder.chunk_records(bundle)
    graph = bundle.graph()
    examples = builder.graph_examples(graph, chunks, chunk_facts(graph))
    questions = [e.question for e in examples]
    assert len(examples) > 20
    for e in examples:
        assert len(e.passages) == cfg.train.context_passages
        assert any(e.answer in p.text or e.answer in (p.title or "") for p in e.passages)
        assert all(f.relation not in NON_FACT_RELATIONS for f in e.facts)
    # a redaction pseudonym is never an answer ("Who led Helix Dynamics?" is not asked), and
    # "Which company did PERSON_x lead?" has two answers and is skipped
    assert not any(q.startswith("Who l") for q in questions)
    assert not any(e.answer.startswith("PERSON_") for e in examples)
    assert not any("did PERSON_" in q or "does PERSON_" in q for q in questions)
    assert "Which product did Helix Dynamics make?" in questions
    assert (
        "Which company made Falcon Drive?" in questions
        and "Which company makes Falcon Drive?" in questions
    )
    assert "Which company acquired Brightwater Labs?" in questions
    # answers are the entity's surface form, never its lowercase graph key
    assert all(e.answer[0].isupper() for e in examples)
    # deterministic under the seed, capped by max_graph_qa
    again = builder.graph_examples(graph, chunks, chunk_facts(graph))
    assert [(e.question, e.passages) for e in again] == [(e.question, e.passages) for e in examples]
    capped = TrainDataBuilder(tiny_data_config(max_graph_qa=5)).graph_examples(
        graph, chunks, chunk_facts(graph)
    )
    assert len(capped) == 5


def test_graph_contexts_use_related_passages_at_random_ranks(tiny):
    """Distractors are passages that share an entity with the gold one (what retrieval
    returns), from other documents; the gold passage is not always first."""
    bundle, _ = tiny
    graph = bundle.graph()
    neighbours = entity_neighbours(graph)
    cfg = tiny_data_config(context_passages=3)
    builder = TrainDataBuilder(cfg)
    chunks = builder.chunk_records(bundle)
    examples = builder.graph_examples(graph, chunks, chunk_facts(graph))
    gold_ranks = set()
    for e in examples:
        docs = [p.doc_id for p in e.passages]
        assert len(docs) == len(set(docs)) == 3
        gold = next(i for i, p in enumerate(e.passages) if e.answer in p.text)
        gold_ranks.add(gold)
        related = neighbours.get(e.passages[gold].chunk_id, [])
        if related:
            assert any(p.chunk_id in related for i, p in enumerate(e.passages) if i != gold)
    assert len(gold_ranks) > 1


def test_sentence_examples_ask_about_entities_and_figures_in_context(tiny):
    bundle, _ = tiny
    graph = bundle.graph()
    builder = TrainDataBuilder(tiny_data_config())
    chunks = builder.chunk_records(bundle)
    examples = builder.sentence_examples(graph, chunks, chunk_facts(graph))
    by_question = {e.question: e.answer for e in examples}
    # Short wh-fronted questions (question_gen.py), the clause without its asides.
    assert by_question["Which company makes Falcon Drive sold in many markets?"] == "Helix Dynamics"
    assert (
        by_question["Which product does Helix Dynamics make sold in many markets?"]
        == "Falcon Drive"
    )
    assert any("what year" in q.lower() and a == "2010" for q, a in by_question.items())
    assert "Who leads Helix Dynamics?" not in by_question  # pseudonyms are not answers
    assert by_question["PERSON_3f9a0c1e leads which company?"] in COMPANIES
    for e in examples:
        assert e.answer not in e.question
        assert sum(e.answer in p.text for p in e.passages) >= 1
        assert len({p.doc_id for p in e.passages}) == len(e.passages) == 2
    # the answering passage is ranked first about half the time, like retrieval ranks it
    first = sum(e.answer in e.passages[0].text for e in examples) / len(examples)
    assert 0.4 < first < 0.95
    # run() mixes both kinds under the max_graph_qa cap
    data = TrainDataBuilder(tiny_data_config(max_graph_qa=40)).run(bundle)
    assert data.counts["reader_examples"] == 40 and data.reader.source == "graph"


def test_reader_labels_mask_the_prompt(tiny):
    bundle, _ = tiny
    data = TrainDataBuilder(tiny_data_config()).run(bundle)
    assert data.reader.source == "graph" and data.reader.train and data.reader.val
    tok = data.tokenizer
    for ids, labels in data.reader.train[:10]:
        assert len(ids) == len(labels) <= 161
        n_prompt = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        assert all(label == IGNORE_INDEX for label in labels[:n_prompt])
        answer = labels[n_prompt:]
        assert answer == ids[n_prompt:] and answer[-1] == tok.eos_id
        assert tok.decode(ids[:n_prompt], skip_special=False).endswith("answer:")
        assert tok.decode(answer).startswith(ANSWER_PREFIX)


def test_qa_file_examples_put_gold_chunks_in_context(tiny):
    bundle, qa = tiny
    cfg = tiny_data_config()
    builder = TrainDataBuilder(cfg)
    from rayrag.data.readers import read_qa

    chunks = builder.chunk_records(bundle)
    examples = builder.qa_examples(read_qa(qa), chunks, chunk_facts(bundle.graph()))
    assert len(examples) == len(COMPANIES)  # the question without supporting text is skipped
    for e, company in zip(examples, COMPANIES, strict=True):
        assert e.answer == company
        assert len(e.passages) == 2 and len({p.doc_id for p in e.passages}) == 2
        assert any(company in p.text for p in e.passages)
    data = builder.run(bundle, qa_path=qa)
    assert data.reader.source == "qa" and len(data.reader.train) + len(data.reader.val) == len(
        COMPANIES
    )


def test_path_examples_describe_the_bridge_entity_by_a_fact_from_another_document(tiny):
    bundle, _ = tiny
    graph = bundle.graph()
    builder = TrainDataBuilder(tiny_data_config(path_qa_share=1.0, context_passages=3))
    chunks = builder.chunk_records(bundle)
    facts = chunk_facts(graph)
    by_id = {c.chunk_id: c for c in chunks}
    # A one-hop question about Brightwater Labs, asked of a passage other than the one where
    # Helix Dynamics acquires it (doc-0), so the acquisition can describe it.
    asked = by_id["doc-1#0"]
    one_hop = [
        QAExample(
            "Which company did Brightwater Labs hire?",
            "Orion Works",
            (asked.passage(),),
            (),
            group="g",
            gold=(asked.chunk_id,),
        )
    ]
    [example] = builder.path_examples(graph, chunks, facts, one_hop)
    assert example.question in ("Which company did the company that Helix Dynamics acquired hire?",)
    assert example.answer == "Orion Works"
    first = example.facts[0]
    assert (first.subject, first.relation, first.object) == (
        "Helix Dynamics",
        "acquire",
        "Brightwater Labs",
    )
    assert set(example.gold) == {"doc-0#0", "doc-1#0"} <= {p.chunk_id for p in example.passages}
    # Nothing to describe: a question naming no entity with a fact elsewhere gives no example.
    plain = [
        QAExample(
            "Which company did nobody hire?",
            "Orion Works",
            (asked.passage(),),
            (),
            "g2",
            (asked.chunk_id,),
        )
    ]
    assert builder.path_examples(graph, chunks, facts, plain) == []
    # `one_hop` questions are re-asked before `then` ones; the budget counts both.
    half = TrainDataBuilder(tiny_data_config(path_qa_share=0.5, context_passages=3))
    [first] = half.path_examples(graph, chunks, facts, one_hop, then=plain)
    assert first.question == example.question
    assert (
        half.path_examples(graph, chunks, facts, plain, then=one_hop)[0].question
        == example.question
    )


def test_an_entity_inside_a_longer_name_is_no_answer():
    from rayrag.index.kg_extract import inside_name

    sentence = (
        "The Continental Medicines Review Council hired "
        "PERSON_3f9a0c1e as Treasury Analyst in 2005."
    )

    def span(text: str) -> tuple[int, int]:
        start = sentence.index(text)
        return start, start + len(text)

    assert inside_name(sentence, *span("Treasury"))  # NER's "organisation" in a job title
    assert inside_name(sentence, *span("Analyst")) and inside_name(
        sentence, *span("Medicines Review")
    )
    assert not inside_name(sentence, *span("Treasury Analyst"))
    # "The" is no name part
    assert not inside_name(sentence, *span("Continental Medicines Review Council"))
    assert not inside_name(sentence, *span("2005"))


def test_phrases_most_chunks_repeat_are_boilerplate():
    from rayrag.training.contexts import ChunkRecord
    from rayrag.training.data import common_phrases

    chunks = [
        ChunkRecord(
            f"m{i}",
            f"m{i}",
            None,
            f"Firm {i} reported revenue with an operating margin of {i}%."
            + (" It treats chronic kidney disease." if i < 3 else ""),
        )
        for i in range(20)
    ]
    common = common_phrases(chunks)
    assert common("operating margin") and common("Operating  Margin")  # in 20 of 20 chunks
    assert not common("chronic kidney disease") and not common("never seen")  # in 3, in none
