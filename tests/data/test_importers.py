"""Tests for rayrag.data.importers: HotpotQA (real subset), MuSiQue (inline),
Presidio (real subset)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rayrag.data.importers import (
    PRESIDIO_ENTITY_MAP,
    import_hotpotqa,
    import_musique,
    import_presidio,
    passage_id,
)
from rayrag.data.readers import read_corpus, read_qa
from rayrag.errors import DataError

DATA = Path(__file__).resolve().parents[1] / "fixtures"  # tests/fixtures/README.md
HOTPOT = DATA / "hotpotqa_sample"
PRESIDIO = DATA / "pii" / "presidio_generated_large.json"
PRESIDIO_NAMES = {
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "LOCATION",
    "DATE_TIME",
    "URL",
    "ORGANIZATION",
    "NRP",
    "US_DRIVER_LICENSE",
    "US_PASSPORT",
    "US_BANK_NUMBER",
}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- HotpotQA (real sample)


@pytest.fixture(scope="module")
def hotpot(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("hotpot")
    return import_hotpotqa(HOTPOT, out)


def test_hotpot_sample_counts_and_contract(hotpot) -> None:
    assert (hotpot.documents, hotpot.questions, hotpot.missing_supporting) == (350, 35, 0)
    corpus = read_corpus(hotpot.files["corpus"], strict=True)
    qa = read_qa(hotpot.files["qa"])
    assert len(corpus.documents) == 350 and len(qa) == 35
    ids = {d.id for d in corpus.documents}
    for pair in qa:
        assert len(pair.supporting_ids) >= 2  # every HotpotQA question has two gold titles
        assert set(pair.supporting_ids) <= ids
        assert pair.metadata["type"] in {"bridge", "comparison"}
        assert pair.metadata["level"] in {"easy", "medium", "hard"}
    assert Counter(p.metadata["type"] for p in qa) == {"bridge": 28, "comparison": 7}


def test_hotpot_passage_text_and_id(hotpot) -> None:
    source = json.loads((HOTPOT / "hotpotqa_train_corpus.json").read_text())
    by_title = {d.title: d for d in read_corpus(hotpot.files["corpus"]).documents}
    doc = by_title["Demon Dice"]
    assert doc.text == "".join(source["Demon Dice"])
    assert "Tim Brown. In it, each player" in doc.text  # sentences keep their own spaces
    assert doc.id == passage_id("Demon Dice", doc.text)


def test_hotpot_gold_titles_map_to_supporting_ids(hotpot) -> None:
    questions = json.loads((HOTPOT / "hotpotqa_train.json").read_text())
    title_of = {d.id: d.title for d in read_corpus(hotpot.files["corpus"]).documents}
    for raw, pair in zip(questions, read_qa(hotpot.files["qa"]), strict=True):
        assert pair.id == raw["_id"] and pair.answers == [raw["answer"]]
        gold = list(dict.fromkeys(t for t, _ in raw["supporting_facts"]))
        assert [title_of[i] for i in pair.supporting_ids] == gold


def test_hotpot_ids_are_stable_across_imports(hotpot, tmp_path: Path) -> None:
    again = import_hotpotqa(HOTPOT / "hotpotqa_train.json", tmp_path)  # the file form of src
    assert again.files["corpus"].read_bytes() == hotpot.files["corpus"].read_bytes()
    assert again.files["qa"].read_bytes() == hotpot.files["qa"].read_bytes()


def test_hotpot_context_fills_corpus_gaps_and_counts_missing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "mini_corpus.json").write_text(json.dumps({"Alpha": ["Alpha is first.", " It leads."]}))
    (src / "mini.json").write_text(
        json.dumps(
            [
                {
                    "_id": "q1",
                    "question": "Which?",
                    "answer": "Beta",
                    "type": "bridge",
                    "level": "easy",
                    "supporting_facts": [["Alpha", 0], ["Beta", 0], ["Gamma", 0], ["Alpha", 1]],
                    "context": [
                        ["Alpha", ["Alpha is first.", " It leads."]],
                        ["Beta", ["Beta is second."]],
                    ],
                }
            ]
        )
    )
    result = import_hotpotqa(src, tmp_path / "out")
    assert (result.documents, result.questions, result.missing_supporting) == (2, 1, 1)
    (pair,) = read_qa(result.files["qa"])
    assert pair.supporting_ids == [
        passage_id("Alpha", "Alpha is first. It leads."),
        passage_id("Beta", "Beta is second."),
    ]


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({}, "no HotpotQA pair"),
        ({"x.json": "[", "x_corpus.json": "{}"}, r"not valid JSON: .*x\.json"),
        ({"x.json": "[]", "x_corpus.json": "[1, 2]"}, r"x_corpus\.json: expected a JSON object"),
        ({"x.json": '{"a": 1}', "x_corpus.json": "{}"}, r"x\.json: expected a JSON list"),
        ({"x.json": '[{"_id": "q"}]', "x_corpus.json": "{}"}, r"x\.json: question 0: needs string"),
    ],
    ids=["no_pair", "bad_json", "corpus_shape", "questions_shape", "question_fields"],
)
def test_hotpot_bad_input(tmp_path: Path, files: dict[str, str], match: str) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=match):
        import_hotpotqa(tmp_path, tmp_path / "out")


def test_hotpot_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        import_hotpotqa(tmp_path / "nope", tmp_path / "out")


# ---------------------------------------------------------------- MuSiQue (fixture)

SHARED = {"title": "Kestrel Works", "paragraph_text": "Kestrel Works was founded by Ada Brook."}
MUSIQUE = [
    {
        "id": "2hop__101_202",
        "question": "Who founded the maker of the Falcon?",
        "answer": "Ada Brook",
        "answer_aliases": ["A. Brook", "Ada Brook"],
        "answerable": True,
        "paragraphs": [
            {
                "idx": 0,
                "title": "Falcon",
                "paragraph_text": "The Falcon is made by Kestrel Works.",
                "is_supporting": True,
            },
            {"idx": 1, **SHARED, "is_supporting": True},
            {
                "idx": 2,
                "title": "Noise",
                "paragraph_text": "Unrelated text.",
                "is_supporting": False,
            },
        ],
    },
    {
        "id": "3hop1__7_8_9",
        "question": "Where was the founder of Kestrel Works born?",
        "answer": "Lund",
        "answer_aliases": [],
        "paragraphs": [
            {"idx": 0, **SHARED, "is_supporting": True},
            {
                "idx": 1,
                "title": "Ada Brook",
                "paragraph_text": "Ada Brook was born in Lund.",
                "is_supporting": True,
            },
        ],
    },
    {
        "id": "2hop__5_6",
        "question": "Unanswerable?",
        "answer": "x",
        "answerable": False,
        "paragraphs": [
            {"idx": 0, "title": "Other", "paragraph_text": "Other text.", "is_supporting": False}
        ],
    },
]


@pytest.mark.parametrize("form", ["json", "jsonl"])
def test_musique_fixture(tmp_path: Path, form: str) -> None:
    src = tmp_path / f"musique.{form}"
    if form == "json":
        src.write_text(json.dumps(MUSIQUE))
    else:
        src.write_text("\n".join(json.dumps(q) for q in MUSIQUE) + "\n")
    corpus = tmp_path / "extra.json"
    corpus.write_text(
        json.dumps(
            [
                {"title": "Extra", "text": "Extra passage."},
                SHARED | {"text": SHARED["paragraph_text"]},
            ]
        )
    )
    result = import_musique(src, tmp_path / "out", corpus=corpus)
    docs = read_corpus(result.files["corpus"], strict=True).documents
    # Extra + Kestrel Works (once) + Falcon + Noise + Ada Brook + Other (from the skipped question)
    assert [d.title for d in docs] == [
        "Extra",
        "Kestrel Works",
        "Falcon",
        "Noise",
        "Ada Brook",
        "Other",
    ]
    assert result.duplicates == 2 and result.dropped == {"unanswerable": 1}
    # Wikipedia passages: the default redaction rules map this collection to public_knowledge.
    assert {tuple(sorted(d.metadata.items())) for d in docs} == {
        (("collection", "wikipedia"), ("source", "musique"))
    }
    first, second = read_qa(result.files["qa"])
    assert first.answers == ["Ada Brook", "A. Brook"] and first.metadata == {"hops": 2}
    kestrel = passage_id("Kestrel Works", SHARED["paragraph_text"])
    assert first.supporting_ids == [
        passage_id("Falcon", "The Falcon is made by Kestrel Works."),
        kestrel,
    ]
    assert second.metadata == {"hops": 3} and second.supporting_ids[0] == kestrel


def test_musique_ids_stable(tmp_path: Path) -> None:
    src = tmp_path / "m.json"
    src.write_text(json.dumps(MUSIQUE))
    a = import_musique(src, tmp_path / "a")
    b = import_musique(src, tmp_path / "b")
    assert a.files["corpus"].read_bytes() == b.files["corpus"].read_bytes()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"id": 1}', r"question 0: expected an object|needs string"),
        ("[1]", r"m\.json: question 0: expected an object"),
        (
            '[{"id": "a", "question": "q", "answer": "x", "paragraphs": "no"}]',
            "'paragraphs' must be a list",
        ),
        (
            '[{"id": "a", "question": "q", "answer": "x", "paragraphs": [{"title": 1}]}]',
            "paragraph 0: needs string 'title'",
        ),
        ("not json\n", r"not valid JSON or JSONL: .*m\.json \(line 1\)"),
    ],
    ids=["object_not_list", "item_not_object", "paragraphs_shape", "paragraph_fields", "garbage"],
)
def test_musique_bad_input(tmp_path: Path, content: str, match: str) -> None:
    src = tmp_path / "m.json"
    src.write_text(content)
    with pytest.raises(DataError, match=match):
        import_musique(src, tmp_path / "out")


def test_musique_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        import_musique(tmp_path / "none.jsonl", tmp_path / "out")


# ---------------------------------------------------------------- Presidio (real file)


@pytest.fixture(scope="module")
def presidio(tmp_path_factory: pytest.TempPathFactory):
    return import_presidio(PRESIDIO, tmp_path_factory.mktemp("pii"))


def test_presidio_counts_and_files(presidio) -> None:
    records = json.loads(PRESIDIO.read_text())
    unique_texts = {r["full_text"] for r in records}
    assert presidio.documents == len(unique_texts) == 264
    assert presidio.duplicates == len(records) - len(unique_texts)
    assert presidio.questions == 0 and presidio.files["qa"].read_text() == ""
    docs = read_corpus(presidio.files["corpus"], strict=True).documents
    labels = _rows(presidio.files["pii_labels"])
    assert [d.id for d in docs] == [row["id"] for row in labels]
    assert all(d.id == passage_id(None, d.text) and "template_id" in d.metadata for d in docs)


def test_presidio_every_source_type_is_mapped_or_deliberately_dropped(presidio) -> None:
    source_types = {s["entity_type"] for r in json.loads(PRESIDIO.read_text()) for s in r["spans"]}
    dropped = set(presidio.unmapped_entities)
    assert dropped == {"PREFIX", "TITLE"}
    assert source_types - dropped <= set(PRESIDIO_ENTITY_MAP)
    assert set(PRESIDIO_ENTITY_MAP.values()) <= PRESIDIO_NAMES
    assert (
        PRESIDIO_ENTITY_MAP["ADDRESS"] == "LOCATION" and PRESIDIO_ENTITY_MAP["DOMAIN_NAME"] == "URL"
    )


def test_presidio_spans_keep_offsets_and_use_presidio_names(presidio) -> None:
    records = json.loads(PRESIDIO.read_text())
    labels = {row["id"]: row["spans"] for row in _rows(presidio.files["pii_labels"])}
    first = records[0]
    spans = labels[passage_id(None, first["full_text"])]
    assert {"entity_type": "PERSON", "start": 144, "end": 148} in spans
    assert first["full_text"][144:148] == "Judy"
    counts = Counter(s["entity_type"] for spans in labels.values() for s in spans)
    assert set(counts) <= PRESIDIO_NAMES
    assert counts["LOCATION"] > 0 and counts["URL"] > 0 and counts["US_SSN"] > 0
    for spans in labels.values():
        assert spans == sorted(spans, key=lambda s: (s["start"], s["end"], s["entity_type"]))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{}", "expected a JSON list"),
        ('[{"text": 1}]', "record 0: expected an object"),
        (
            (
                '[{"full_text": "ab", "spans": [{"entity_type": '
                '"PERSON", "start_position": 0, "end_position": 9}]}]'
            ),
            "in-range integer positions",
        ),
    ],
    ids=["not_list", "no_full_text", "span_out_of_range"],
)
def test_presidio_bad_input(tmp_path: Path, content: str, match: str) -> None:
    src = tmp_path / "p.json"
    src.write_text(content)
    with pytest.raises(DataError, match=match):
        import_presidio(src, tmp_path / "out")
