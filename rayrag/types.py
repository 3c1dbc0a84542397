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
class Document:
    """One corpus document (a row of the corpus JSONL)."""

    id: str
    text: str
    title: str | None = None
    acl: tuple[str, ...] = (PUBLIC_GROUP,)
    metadata: dict[str, Scalar] = field(default_factory=dict)
    updated_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["acl"] = list(self.acl)
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
