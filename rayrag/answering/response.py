"""The answer's wire format: one pydantic model per object of the `/v1/ask` response.

`AskResponse` is what `rayrag ask --json`, `rayrag eval` and the HTTP API return, and what
FastAPI documents at `/docs` (`response_model`). `ChatCompletion` is the OpenAI-compatible
shape of the same answer. Text fields (`answer`, titles, fact names, claims) are content:
they go to the asking user only, never to logs or MLflow.

    >>> AskResponse.model_validate(body).usage.cost
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Citation(_Model):
    marker: int = Field(description="The [n] the answer cites this passage by.")
    chunk_id: str
    doc_id: str
    title: str | None = None
    score: float
    text: str = Field(
        "", description="The passage as the caller may read it (ACL-filtered, redacted at ingest)."
    )
    page: int | None = Field(None, description="1-based page of the passage in its PDF.")
    section: str | None = Field(
        None, description="Heading path of the passage in its file: 'Part > Section'."
    )


class FactOut(_Model):
    subject: str
    relation: str
    object: str
    confidence: float
    chunk_ids: list[str]
    doc_ids: list[str]


class Truncated(_Model):
    chunk_ids: list[str] = Field(
        default_factory=list, description="Passages that did not fit the window."
    )
    facts_dropped: int = 0


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float = Field(
        0.0,
        description="serve.price_per_1k_* times the tokens; 0 for a refusal or a cached answer.",
    )
    currency: str = "USD"


class Validation(_Model):
    model_config = ConfigDict(extra="allow")  # a checker may add its own counters
    checked: bool = False
    supported: int = 0
    unknown: int = 0
    contradicted: int = 0
    claims: list[dict[str, Any]] = Field(default_factory=list)


class Redactions(_Model):
    question: dict[str, int] = Field(default_factory=dict, description="Entity type -> count.")
    answer: dict[str, int] = Field(default_factory=dict)


class Routing(_Model):
    expert_share: list[list[float]] = Field(
        default_factory=list, description="Per layer, each expert's share."
    )
    max_share: float = 0.0
    shard_share: list[float] | None = Field(
        None, description="With expert parallelism: each shard's share of token-slots."
    )
    shard_imbalance: float | None = None


class Safety(_Model):
    question_flagged: bool = False
    categories: list[str] = Field(default_factory=list)
    flagged_chunks: int = Field(
        0, description="Retrieved passages withheld by the input-safety classifier."
    )


class AskResponse(_Model):
    """The answer to one question, with everything that vouches for it."""

    answer: str
    citations: list[Citation] = Field(default_factory=list)
    cited_markers: list[int] = Field(default_factory=list)
    facts: list[FactOut] = Field(default_factory=list)
    truncated: Truncated = Field(default_factory=Truncated)
    finish_reason: str
    usage: Usage = Field(default_factory=Usage)
    model_version: str = ""
    config_hash: str = ""
    request_id: str = ""
    mode: str
    timings_ms: dict[str, float] = Field(default_factory=dict)
    redactions: Redactions = Field(default_factory=Redactions)
    validation: Validation = Field(default_factory=Validation)
    groundedness: float = 0.0
    confidence: float = 0.0
    escalated: bool = False
    reasons: list[str] = Field(default_factory=list)
    routing: Routing = Field(default_factory=Routing)
    prompt_version: str = ""
    refused: bool = False
    cached: bool = False
    safety: Safety = Field(default_factory=Safety)


class AssistantMessage(_Model):
    role: str
    content: str


class ChatChoice(_Model):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatUsage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(_Model):
    """OpenAI's `chat.completion` object; rayrag's extras (citations, facts, validation...)
    ride along under `rayrag`, which OpenAI clients ignore."""

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    rayrag: dict[str, Any] | None = None


class ErrorDetail(_Model):
    """OpenAI's error fields (`type` and `code` carry rayrag's error kind) and the request id."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None
    request_id: str


class ErrorResponse(_Model):
    """Every 4xx and 5xx body: one line, never the request's content."""

    error: ErrorDetail
