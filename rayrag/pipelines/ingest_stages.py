"""The per-batch work of ingest, as plain classes plus thin Ray Data adapters.

`DocumentPreparer` redacts and chunks documents; `Embedder` (embed.py) embeds chunks;
`TripleExtractor` (kg_extract.py) extracts entities and relations. Each has a Ray Data
adapter here (`PrepareStage`, `EmbedStage`, `ExtractStage`): a callable class that builds
its component once per actor and converts a numpy batch to and from domain objects
(the pattern of Anyscale's llm-applications `EmbedChunks`). Tests call the plain classes.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayrag.config import RAGConfig
from rayrag.index.bundle import REDACTION_POLICY_KEY
from rayrag.types import Chunk, Document, Span


@dataclass
class PreparedBatch:
    """Chunks of a batch of documents, and per-document redaction counts (never values)."""

    chunks: list[Chunk]
    pii_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    redacted_titles: dict[str, str | None] = field(default_factory=dict)


class DocumentPreparer:
    """Redact (title and text) with Presidio, then chunk by embedder tokens.

    >>> preparer = DocumentPreparer(cfg); preparer.warm_up()
    >>> batch = preparer([Document(id="d1", text="...")])
    """

    def __init__(self, config: RAGConfig) -> None:
        self.config = config
        self._redactor: Any = None
        self._chunker: Any = None

    def warm_up(self) -> None:
        if self._chunker is not None:
            return
        from rayrag.index.chunking import Chunker

        if self.config.governance.redaction.enabled:
            from rayrag.governance.privacy.redaction import Redactor

            self._redactor = Redactor(self.config.governance.redaction)
            self._redactor.warm_up()
        self._chunker = Chunker(self.config.chunking, embedding=self.config.embedding)

    def __call__(self, documents: list[Document]) -> PreparedBatch:
        self.warm_up()
        if any(doc.layout for doc in documents):  # structured files: per section and page
            from rayrag.pipelines.layout_prepare import prepare_with_layout

            return prepare_with_layout(self, documents)
        titles = [doc.title or "" for doc in documents]
        texts = [doc.text for doc in documents]
        counts: dict[str, dict[str, int]] = {doc.id: {} for doc in documents}
        redaction = self.config.governance.redaction
        policies = [redaction.policy_for(doc.metadata) for doc in documents]
        if self._redactor is not None:
            results = self._redactor.redact_batch(titles + texts, policies + policies)
            n = len(documents)
            for i, doc in enumerate(documents):
                title_result, text_result = results[i], results[n + i]
                titles[i], texts[i] = title_result.text, text_result.text
                merged = Counter(title_result.counts) + Counter(text_result.counts)
                counts[doc.id] = dict(sorted(merged.items()))
        chunks: list[Chunk] = []
        redacted_titles: dict[str, str | None] = {}
        for doc, title, text, policy in zip(documents, titles, texts, policies, strict=True):
            clean_title = title if doc.title is not None else None
            redacted_titles[doc.id] = clean_title
            # Each chunk says which policy redacted it: a query over it is redacted the same way.
            metadata = (
                {**doc.metadata, REDACTION_POLICY_KEY: policy}
                if self._redactor is not None
                else doc.metadata
            )
            redacted = Document(
                id=doc.id,
                text=text,
                title=clean_title,
                acl=doc.acl,
                metadata=metadata,
                updated_at=doc.updated_at,
            )
            chunks.extend(self._chunker(redacted))
        return PreparedBatch(chunks=chunks, pii_counts=counts, redacted_titles=redacted_titles)


# ---------------------------------------------------------------- row <-> object helpers


def document_to_row(doc: Document, position: int) -> dict[str, Any]:
    return {
        "position": position,  # corpus order: restores a deterministic order after Ray
        "id": doc.id,
        "title": doc.title if doc.title is not None else "",
        "has_title": doc.title is not None,
        "text": doc.text,
        "acl": list(doc.acl),
        "metadata": json.dumps(doc.metadata, sort_keys=True),
        "updated_at": doc.updated_at or "",
        "layout": layout_to_json(doc.layout),
    }


def layout_to_json(layout: tuple[Span, ...]) -> str:
    return json.dumps([[s.start, s.end, s.section, s.page] for s in layout])


def layout_from_json(raw: str) -> tuple[Span, ...]:
    return tuple(Span(*row) for row in json.loads(raw or "[]"))


def _row_to_document(batch: dict[str, np.ndarray], i: int) -> Document:
    return Document(
        id=str(batch["id"][i]),
        text=str(batch["text"][i]),
        title=str(batch["title"][i]) if bool(batch["has_title"][i]) else None,
        acl=tuple(str(g) for g in batch["acl"][i]),
        metadata=json.loads(str(batch["metadata"][i])),
        updated_at=str(batch["updated_at"][i]) or None,
        layout=layout_from_json(str(batch["layout"][i])) if "layout" in batch else (),
    )


def _row_to_chunk(batch: dict[str, np.ndarray], i: int) -> Chunk:
    return Chunk(
        chunk_id=str(batch["chunk_id"][i]),
        doc_id=str(batch["doc_id"][i]),
        text=str(batch["text"][i]),
        start=int(batch["start"][i]),
        end=int(batch["end"][i]),
        acl=tuple(str(g) for g in batch["acl"][i]),
        title=str(batch["title"][i]) if bool(batch["has_title"][i]) else None,
        metadata=json.loads(str(batch["metadata"][i])),
    )


class PrepareStage:
    """Ray Data adapter: document rows in, chunk rows out (one output row per chunk)."""

    def __init__(self, config_json: str, extract: bool = False) -> None:
        config = RAGConfig.model_validate_json(config_json)
        self.preparer = DocumentPreparer(config)
        self.preparer.warm_up()
        self.extractor = None
        if extract:
            from rayrag.index.kg_extract import TripleExtractor

            self.extractor = TripleExtractor(config.kg)
            self.extractor.warm_up()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        documents = [_row_to_document(batch, i) for i in range(len(batch["id"]))]
        positions = {doc.id: int(batch["position"][i]) for i, doc in enumerate(documents)}
        prepared = self.preparer(documents)
        rows: dict[str, list[Any]] = {
            key: []
            for key in (
                "position",
                "chunk_index",
                "chunk_id",
                "doc_id",
                "title",
                "has_title",
                "text",
                "start",
                "end",
                "acl",
                "metadata",
                "doc_pii",
            )
        }
        seen: set[str] = set()
        for index_in_doc, chunk in _with_index(prepared.chunks):
            rows["position"].append(positions[chunk.doc_id])
            rows["chunk_index"].append(index_in_doc)
            rows["chunk_id"].append(chunk.chunk_id)
            rows["doc_id"].append(chunk.doc_id)
            rows["title"].append(chunk.title or "")
            rows["has_title"].append(chunk.title is not None)
            rows["text"].append(chunk.text)
            rows["start"].append(chunk.start)
            rows["end"].append(chunk.end)
            rows["acl"].append(list(chunk.acl))
            rows["metadata"].append(json.dumps(chunk.metadata, sort_keys=True))
            # Document-level counts ride on the document's first chunk only.
            first = chunk.doc_id not in seen
            seen.add(chunk.doc_id)
            rows["doc_pii"].append(json.dumps(prepared.pii_counts[chunk.doc_id]) if first else "")
        if self.extractor is not None:
            rows["extraction"] = [
                json.dumps(e.to_dict(), sort_keys=True) for e in self.extractor(prepared.chunks)
            ]
        return rows


def _with_index(chunks: list[Chunk]) -> list[tuple[int, Chunk]]:
    counters: Counter[str] = Counter()
    out = []
    for chunk in chunks:
        out.append((counters[chunk.doc_id], chunk))
        counters[chunk.doc_id] += 1
    return out


class EmbedStage:
    """Ray Data adapter: adds an `embedding` column (float32, L2-normalised) of each chunk's
    contextual text (`passage_text`: title, heading path, chunk)."""

    def __init__(self, config_json: str, num_threads: int | None = None) -> None:
        import torch

        from rayrag.index.embedder import Embedder

        config = RAGConfig.model_validate_json(config_json)
        # `num_threads` (the pipeline passes the actor's CPU reservation), else the config's,
        # else every core: in-process, one stage after another, nothing else competes.
        torch.set_num_threads(num_threads or config.embedding.num_threads or _physical_cores())
        self.embedder = Embedder(config.embedding)
        self.embedder.warm_up()
        self.text_format = config.embedding.text_format

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from rayrag.index.embedder import passage_text

        texts = [
            passage_text(
                str(batch["text"][i]),
                str(batch["title"][i]) if bool(batch["has_title"][i]) else None,
                json.loads(str(batch["metadata"][i])),
                self.text_format,
            )
            for i in range(len(batch["text"]))
        ]
        batch["embedding"] = self.embedder.encode(texts)
        return batch


class ExtractStage:
    """Ray Data adapter: adds an `extraction` column (JSON of entities and triples)."""

    def __init__(self, config_json: str) -> None:
        from rayrag.index.kg_extract import TripleExtractor

        config = RAGConfig.model_validate_json(config_json)
        self.extractor = TripleExtractor(config.kg)
        self.extractor.warm_up()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        chunks = [_row_to_chunk(batch, i) for i in range(len(batch["chunk_id"]))]
        extractions = self.extractor(chunks)
        batch["extraction"] = np.array(
            [json.dumps(e.to_dict(), sort_keys=True) for e in extractions], dtype=object
        )
        return batch


def _physical_cores() -> int:
    import os

    return max(
        1,
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
    )
