"""Redaction and chunking per layout segment, for documents parsed from structured files.

A document with a layout (sections, pages: `Document.layout`) is redacted and chunked one
segment at a time, so redaction (which changes lengths) cannot shift a segment's offsets and
no chunk straddles two sections or pages. The redacted document text is the redacted
segments in order; chunk ids stay `doc#0, doc#1, ...` in order and `start/end` stay offsets
into that text. Each chunk's metadata gets "section" (the heading path, which the embedder
puts before the chunk) and "page" (1-based) where the segment has them. A document without
a layout is one segment: its chunks are exactly what `DocumentPreparer` makes of it.

    >>> batch = prepare_with_layout(preparer, documents)  # preparer warmed up
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from rayrag.index.bundle import REDACTION_POLICY_KEY
from rayrag.types import Chunk, Document, Span


def segments_of(doc: Document) -> tuple[Span, ...]:
    """The document's layout, or one span over its whole text."""
    return doc.layout or (Span(0, len(doc.text)),)


def prepare_with_layout(preparer: Any, documents: list[Document]) -> Any:
    """`DocumentPreparer.__call__` for a batch holding documents with a layout: the
    preparer's own redactor (`redact_batch`, as for whole documents) and chunker, applied
    per segment. Returns a `PreparedBatch`."""
    from rayrag.pipelines.ingest_stages import PreparedBatch

    redaction = preparer.config.governance.redaction
    policies = [redaction.policy_for(doc.metadata) for doc in documents]
    titles = [doc.title or "" for doc in documents]
    pieces: list[str] = []
    piece_policies: list[str] = []
    owners: list[tuple[int, Span]] = []
    for i, doc in enumerate(documents):
        for span in segments_of(doc):
            pieces.append(doc.text[span.start : span.end])
            piece_policies.append(policies[i])
            owners.append((i, span))
    counts: list[Counter[str]] = [Counter() for _ in documents]
    redactor = preparer._redactor
    if redactor is not None:
        results = redactor.redact_batch(titles + pieces, policies + piece_policies)
        for i in range(len(documents)):
            titles[i] = results[i].text
            counts[i].update(results[i].counts)
        for k, (i, _) in enumerate(owners):
            pieces[k] = results[len(documents) + k].text
            counts[i].update(results[len(documents) + k].counts)
    # Every segment is chunked as its own text; offsets then move to the document's.
    segment_docs = []
    offsets: list[int] = []
    lengths: dict[int, int] = Counter()
    for k, (i, _) in enumerate(owners):
        doc = documents[i]
        offsets.append(lengths[i])
        lengths[i] += len(pieces[k])
        segment_docs.append(Document(id=f"{doc.id}\x00{k}", text=pieces[k]))
    chunked: dict[str, list[Chunk]] = {}
    for chunk in preparer._chunker.chunk_documents(segment_docs):
        chunked.setdefault(chunk.doc_id, []).append(chunk)
    chunks: list[Chunk] = []
    numbers: Counter[str] = Counter()
    for k, (i, span) in enumerate(owners):
        doc = documents[i]
        title = titles[i] if doc.title is not None else None
        metadata = dict(doc.metadata)
        if redactor is not None:  # which policy redacted it: a query is redacted the same way
            metadata[REDACTION_POLICY_KEY] = policies[i]
        if span.section is not None:
            metadata["section"] = span.section
        if span.page is not None:
            metadata["page"] = span.page
        for piece in chunked.get(segment_docs[k].id, []):
            chunks.append(
                replace(
                    piece,
                    chunk_id=f"{doc.id}#{numbers[doc.id]}",
                    doc_id=doc.id,
                    start=piece.start + offsets[k],
                    end=piece.end + offsets[k],
                    acl=tuple(doc.acl),
                    title=title,
                    metadata=metadata,
                )
            )
            numbers[doc.id] += 1
    return PreparedBatch(
        chunks=chunks,
        pii_counts={doc.id: dict(sorted(counts[i].items())) for i, doc in enumerate(documents)},
        redacted_titles={
            doc.id: (titles[i] if doc.title is not None else None)
            for i, doc in enumerate(documents)
        },
    )


def redacted_text(preparer: Any, doc: Document) -> str:
    """The document's redacted text as its chunks' offsets see it (the redacted segments in
    order); for tests and tools that check `text[start:end] == chunk.text`."""
    pieces = [doc.text[s.start : s.end] for s in segments_of(doc)]
    if preparer._redactor is None:
        return "".join(pieces)
    policy = preparer.config.governance.redaction.policy_for(doc.metadata)
    return "".join(r.text for r in preparer._redactor.redact_batch(pieces, [policy] * len(pieces)))
