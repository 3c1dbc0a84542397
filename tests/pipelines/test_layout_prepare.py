"""Per-segment redaction and chunking: chunks never straddle sections or pages, offsets point
into the redacted text, ids run doc#0.. in order, and a document without a layout is
prepared exactly as before."""

from __future__ import annotations

import pytest

from rayrag.config import resolve_config
from rayrag.pipelines.ingest_stages import DocumentPreparer
from rayrag.pipelines.layout_prepare import prepare_with_layout, redacted_text
from rayrag.types import Document, Span

EMAIL = "mara.lindqvist@example.org"
SECTIONS = [
    ("Safety", 1, f"Report faults to {EMAIL} at once. " + "The valve must stay shut. " * 30),
    ("Safety", 2, "Wear gloves near the pumps. " * 25),
    ("Safety > Checks", 2, "Check the seals every week and log it. " * 20),
]


@pytest.fixture(scope="module")
def preparer():
    config = resolve_config("demo", ["chunking.chunk_size=48", "chunking.chunk_overlap=8"])
    prepared = DocumentPreparer(config)
    prepared.warm_up()
    return prepared


def _structured() -> Document:
    text, spans = "", []
    for section, page, body in SECTIONS:
        spans.append(Span(len(text), len(text) + len(body) + 2, section, page))
        text += body + "\n\n"
    text = text[:-2]
    spans[-1] = Span(spans[-1].start, len(text), spans[-1].section, spans[-1].page)
    return Document(id="manual.pdf", text=text, title="Manual", layout=tuple(spans))


def test_chunks_stay_inside_their_segment(preparer) -> None:
    doc = _structured()
    batch = preparer([doc])
    redacted = redacted_text(preparer, doc)
    assert EMAIL not in redacted and "<EMAIL_ADDRESS>" in redacted
    assert [c.chunk_id for c in batch.chunks] == [
        f"manual.pdf#{i}" for i in range(len(batch.chunks))
    ]
    assert len(batch.chunks) > 6
    for chunk in batch.chunks:
        assert redacted[chunk.start : chunk.end] == chunk.text
        assert EMAIL not in chunk.text
    places = [(c.metadata["section"], c.metadata["page"]) for c in batch.chunks]
    assert places == sorted(places, key=[(s, p) for s, p, _ in SECTIONS].index)
    assert set(places) == {(s, p) for s, p, _ in SECTIONS}
    # No chunk mixes two segments' text.
    assert not [c for c in batch.chunks if "gloves" in c.text and "valve" in c.text]
    assert batch.pii_counts["manual.pdf"].get("EMAIL_ADDRESS") == 1


def test_plain_documents_are_prepared_as_before(preparer) -> None:
    plain = Document(id="d1", text=" ".join(body for _, _, body in SECTIONS), title="T")
    before = preparer([plain])
    after = prepare_with_layout(preparer, [plain])
    assert after.chunks == before.chunks and after.pii_counts == before.pii_counts
    assert "section" not in before.chunks[0].metadata
