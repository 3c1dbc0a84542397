"""The HTTP API's request bodies and the helpers that shape its responses.

Two front doors over one pipeline: rayrag's own `POST /v1/ask`, whose answer carries its
evidence (citations, KG facts with provenance, validation, routing, usage, timings), and
`POST /v1/chat/completions` in the shape of OpenAI's Chat Completions API (request fields,
`chat.completion` / `chat.completion.chunk` objects, `data: [DONE]`), so any OpenAI client
can use rayrag as a model. A chat request's question is its last user message; rayrag's
evidence rides along under the extra key `rayrag`, which OpenAI clients ignore.

Validation errors are reported by field and reason only: pydantic's default error body
echoes the offending input, which here is a user's question (`validation_message`).

    >>> AskRequest.model_validate({"question": "Who acquired Brightwater Labs?", "top_k": 3})
    >>> chat_completion("req-1", "Helix Corp", "eos", usage, "model@1a2b", created=0)
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # what we accept from X-Request-ID
MAX_NEW_TOKENS_LIMIT = 1024
MAX_FEEDBACK_COMMENT_CHARS = 2000


class AskRequest(BaseModel):
    """`POST /v1/ask`."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(
        min_length=1, description="The question; redacted before anything else reads it."
    )
    mode: Literal["dense", "bm25", "graph", "hybrid"] | None = Field(
        None, description="Retrieval mode; default from the config."
    )
    top_k: int | None = Field(
        None, ge=1, le=50, description="Passages retrieved; default from the config."
    )
    max_new_tokens: int | None = Field(
        None, ge=1, le=MAX_NEW_TOKENS_LIMIT, description="Answer length cap."
    )
    stream: bool = Field(
        False, description="Server-sent events: tokens as they are decoded, then the full answer."
    )


DocId = Annotated[
    str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")
]  # an id: no control chars


class ForgetRequest(BaseModel):
    """`POST /v1/admin/forget`: erase documents from the served bundle (admin only)."""

    model_config = ConfigDict(extra="forbid")

    doc_ids: list[DocId] = Field(
        min_length=1, max_length=1000, description="Ids of the documents to erase."
    )


class PurgeRequest(BaseModel):
    """`POST /v1/admin/purge`: delete records past their retention (admin only)."""

    model_config = ConfigDict(extra="forbid")

    older_than_days: float | None = Field(
        None, gt=0, le=36500, description="Overrides every TTL when set."
    )
    dry_run: bool = Field(False, description="Count what would be deleted; delete nothing.")


class GuardProbeRequest(BaseModel):
    """`POST /v1/admin/guard-probe`: an answer the caller plants on the answer path, checked
    by the deployed Guard as every answer is (admin only; the readiness probe plants PII)."""

    model_config = ConfigDict(extra="forbid")

    answer: str = Field(min_length=1, max_length=2000, description="The planted answer text.")


class AliasRequest(BaseModel):
    """`POST /v1/admin/registry/alias`: point an alias of the served model name at a version."""

    model_config = ConfigDict(extra="forbid")

    alias: Literal["champion", "challenger"] = Field(description="The alias to move.")
    version: int = Field(ge=1, le=10_000_000, description="The registered version it should name.")


class ResolveRequest(BaseModel):
    """`POST /v1/admin/escalations/{request_id}/resolve`: how a reviewer closed it."""

    model_config = ConfigDict(extra="forbid")

    resolution: str = Field(
        "resolved",
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="A snake_case code (resolved, answer_corrected, dismissed...), never text.",
    )


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: a rating of one served answer, by the key that asked (or an admin)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        pattern=REQUEST_ID_RE.pattern, description="The rated answer's request id, as served."
    )
    rating: Literal["up", "down"] = Field(description="Thumbs up or down.")
    comment: str | None = Field(
        None,
        max_length=MAX_FEEDBACK_COMMENT_CHARS,
        description="Why; user content: kept only where tracking.trace_content allows.",
    )


class ContentPart(BaseModel):
    """One part of a message's content array (OpenAI's shape): text is read; any other
    type (image_url, input_audio, file) is refused by name, its payload never read."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(max_length=64)
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    # No count limits here: the body's size is the limit (a 413, `Ingress._admit`).
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text: the string, or its text parts joined by newlines."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        # Only OpenAI's part types are named back; any other string is the caller's, not echoed.
        known = {"image_url", "input_audio", "file", "refusal"}
        others = [p.type for p in self.content if p.type != "text"]
        kinds = sorted({kind if kind in known else "other" for kind in others})
        if kinds:
            raise ValueError(f"only text content parts are supported, got {', '.join(kinds)}")
        return "\n".join(p.text or "" for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`: the OpenAI fields rayrag honours; unknown ones are ignored
    (clients send several, e.g. `user`, `frequency_penalty`). Sampling and `n` are checked
    by `serve.openai_compat.refusal`: rayrag decodes one greedy answer."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field("rayrag", max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    # At most four stop strings, as OpenAI allows; the limit is on the list, not a string.
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None

    def question(self) -> str:
        """The last user message: what the pipeline answers (retrieval is per question)."""
        for message in reversed(self.messages):
            if message.role == "user":
                text = message.text()
                if text.strip():
                    return text
        raise ValueError("messages must contain a non-empty user message")

    def history(self) -> list[tuple[str, str]]:
        """The user and assistant turns before the last user message, oldest first: what a
        follow-up may refer back to."""
        turns = [(m.role, m.text()) for m in self.messages if m.role in ("user", "assistant")]
        last = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=0)
        return turns[:last]

    def stops(self) -> list[str]:
        """`stop` as a list of non-empty strings."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def token_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def validation_message(exc: ValidationError | Any) -> str:
    """One line naming the first bad field and why, never its value."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return "invalid request body"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "extra_forbidden":  # the unknown key is the caller's text: not echoed
        parent = ".".join(loc[:-1]) or "body"
        return f"invalid request: {parent}: unexpected field (allowed: the documented fields only)"
    where = ".".join(loc) or "body"
    return f"invalid request: {where}: {first.get('msg', 'invalid value')}"


def request_id(header: str | None) -> str:
    """X-Request-ID if it looks like an id (it is logged and echoed), else a fresh one."""
    if header and REQUEST_ID_RE.match(header):
        return header
    return uuid.uuid4().hex


def error_body(
    kind: str, message: str, request_id_: str, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object, {"error": {"message", "type", "param", "code"}}, plus the
    request id: `type` and `code` are rayrag's error kind, `param` the field at fault."""
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": kind,
            "request_id": request_id_,
        }
    }


def chat_completion(
    request_id_: str,
    text: str,
    finish_reason: str,
    usage: dict[str, Any],
    model: str,
    created: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body = {
        "id": f"chatcmpl-{request_id_}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": openai_finish_reason(finish_reason),
                "logprobs": None,
            }
        ],
        "usage": {
            k: usage[k]
            for k in ("prompt_tokens", "completion_tokens", "total_tokens")
            if k in usage
        },
    }
    if extra:
        body["rayrag"] = extra
    return body


def chat_chunk(
    request_id_: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request_id_}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "finish_reason": openai_finish_reason(finish_reason) if finish_reason else None,
            }
        ],
    }


def openai_finish_reason(reason: str) -> str:
    """Ours ("eos", "stop", "length", "content_filter")
    -> OpenAI's ("stop", "length", "content_filter")."""
    return reason if reason in ("length", "content_filter") else "stop"
