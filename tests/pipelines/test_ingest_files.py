"""Ingest of a folder of real files on Ray Data, end to end: every format becomes chunks with
their section (and page), bad files are quarantined with reasons that quote nothing, ACLs
from sidecars and rule files reach every chunk, and a sentence planted on page 3 of the PDF
is retrieved (the `rayrag ask --retrieval-only` path) and cited with page 3."""

from __future__ import annotations

import json

import pytest

from rayrag.answering.response import AskResponse, Citation
from rayrag.config import resolve_config
from rayrag.index.bundle import IndexBundle
from rayrag.pipelines.ingest import ingest
from rayrag.types import Principal
from tests.data.files.makers import PLANTED, make_corpus_folder

pytestmark = [pytest.mark.slow, pytest.mark.integration]
MAX_BYTES = 100_000
QUESTION = "How often does the lighthouse at Corvane Point flash its green light?"


@pytest.fixture(scope="module")
def built(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("files") / "corpus"
    reasons = make_corpus_folder(root, max_file_bytes=MAX_BYTES)
    config = resolve_config(
        "demo", ["tracking.enabled=false", f"ingest.files.max_file_bytes={MAX_BYTES}"]
    )
    out = tmp_path_factory.mktemp("bundles") / "files"
    result = ingest(root, out, config, engine="ray_data", progress=lambda _: None)
    return config, result, IndexBundle.load(out), reasons


def test_files_become_chunks_with_structure(built) -> None:
    _, result, bundle, reasons = built
    chunks = bundle.chunks().to_pylist()
    docs = {c["doc_id"] for c in chunks}
    assert docs == {
        "ferry.html",
        "guide.md",
        "manual.pdf",
        "pump.docx",
        "readme.txt",
        "reports/fonts.pdf",
        "restricted/salaries.md",
    }
    meta = {c["chunk_id"]: json.loads(c["metadata"]) for c in chunks}
    pdf_pages = {meta[c["chunk_id"]]["page"] for c in chunks if c["doc_id"] == "manual.pdf"}
    assert pdf_pages == {1, 2, 3, 4}
    sections = {meta[c["chunk_id"]].get("section") for c in chunks}
    assert {"Navigation Lights", "Winter Service > Storm Days", "Safety > Checks"} <= sections
    assert result.counts["quarantined"] == len(reasons)


def test_quarantine_reasons_and_acls(built) -> None:
    _, result, bundle, reasons = built
    got = {q.doc_id: q.reason for q in result.quarantined}
    assert set(got) == set(reasons)
    for name, reason in reasons.items():
        assert got[name].startswith(reason)
    stored = [
        json.loads(line) for line in (bundle.path / "quarantine.jsonl").read_text().splitlines()
    ]
    assert {row["doc_id"] for row in stored} == set(reasons)
    assert not [r for r in got.values() if "harbour" in r.lower() or "corvane" in r.lower()]
    acl = {c["doc_id"]: c["acl"] for c in bundle.chunks().to_pylist()}
    assert acl["manual.pdf"] == ["harbour-ops"]
    assert acl["restricted/salaries.md"] == ["hr"] and acl["guide.md"] == ["public"]


def test_planted_page_three_sentence_is_cited_with_its_page(built, capsys) -> None:
    from rayrag.answering.pipeline import AnswerPipeline, LocalStages
    from rayrag.cli.ask import print_answer, print_evidence
    from rayrag.serve.sse import citations_meta

    config, _, bundle, _ = built
    pipeline = AnswerPipeline(config, LocalStages(bundle.path, None, config, generate=False))
    ops = Principal("ops", frozenset({"public", "harbour-ops"}))
    _, evidence = pipeline.evidence_sync(QUESTION, ops, None, 5)
    top = evidence.passages[0]
    assert top.doc_id == "manual.pdf" and "Corvane" in top.text and PLANTED.split()[-1] in top.text
    assert top.page == 3 and top.section == "Navigation Lights"
    cited = Citation.model_validate(citations_meta("r1", evidence.passages)["citations"][0])
    assert (cited.page, cited.section) == (3, "Navigation Lights")
    print_evidence(evidence)
    assert "Harbour Manual p. 3" in capsys.readouterr().out.splitlines()[0]
    response = AskResponse(
        answer="Every nine seconds [1].",
        citations=[cited],
        cited_markers=[1],
        finish_reason="stop",
        mode="hybrid",
    )
    print_answer(response)
    assert " *[1] Harbour Manual p. 3  doc=manual.pdf" in capsys.readouterr().out
    public = Principal("anon", frozenset({"public"}))
    _, hidden = pipeline.evidence_sync(QUESTION, public, None, 5)
    assert "manual.pdf" not in {p.doc_id for p in hidden.passages}
