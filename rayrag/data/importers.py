"""Importers that turn public datasets into rayrag's corpus and QA JSONL
(the README's Data formats).

HotpotQA as HippoRAG ships it (OSU-NLP-Group/HippoRAG `data/*_corpus.json` + questions),
MuSiQue (Trivedi et al. 2022) in its published JSONL shape, and Presidio-research's
generated PII sentences (microsoft/presidio-research) with their spans mapped to Presidio
entity names. Passage ids are content hashes of title + text, so importing the same data
twice gives the same ids and incremental ingest sees no change.

    >>> result = import_hotpotqa("../shared/data/hotpotqa_sample", "out/hotpotqa")
    >>> result.documents, result.questions, result.files["corpus"]
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayrag.data.readers import write_jsonl_atomic
from rayrag.errors import DataError
from rayrag.types import Document, Scalar

# Presidio-research and other PII sets name entities their own way; redaction and its
# evaluation speak Presidio's names. Every key is mapped on purpose:
#   * addresses, cities, countries, GPE/FAC are all places -> LOCATION (Presidio has no
#     street-address type; its spaCy recognizer reports them as LOCATION);
#   * DOMAIN_NAME values are URLs ("http://www.x.hu/") -> URL;
#   * PREFIX ("Mrs.", "Dr.") and TITLE (job titles) identify nobody and have no Presidio
#     recognizer, so they are left out and counted in `ImportResult.unmapped_entities`.
PRESIDIO_ENTITY_MAP: dict[str, str] = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "NAME": "PERSON",
    "FIRST_NAME": "PERSON",
    "LAST_NAME": "PERSON",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "EMAIL": "EMAIL_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "PHONE": "PHONE_NUMBER",
    "US_SSN": "US_SSN",
    "SSN": "US_SSN",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN_CODE",
    "IBAN": "IBAN_CODE",
    "IP_ADDRESS": "IP_ADDRESS",
    "LOCATION": "LOCATION",
    "ADDRESS": "LOCATION",
    "STREET_ADDRESS": "LOCATION",
    "CITY": "LOCATION",
    "COUNTRY": "LOCATION",
    "STATE": "LOCATION",
    "ZIP": "LOCATION",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",
    "DATE_TIME": "DATE_TIME",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
    "BIRTHDAY": "DATE_TIME",
    "URL": "URL",
    "DOMAIN_NAME": "URL",
    "ORGANIZATION": "ORGANIZATION",
    "ORG": "ORGANIZATION",
    "COMPANY": "ORGANIZATION",
    "NRP": "NRP",
    "NORP": "NRP",
    "NATIONALITY": "NRP",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "US_PASSPORT": "US_PASSPORT",
    "US_BANK_NUMBER": "US_BANK_NUMBER",
}

_HOPS_PREFIX = re.compile(r"^(\d+)hop")


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote and what it had to leave out (counts, never content)."""

    documents: int
    questions: int
    out_dir: Path
    files: dict[str, Path]
    missing_supporting: int = 0  # supporting titles found in neither corpus nor context
    duplicates: int = 0  # rows whose id (title + text hash) was already written
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows left out
    unmapped_entities: dict[str, int] = field(default_factory=dict)  # source type -> spans


def passage_id(title: str | None, text: str) -> str:
    """Stable passage id from content: the same title and text always give the same id."""
    digest = hashlib.sha256(f"{title or ''}\n{text}".encode()).hexdigest()
    return "p" + digest[:16]


class _CorpusBuilder:
    """Collects passages in first-seen order, deduplicated by content id."""

    def __init__(self, metadata: dict[str, Scalar] | None = None) -> None:
        self.metadata = dict(metadata or {})  # on every passage (e.g. the collection it belongs to)
        self.rows: dict[str, dict[str, Any]] = {}
        self.by_title: dict[str, str] = {}
        self.duplicates = 0

    def add(self, title: str | None, text: str, metadata: dict[str, Scalar] | None = None) -> str:
        doc_id = passage_id(title, text)
        if doc_id in self.rows:
            self.duplicates += 1
        else:
            doc = Document(
                id=doc_id, text=text, title=title, metadata={**self.metadata, **(metadata or {})}
            )
            self.rows[doc_id] = doc.to_dict()
        if title is not None:
            self.by_title.setdefault(title, doc_id)
        return doc_id


# ---------------------------------------------------------------- HotpotQA

