"""Domain types shared by every stage: documents, chunks, triples, evidence, answers.

Plain frozen dataclasses: cheap to build, picklable for Ray, no behaviour beyond
serialisation helpers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PUBLIC_GROUP = "public"
Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Span:
    """A stretch [start, end) of a document's text with its heading path and page.

    `section`: "Part > Section" (None outside any heading); `page`: 1-based (PDFs), else None.
    """

    start: int
    end: int
    section: str | None = None
    page: int | None = None


@dataclass(frozen=True)
class Document:
    """One corpus document (a row of the corpus JSONL, or a parsed file).

    `layout`: for a structured file, spans that partition `text` in order (each chunk stays
    inside one, so it keeps its section and page); () for plain text."""

    id: str
    text: str
    title: str | None = None
    acl: tuple[str, ...] = (PUBLIC_GROUP,)
    metadata: dict[str, Scalar] = field(default_factory=dict)
    updated_at: str | None = None
    layout: tuple[Span, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["acl"] = list(self.acl)
        if not self.layout:  # plain documents keep their old row shape
            row.pop("layout")
        return row


@dataclass(frozen=True)
class Chunk:
    """A token-bounded span of a (redacted) document; the unit that is embedded and indexed."""

    chunk_id: str
    doc_id: str
    text: str
    start: int  # character offset in the redacted document text
    end: int  # exclusive
    acl: tuple[str, ...] = (PUBLIC_GROUP,)
    title: str | None = None
    metadata: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class Triple:
    """A relation extracted from one chunk: (subject, relation, object) with provenance."""

    subject: str
    relation: str
    object: str
    chunk_id: str
    doc_id: str
    confidence: float


@dataclass(frozen=True)
class Principal:
    """Who is asking: an identity and the ACL groups it may read."""

    name: str
    groups: frozenset[str] = frozenset({PUBLIC_GROUP})

    def may_read(self, acl: tuple[str, ...] | list[str]) -> bool:
        return bool(self.groups.intersection(acl))


@dataclass(frozen=True)
class RedactedQuestion:
    """A question as a bundle's redaction policies see it.

    `forms`: policy -> the question redacted under it, one per policy the bundle's documents
    were redacted with ({} when nothing is redacted: `text` serves every passage). `text`:
    the strictest form, which the reader reads; `counts`: its redacted spans per type."""

    text: str
    forms: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def groups(self) -> list[tuple[str, frozenset[str] | None]]:
        """(query text, the policies it searches; None = all): one search per distinct text,
        so a question with nothing the policies treat differently is searched once."""
        if len(set(self.forms.values())) <= 1:
            return [(next(iter(self.forms.values()), self.text), None)]
        by_text: dict[str, set[str]] = {}
        for policy, text in sorted(self.forms.items()):
            by_text.setdefault(text, set()).add(policy)
        return [(text, frozenset(policies)) for text, policies in by_text.items()]


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with its score and provenance."""

    chunk_id: str
    doc_id: str
    text: str
    score: float
    title: str | None = None
    row_id: int = -1
    page: int | None = None  # 1-based page of a PDF passage (chunk metadata "page")
    section: str | None = None  # heading path "Part > Section" (chunk metadata "section")


@dataclass(frozen=True)
class Fact:
    """A knowledge-graph fact with the chunks and documents that support it."""

    subject: str
    relation: str
    object: str
    confidence: float
    chunk_ids: tuple[str, ...] = ()
    doc_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evidence:
    """What retrieval hands to generation: ranked passages and supporting facts."""

    passages: tuple[Passage, ...]
    facts: tuple[Fact, ...] = ()
    flagged_chunks: int = 0  # retrieved chunks the input-safety classifier kept out of `passages`


@dataclass(frozen=True)
class Answer:
    """A generated answer with citations and governance metadata."""

    text: str
    citations: tuple[Passage, ...] = ()
    facts: tuple[Fact, ...] = ()
    request_id: str = ""
    model_version: str = ""
    config_hash: str = ""
    redactions: dict[str, int] = field(default_factory=dict)