# Wikipedia passages are public knowledge: the default `governance.redaction.policy_rules`
# map this collection to the `public_knowledge` policy (names kept, identifiers redacted).
WIKIPEDIA: dict[str, Scalar] = {"collection": "wikipedia"}


def import_hotpotqa(src: str | Path, out_dir: str | Path) -> ImportResult:
    """Import HotpotQA in HippoRAG's layout: a questions JSON and `*_corpus.json` beside it.

    `src` is the folder holding both, or the questions file itself.
    """
    questions_path, corpus_path = _hotpot_files(Path(src))
    builder = _CorpusBuilder(WIKIPEDIA | {"source": "hotpotqa"})
    dropped: Counter[str] = Counter()
    if corpus_path is not None:
        for title, sentences in _hotpot_corpus(corpus_path):
            _add_passage(builder, title, _join_sentences(sentences), dropped)
    raw_questions = _load_json(questions_path)
    if not isinstance(raw_questions, list):
        raise DataError(
            f"{questions_path}: expected a JSON list of "
            f"questions, got {type(raw_questions).__name__}"
        )
    qa_rows: list[dict[str, Any]] = []
    missing = 0
    for index, item in enumerate(raw_questions):
        row, n_missing = _hotpot_question(questions_path, index, item, builder, dropped)
        missing += n_missing
        if row is not None:
            qa_rows.append(row)
    return _write_import(Path(out_dir), builder, qa_rows, missing=missing, dropped=dropped)


def _hotpot_files(src: Path) -> tuple[Path, Path | None]:
    if src.is_file():
        corpus = src.with_name(src.stem + "_corpus.json")
        return src, corpus if corpus.is_file() else None
    if not src.is_dir():
        raise DataError(f"HotpotQA source not found: {src}")
    pairs = [
        (c.with_name(c.name.removesuffix("_corpus.json") + ".json"), c)
        for c in sorted(src.glob("*_corpus.json"))
    ]
    pairs = [(q, c) for q, c in pairs if q.is_file()]
    if len(pairs) == 1:
        return pairs[0]
    if len(pairs) > 1:
        names = ", ".join(q.name for q, _ in pairs)
        raise DataError(f"several HotpotQA question files in {src} ({names}); pass one of them")
    raise DataError(f"no HotpotQA pair NAME.json + NAME_corpus.json in {src}")


def _hotpot_corpus(path: Path) -> list[tuple[str, Any]]:
    """HippoRAG's `{title: [sentence, ...]}`; its newer `[{title, text}]` list is accepted too."""
    data = _load_json(path)
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list) and all(isinstance(d, dict) for d in data):
        items = [(d.get("title"), d.get("text")) for d in data]
    else:
        raise DataError(
            f"{path}: expected a JSON object {{title: [sentence, ...]}}, got {type(data).__name__}"
        )
    for position, (title, sentences) in enumerate(items):
        if not isinstance(title, str) or not _is_sentences(sentences):
            raise DataError(f"{path}: passage {position}: expected a title and a list of sentences")
    return items


def _hotpot_question(
    path: Path, index: int, item: Any, builder: _CorpusBuilder, dropped: Counter[str]
) -> tuple[dict[str, Any] | None, int]:
    where = f"{path}: question {index}"
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object, got {type(item).__name__}")
    qa_id = item.get("_id", item.get("id"))
    question, answer = item.get("question"), item.get("answer")
    facts, context = item.get("supporting_facts", []), item.get("context", [])
    if not isinstance(qa_id, str) or not isinstance(question, str) or not isinstance(answer, str):
        raise DataError(f"{where}: needs string '_id', 'question' and 'answer'")
    if not _is_pairs(facts) or not _is_pairs(context):
        raise DataError(
            f"{where}: 'supporting_facts' and 'context' must be lists of [title, ...] pairs"
        )
    # Context paragraphs missing from the corpus file still belong to the corpus:
    # otherwise a gold passage could be unretrievable by construction.
    for title, sentences in context:
        if title not in builder.by_title and _is_sentences(sentences):
            _add_passage(builder, title, _join_sentences(sentences), dropped)
    if not answer.strip():
        dropped["empty_answer"] += 1
        return None, 0
    supporting, missing = [], 0
    for title in dict.fromkeys(title for title, _ in facts):
        if title in builder.by_title:
            supporting.append(builder.by_title[title])
        else:
            missing += 1
    metadata = {k: item[k] for k in ("type", "level") if isinstance(item.get(k), str)}
    return _qa_row(qa_id, question, [answer], supporting, metadata), missing


def _join_sentences(sentences: Any) -> str:
    # HippoRAG joins with "": HotpotQA sentences carry their own leading space, and the
    # few that do not are mid-sentence splits ("...as a ." + "RAR file") that must glue.
    if isinstance(sentences, str):
        return sentences
    return "".join(sentences)


def _is_sentences(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(s, str) for s in value)
    )


def _is_pairs(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in value
    )


def _add_passage(
    builder: _CorpusBuilder, title: str, text: str, dropped: Counter[str]
) -> str | None:
    if not text.strip():
        dropped["empty_passage"] += 1
        return None
    return builder.add(title, text)


# ---------------------------------------------------------------- MuSiQue


def import_musique(
    src: str | Path, out_dir: str | Path, corpus: str | Path | None = None
) -> ImportResult:
    """Import MuSiQue questions (JSON list or JSONL) and, optionally, a `[{title, text}]` corpus.

    Every paragraph of every question becomes a corpus passage (deduplicated by content);
    unanswerable questions (MuSiQue-Full's `answerable: false`) are left out and counted.
    """
    src = Path(src)
    builder = _CorpusBuilder(WIKIPEDIA | {"source": "musique"})
    dropped: Counter[str] = Counter()
    if corpus is not None:
        corpus_path = Path(corpus)
        for position, item in enumerate(_load_json_records(corpus_path)):
            title, text = _musique_passage(corpus_path, f"passage {position}", item, "text")
            _add_passage(builder, title, text, dropped)
    qa_rows: list[dict[str, Any]] = []
    for index, item in enumerate(_load_json_records(src)):
        row = _musique_question(src, index, item, builder, dropped)
        if row is not None:
            qa_rows.append(row)
    return _write_import(Path(out_dir), builder, qa_rows, dropped=dropped)


def _musique_question(
    path: Path, index: int, item: Any, builder: _CorpusBuilder, dropped: Counter[str]
) -> dict[str, Any] | None:
    where = f"question {index}"
    if not isinstance(item, dict):
        raise DataError(f"{path}: {where}: expected an object, got {type(item).__name__}")
    qa_id, question, answer = item.get("id"), item.get("question"), item.get("answer")
    aliases, paragraphs = item.get("answer_aliases") or [], item.get("paragraphs")
    if not all(isinstance(v, str) for v in (qa_id, question, answer)):
        raise DataError(f"{path}: {where}: needs string 'id', 'question' and 'answer'")
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise DataError(f"{path}: {where}: 'answer_aliases' must be a list of strings")
    if not isinstance(paragraphs, list):
        raise DataError(f"{path}: {where}: 'paragraphs' must be a list")
    supporting: list[str] = []
    for position, paragraph in enumerate(paragraphs):
        title, text = _musique_passage(
            path, f"{where} paragraph {position}", paragraph, "paragraph_text"
        )
        doc_id = _add_passage(builder, title, text, dropped)
        if doc_id is not None and paragraph.get("is_supporting") is True:
            supporting.append(doc_id)
    if item.get("answerable") is False:
        dropped["unanswerable"] += 1
        return None
    answers = [a for a in dict.fromkeys([answer, *aliases]) if a.strip()]
    if not answers:
        dropped["empty_answer"] += 1
        return None
    hops = _HOPS_PREFIX.match(qa_id)
    metadata = {"hops": int(hops.group(1))} if hops else {}
    return _qa_row(qa_id, question, answers, list(dict.fromkeys(supporting)), metadata)


def _musique_passage(path: Path, where: str, item: Any, text_key: str) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise DataError(f"{path}: {where}: expected an object, got {type(item).__name__}")
    title = item.get("title")
    text = item.get(text_key, item.get("text"))
    if not isinstance(title, str) or not isinstance(text, str):
        raise DataError(f"{path}: {where}: needs string 'title' and '{text_key}'")
    return title, text


# ---------------------------------------------------------------- Presidio


def import_presidio(src: str | Path, out_dir: str | Path) -> ImportResult:
    """Import presidio-research generated sentences: a corpus plus `pii_labels.jsonl`.

    One document per sentence (id from the text, so duplicated sentences collapse);
    labels are `{"id", "spans": [{"entity_type", "start", "end"}]}` in Presidio names.
    `qa.jsonl` is written empty: this set measures redaction, not question answering.
    """
    path = _presidio_file(Path(src))
    records = _load_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of sentences, got {type(records).__name__}")
    builder = _CorpusBuilder()
    dropped: Counter[str] = Counter()
    unmapped: Counter[str] = Counter()
    labels: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        text, spans, template_id = _presidio_record(path, index, record)
        if not text.strip():
            dropped["empty_text"] += 1
            continue
        before = builder.duplicates
        metadata = {"template_id": template_id} if template_id is not None else {}
        doc_id = builder.add(None, text, metadata)
        if builder.duplicates > before:
            continue  # same sentence, same labels: the first copy already stands for it
        labels.append({"id": doc_id, "spans": _map_spans(spans, unmapped)})
    out = Path(out_dir)
    result = _write_import(out, builder, [], dropped=dropped)
    labels_path = out / "pii_labels.jsonl"
    write_jsonl_atomic(labels_path, labels)
    return ImportResult(
        documents=result.documents,
        questions=0,
        out_dir=out,
        files={**result.files, "pii_labels": labels_path},
        duplicates=result.duplicates,
        dropped=result.dropped,
        unmapped_entities=dict(sorted(unmapped.items())),
    )


def _presidio_file(src: Path) -> Path:
    if src.is_dir():
        candidates = sorted(src.glob("*.json"))
        if len(candidates) != 1:
            raise DataError(f"expected exactly one .json file in {src}, found {len(candidates)}")
        return candidates[0]
    return src


def _presidio_record(
    path: Path, index: int, record: Any
) -> tuple[str, list[dict[str, Any]], Scalar]:
    where = f"{path}: record {index}"
    if not isinstance(record, dict) or not isinstance(record.get("full_text"), str):
        raise DataError(f"{where}: expected an object with string 'full_text'")
    text, spans = record["full_text"], record.get("spans") or []
    if not isinstance(spans, list):
        raise DataError(f"{where}: 'spans' must be a list")
    for span in spans:
        if not (
            isinstance(span, dict)
            and isinstance(span.get("entity_type"), str)
            and isinstance(span.get("start_position"), int)
            and isinstance(span.get("end_position"), int)
            and 0 <= span["start_position"] < span["end_position"] <= len(text)
        ):
            raise DataError(
                f"{where}: each span needs 'entity_type' and in-range integer positions"
            )
    template_id = record.get("template_id")
    return text, spans, template_id if isinstance(template_id, (str, int)) else None


def _map_spans(spans: list[dict[str, Any]], unmapped: Counter[str]) -> list[dict[str, Any]]:
    mapped = []
    for span in spans:
        entity = PRESIDIO_ENTITY_MAP.get(span["entity_type"].upper())
        if entity is None:
            unmapped[span["entity_type"]] += 1
            continue
        mapped.append(
            {"entity_type": entity, "start": span["start_position"], "end": span["end_position"]}
        )
    return sorted(mapped, key=lambda s: (s["start"], s["end"], s["entity_type"]))


# ---------------------------------------------------------------- shared


def _qa_row(
    qa_id: str,
    question: str,
    answers: list[str],
    supporting: list[str],
    metadata: dict[str, Scalar],
) -> dict[str, Any]:
    return {
        "id": qa_id,
        "question": question,
        "answers": answers,
        "supporting_ids": supporting,
        "metadata": metadata,
    }


def _write_import(
    out_dir: Path,
    builder: _CorpusBuilder,
    qa_rows: list[dict[str, Any]],
    *,
    missing: int = 0,
    dropped: Counter[str] | None = None,
) -> ImportResult:
    if not builder.rows:
        raise DataError(f"import produced no documents for {out_dir}")
    corpus_path, qa_path = out_dir / "corpus.jsonl", out_dir / "qa.jsonl"
    write_jsonl_atomic(corpus_path, builder.rows.values())
    write_jsonl_atomic(qa_path, qa_rows)
    return ImportResult(
        documents=len(builder.rows),
        questions=len(qa_rows),
        out_dir=out_dir,
        files={"corpus": corpus_path, "qa": qa_path},
        missing_supporting=missing,
        duplicates=builder.duplicates,
        dropped=dict(sorted((dropped or Counter()).items())),
    )


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise DataError(f"not valid JSON: {path}{where}") from None


def _load_json_records(path: Path) -> list[Any]:
    """A JSON list, or JSONL (one value a line): MuSiQue ships JSONL, derived sets use lists."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    raw = path.read_bytes()
    if raw.lstrip()[:1] == b"[":
        data = _load_json(path)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list or JSONL")
        return data
    records = []
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"not valid JSON or JSONL: {path} (line {line_no})") from None
    if not records:
        raise DataError(f"file is empty: {path}")
    return records
