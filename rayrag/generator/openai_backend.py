"""The OpenAI-compatible generator backend: evidence in, a cited answer out, from a chat endpoint.

`generator.backend: openai` puts `OpenAIReader` where the MoE `Reader` stands (the Serve
Generator deployment and `LocalStages`), with the Reader's contract, so the Guard, citations,
output redaction and cost accounting run unchanged on its answers: `answer(question,
evidence)` returns a `ReaderResult` whose `answer.citations` are exactly the passages that made
it into the prompt, in marker order; `cited_markers` are the valid `[n]` the model wrote;
`truncated_chunk_ids` and `facts_dropped` say what did not fit; usage is the endpoint's own
`usage` when it reports one (else an estimate at `CHARS_PER_TOKEN`); `answer_logprob` is None
(no token probabilities from a remote model: the Guard then scores the evidence alone, see
`rayrag.answering.guard`); `routing` is empty (no experts here).

The prompt is built from what the Reader reads (`generator.prompt`'s passage and fact lines):
the redacted question, the ranked passages as the bundle stores them (redacted at ingest under
their collection's policy) and the relation facts (`reader_facts`):

    system: SYSTEM_PROMPT (answer from the context only, cite with [n])
    user:   context:
            [1] Brightwater Labs: Helix Corp acquired Brightwater Labs in 2019.
            [2] Another passage.
            facts:
            Helix Corp acquired Brightwater Labs

            question: Who acquired Brightwater Labs?

Both messages together stay within `generator.openai.max_prompt_chars`: the lowest-ranked
passage goes first, then the last fact; the question is never cut (a question that alone does
not fit is a `DataError`, HTTP 400). Characters, not tokens: the remote tokenizer is unknown.

Transport: `POST {base_url}/chat/completions` with httpx, `Authorization: Bearer <key>` from the
environment variable `api_key_env` names (never the config). Sync (`answer`, `answer(...,
stream=True)`: `rayrag ask`, `eval`, `compare`) and async (`aanswer`, `astream`: the Serve
replica, whose event loop must not block). Each attempt has `timeout_s` per connect, write and
read; connect errors, timeouts, 429 and 5xx are retried up to `max_retries` times after
`backoff_s * 2**(n-1)` plus up to half that again at random (replicas that failed together do
not retry together), or after the response's `Retry-After` seconds when that is longer (capped
at `max_retry_after_s`); a stream is retried only until its response opens. Then:

    GeneratorUnavailable   unreachable, timing out, 429/5xx after the retries, 404 (nothing
                           there), a stream cut, or an error reported in it: HTTP 503
    GeneratorRejected      another 4xx (bad key, prompt too long), an in-band error of such a
                           type, or not a chat completion: HTTP 502, not retried

Nothing textual leaves in a log line or an exception message: status codes, attempt counts,
byte sizes and milliseconds only (the endpoint's error body, which may echo the prompt, is
never read into either).

    >>> reader = OpenAIReader(config)           # generator.backend: openai
    >>> result = reader.answer("Who acquired Brightwater Labs?", evidence)
    >>> result.answer.text, result.cited_markers, result.usage()
    ('Helix Corp [1].', [1], {'prompt_tokens': 212, 'completion_tokens': 6, 'total_tokens': 218})
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from rayrag.config import RAGConfig
from rayrag.errors import ConfigError, DataError, GeneratorRejected, GeneratorUnavailable
from rayrag.event_log import get_logger
from rayrag.generator.prompt import (
    CONTEXT_HEADER,
    FACTS_HEADER,
    QUESTION_FORMAT,
    Citation,
    fact_text,
    passage_text,
)
from rayrag.generator.reader import ReaderResult, cited_markers, reader_facts
from rayrag.types import Answer, Evidence, Fact, Passage

CHAT_PROMPT_VERSION = "openai-chat-v1"
SYSTEM_PROMPT = (
    "Answer the question from the numbered context passages and facts only. Cite each passage "
    "you use with its marker, as in [1] or [2][3], right after the words it supports. Answer "
    "briefly: a name, a number or one sentence. If the context does not hold the answer, say so."
)
QUESTION_GAP = "\n\n"  # between the context and the question line
CHARS_PER_TOKEN = 4  # usage estimate when an endpoint reports none (OpenAI's rule of thumb)
MAX_MODEL_NAME = 128  # of the `model` an endpoint reports, kept in `model_version`
FINISH_REASONS = ("stop", "length", "content_filter")
# in-band error types (OpenAI's and rayrag's) that mean the request itself was refused
REJECTED_TYPES = frozenset(
    {
        "invalid_request",
        "invalid_request_error",
        "request_too_large",
        "unauthorized",
        "authentication_error",
        "forbidden",
        "permission_error",
    }
)

PROBE_TIMEOUT_S = 2.0
_log = get_logger("rayrag.generator.openai")


# ---------------------------------------------------------------- the prompt


@dataclass(frozen=True)
class ChatPrompt:
    """The messages sent and what they hold: `citations` (markers 1..n, rank order), the chunk
    ids dropped to fit (best-ranked first), the facts included and how many were dropped."""

    messages: list[dict[str, str]]
    citations: list[Citation] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    facts_included: list[Fact] = field(default_factory=list)
    facts_dropped: int = 0

    @property
    def chars(self) -> int:
        return sum(len(m["content"]) for m in self.messages)


def build_messages(
    question: str, passages: Sequence[Passage], facts: Sequence[Fact], max_prompt_chars: int
) -> ChatPrompt:
    """The chat messages within `max_prompt_chars`; `passages` and `facts` best first. The
    Reader's rule (`build_prompt`) in characters: lowest-ranked passage first, then the last
    fact; the question is never cut."""
    if not question or not question.strip():
        raise DataError("question is empty")
    tail = QUESTION_GAP + QUESTION_FORMAT.format(question=question.strip())
    fixed = len(SYSTEM_PROMPT) + len(CONTEXT_HEADER) + len(tail)
    if fixed > max_prompt_chars:
        # Sizes only: the question may carry personal data and must not reach a log.
        raise DataError(
            f"question does not fit the prompt: {fixed} characters with the instructions, "
            f"generator.openai.max_prompt_chars is {max_prompt_chars}"
        )
    passage_lines = [passage_text(i + 1, p) for i, p in enumerate(passages)]
    fact_lines = [fact_text(f) for f in facts]
    n_passages, n_facts = len(passage_lines), len(fact_lines)
    used = fixed + sum(map(len, passage_lines)) + sum(map(len, fact_lines))
    used += len(FACTS_HEADER) if n_facts else 0
    while used > max_prompt_chars and n_passages:
        n_passages -= 1
        used -= len(passage_lines[n_passages])
    while used > max_prompt_chars and n_facts:
        n_facts -= 1
        used -= len(fact_lines[n_facts]) + (len(FACTS_HEADER) if n_facts == 0 else 0)
    context = CONTEXT_HEADER + "".join(passage_lines[:n_passages])
    if n_facts:
        context += FACTS_HEADER + "".join(fact_lines[:n_facts])
    prompt = ChatPrompt(
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": context + tail},
        ],
        citations=[Citation(i + 1, p) for i, p in enumerate(passages[:n_passages])],
        truncated=[p.chunk_id for p in passages[n_passages:]],
        facts_included=list(facts[:n_facts]),
        facts_dropped=len(facts) - n_facts,
    )
    assert prompt.chars == used <= max_prompt_chars, (prompt.chars, used)
    return prompt


# ---------------------------------------------------------------- the stream's chunks


class _Chunks:
    """Reads a chat completion's SSE lines (`data: {chunk}` ... `data: [DONE]`): the text
    pieces of choice 0, then its finish reason, the usage (the last chunk's, with
    `stream_options.include_usage`) and the model the endpoint names."""

    def __init__(self) -> None:
        self.text = ""
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.done = False
        self.bytes = 0

    def feed(self, line: str) -> str:
        """The text this line adds ("" for none)."""
        self.bytes += len(line) + 1
        if not line.startswith("data:"):
            return ""  # comments, `event:` and `id:` lines, the blank line between events
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            self.done = True
            return ""
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            raise GeneratorRejected("generator backend streamed a chunk that is not JSON")
        if "error" in chunk:  # reported in-band: the status is already sent
            error = chunk["error"]
            kind = error.get("type") if isinstance(error, dict) else None
            if kind in REJECTED_TYPES:
                raise GeneratorRejected("generator backend rejected the request mid-stream")
            raise GeneratorUnavailable("generator backend reported an error mid-stream")
        self.model = chunk.get("model") or self.model
        self.usage = chunk.get("usage") or self.usage
        piece = ""
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            piece += (choice.get("delta") or {}).get("content") or ""
            self.finish = choice.get("finish_reason") or self.finish
        if not self.text:
            piece = piece.lstrip()  # as the answer's text: stripped
        self.text += piece
        return piece

    def check_complete(self) -> None:
        if not self.done and self.finish is None:
            raise GeneratorUnavailable("generator backend stream ended before it finished")


# ---------------------------------------------------------------- the reader


class OpenAIReader:
    """An OpenAI-compatible chat endpoint that answers questions from `Evidence`, with
    citations: the `Reader`'s contract (see the module docstring).

    Cheap to construct; `warm_up()` reads the key from the environment variable
    `generator.openai.api_key_env` names (`api_key`: one handed in by code instead, e.g.
    `rayrag compare`'s). Clients are made on first use and kept (connection reuse);
    `close()` / `aclose()` release them."""

    sharded = None  # the Generator deployment asks; no expert shards here

    def __init__(self, config: RAGConfig, *, api_key: str | None = None) -> None:
        self.config = config
        self.config_hash = config.config_hash  # once: it hashes the whole config's JSON
        self.settings = config.generator.openai
        self.endpoint = self.settings.base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self._headers: dict[str, str] | None = None
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None

    # -- set-up ------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Read the key (a ConfigError naming the variable, never a value, when it is unset)."""
        if self._headers is not None:
            return
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        name = self.settings.api_key_env
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        elif name:
            key = os.environ.get(name, "").strip()
            if not key:
                raise ConfigError(
                    f"generator.openai.api_key_env names ${name}, which is not set in this "
                    "process: export the key there (or set api_key_env to '' for a server "
                    "that needs none)"
                )
            headers["Authorization"] = f"Bearer {key}"
        self._headers = headers

    @property
    def model_version(self) -> str:
        """`openai:<model>`: the model the config names (answers carry the one that answered)."""
        return f"openai:{self.settings.model}"

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.settings.timeout_s)

    def client(self) -> httpx.Client:
        self.warm_up()
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout(), headers=self._headers)
        return self._client

    def async_client(self) -> httpx.AsyncClient:
        self.warm_up()
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(timeout=self._timeout(), headers=self._headers)
        return self._aclient

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None

    # -- the request -------------------------------------------------------------------------

    def build(self, question: str, evidence: Evidence) -> ChatPrompt:
        """The messages `answer` sends (passages dropped lowest-ranked first to fit)."""
        return build_messages(
            question,
            evidence.passages,
            reader_facts(evidence.facts),
            self.settings.max_prompt_chars,
        )

    def payload(self, prompt: ChatPrompt, max_new_tokens: int | None, stream: bool) -> bytes:
        """The request body: messages, model, temperature, the length cap, stream options."""
        if max_new_tokens is not None and max_new_tokens <= 0:
            raise DataError(f"max_new_tokens must be > 0, got {max_new_tokens}")
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": prompt.messages,
            "temperature": self.settings.temperature,
            self.settings.token_limit_field: max_new_tokens or self.settings.max_tokens,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        return json.dumps(body).encode("utf-8")

    def _verdict(self, response: httpx.Response) -> tuple[str, float]:
        """A retryable failure's label and the wait its `Retry-After` asks for (0 without
        one); raises for the rest."""
        status = response.status_code
        if status == 429 or status >= 500:
            return f"http_{status}", retry_after_s(response.headers.get("retry-after"))
        if status == 404:
            raise GeneratorUnavailable(
                "generator backend answered HTTP 404: no chat endpoint or model at "
                "generator.openai.base_url"
            )
        raise GeneratorRejected(f"generator backend answered HTTP {status}")

    def _after_failure(
        self, failure: str, attempt: int, started: float, size: int, asked_s: float = 0.0
    ) -> float:
        """Log the failed attempt (label, attempt, size, ms); the wait before the next one, or
        GeneratorUnavailable when none is left."""
        attempts = self.settings.max_retries + 1
        ms = round((time.perf_counter() - started) * 1000, 1)
        fields = {"failure": failure, "attempt": attempt, "attempts": attempts, "ms": ms}
        _log.warning(
            "generator_backend_attempt_failed", extra={"fields": {**fields, "bytes": size}}
        )
        if attempt >= attempts:
            tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
            raise GeneratorUnavailable(
                f"generator backend unavailable: {failure} (the last of {tries})"
            )
        backoff = self.settings.backoff_s * 2 ** (attempt - 1) * (1 + random.random() / 2)
        return max(backoff, min(asked_s, self.settings.max_retry_after_s))

    def _answered(self, attempt: int, started: float, sent: int, received: int) -> None:
        ms = round((time.perf_counter() - started) * 1000, 1)
        _log.debug(
            "generator_backend_answered",
            extra={"fields": {"attempt": attempt, "ms": ms, "sent": sent, "received": received}},
        )

    # -- sync --------------------------------------------------------------------------------

    def _send(self, body: bytes, stream: bool) -> tuple[httpx.Response, int, float]:
        """A 200 response (open, when streaming), its attempt and start time, after retries."""
        client = self.client()
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            request = client.build_request("POST", self.endpoint, content=body)
            try:
                response = client.send(request, stream=stream)
            except httpx.TimeoutException:
                failure, asked = "timeout", 0.0
            except httpx.TransportError:
                failure, asked = "connect", 0.0
            else:
                if response.status_code == 200:
                    return response, attempt, started
                response.close()
                failure, asked = self._verdict(response)
            time.sleep(self._after_failure(failure, attempt, started, len(body), asked))

    def answer(
        self,
        question: str,
        evidence: Evidence,
        *,
        stream: bool = False,
        max_new_tokens: int | None = None,
    ) -> ReaderResult | ChatAnswerStream:
        """A `ReaderResult`, or with `stream=True` a `ChatAnswerStream` of text pieces."""
        prompt = self.build(question, evidence)
        body = self.payload(prompt, max_new_tokens, stream)
        if stream:
            return ChatAnswerStream(self, prompt, body)
        response, attempt, started = self._send(body, stream=False)
        self._answered(attempt, started, len(body), len(response.content))
        return self._completion(prompt, response.content)

    def answer_batch(
        self,
        questions: Sequence[str],
        evidences: Sequence[Evidence],
        max_new_tokens: Sequence[int | None] | None = None,
    ) -> list[ReaderResult]:
        """`answer` for each, in order (the endpoint batches on its side)."""
        caps = list(max_new_tokens) if max_new_tokens is not None else [None] * len(questions)
        return [
            self.answer(q, e, max_new_tokens=m)  # type: ignore[misc]
            for q, e, m in zip(questions, evidences, caps, strict=True)
        ]

    async def aprobe(self) -> str:
        """ "ok" when `GET {base_url}/models` answers 200 within PROBE_TIMEOUT_S, else the
        failure's label (`timeout`, `connect`, `http_<status>`): what /readyz reports, so a
        graph whose endpoint is down is not ready. One try, no retries: a probe must be quick."""
        client = self.async_client()
        url = self.settings.base_url.rstrip("/") + "/models"
        try:
            response = await client.get(url, timeout=min(self.settings.timeout_s, PROBE_TIMEOUT_S))
        except httpx.TimeoutException:
            return "timeout"
        except httpx.TransportError:
            return "connect"
        return "ok" if response.status_code == 200 else f"http_{response.status_code}"

    # -- async (the Serve replica) -----------------------------------------------------------

    async def _asend(self, body: bytes, stream: bool) -> tuple[httpx.Response, int, float]:
        client = self.async_client()
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            request = client.build_request("POST", self.endpoint, content=body)
            try:
                response = await client.send(request, stream=stream)
            except httpx.TimeoutException:
                failure, asked = "timeout", 0.0
            except httpx.TransportError:
                failure, asked = "connect", 0.0
            else:
                if response.status_code == 200:
                    return response, attempt, started
                await response.aclose()
                failure, asked = self._verdict(response)
            await asyncio.sleep(self._after_failure(failure, attempt, started, len(body), asked))

    async def aanswer(
        self, question: str, evidence: Evidence, max_new_tokens: int | None = None
    ) -> ReaderResult:
        """`answer` without blocking the event loop."""
        prompt = self.build(question, evidence)
        body = self.payload(prompt, max_new_tokens, stream=False)
        response, attempt, started = await self._asend(body, stream=False)
        self._answered(attempt, started, len(body), len(response.content))
        return self._completion(prompt, response.content)

    async def astream(
        self, question: str, evidence: Evidence, max_new_tokens: int | None = None
    ) -> AsyncIterator[Any]:
        """The cited passages first, then text pieces as they arrive, then the ReaderResult
        (the Generator deployment's stream protocol)."""
        prompt = self.build(question, evidence)
        body = self.payload(prompt, max_new_tokens, stream=True)
        yield tuple(c.passage for c in prompt.citations)
        response, attempt, started = await self._asend(body, stream=True)
        chunks = _Chunks()
        try:
            async for line in response.aiter_lines():
                piece = chunks.feed(line)
                if piece:
                    yield piece
                if chunks.done:
                    break
        except (httpx.TimeoutException, httpx.TransportError):
            raise GeneratorUnavailable("generator backend stream was cut") from None
        finally:
            await response.aclose()
        chunks.check_complete()
        self._answered(attempt, started, len(body), chunks.bytes)
        yield self._result(prompt, chunks.text, chunks.usage, chunks.finish, chunks.model)

    # -- the result --------------------------------------------------------------------------

    def _completion(self, prompt: ChatPrompt, content: bytes) -> ReaderResult:
        try:
            body = json.loads(content)
            choice = body["choices"][0]
            text = choice["message"]["content"] or ""
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, IndexError, TypeError):
            raise GeneratorRejected(
                "generator backend answered HTTP 200 without a chat completion"
            ) from None
        return self._result(
            prompt, text, body.get("usage"), choice.get("finish_reason"), body.get("model")
        )

    def _result(
        self,
        prompt: ChatPrompt,
        text: str,
        usage: Any,
        finish: str | None,
        model: Any,
    ) -> ReaderResult:
        text = text.strip()
        citations = tuple(c.passage for c in prompt.citations)
        prompt_tokens, completion_tokens = _token_counts(usage, prompt.chars, len(text))
        name = model if isinstance(model, str) and model else self.settings.model
        answer = Answer(
            text=text,
            citations=citations,
            facts=tuple(prompt.facts_included),
            model_version=f"openai:{name[:MAX_MODEL_NAME]}",
            config_hash=self.config_hash,
        )
        return ReaderResult(
            answer=answer,
            truncated_chunk_ids=list(prompt.truncated),
            facts_dropped=prompt.facts_dropped,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish if finish in FINISH_REASONS else "stop",
            cited_markers=cited_markers(text, len(citations)),
            answer_logprob=None,
        )


class ChatAnswerStream:
    """Text pieces as the endpoint streams them; `result` (a `ReaderResult`) once read.

    `citations` and `truncated_chunk_ids` are known before the request is sent, as with
    the Reader's `AnswerStream`."""

    def __init__(self, reader: OpenAIReader, prompt: ChatPrompt, body: bytes) -> None:
        self._reader, self._prompt, self._body = reader, prompt, body
        self.result: ReaderResult | None = None

    @property
    def citations(self) -> tuple[Passage, ...]:
        return tuple(c.passage for c in self._prompt.citations)

    @property
    def truncated_chunk_ids(self) -> list[str]:
        return list(self._prompt.truncated)

    def __iter__(self) -> Iterator[str]:
        reader = self._reader
        response, attempt, started = reader._send(self._body, stream=True)
        chunks = _Chunks()
        try:
            for line in response.iter_lines():
                piece = chunks.feed(line)
                if piece:
                    yield piece
                if chunks.done:
                    break
        except (httpx.TimeoutException, httpx.TransportError):
            raise GeneratorUnavailable("generator backend stream was cut") from None
        finally:
            response.close()
        chunks.check_complete()
        reader._answered(attempt, started, len(self._body), chunks.bytes)
        self.result = reader._result(
            self._prompt, chunks.text, chunks.usage, chunks.finish, chunks.model
        )


def chat_prompt_label() -> str:
    """`rayrag-openai-chat/<first 8 hex of sha256(SYSTEM_PROMPT + layout)>`: which chat prompt
    an answer came from, changing whenever its wording or layout does."""
    import hashlib

    layout = "\x1f".join(
        (SYSTEM_PROMPT, CONTEXT_HEADER, FACTS_HEADER, QUESTION_GAP, QUESTION_FORMAT)
    )
    return f"rayrag-openai-chat/{hashlib.sha256(layout.encode()).hexdigest()[:8]}"


def retry_after_s(value: str | None) -> float:
    """Seconds a `Retry-After` header asks for: its delta-seconds form, or an HTTP date from
    now; 0 when absent or unreadable (the backoff alone then decides)."""
    if not value:
        return 0.0
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        return 0.0
    return max(when.timestamp() - time.time(), 0.0)


def _token_counts(usage: Any, prompt_chars: int, answer_chars: int) -> tuple[int, int]:
    """(prompt, completion) tokens: the endpoint's `usage` when it reports them, else an
    estimate at CHARS_PER_TOKEN (so an answer is never priced at 0 for want of a count)."""
    counts = []
    for key, chars in (("prompt_tokens", prompt_chars), ("completion_tokens", answer_chars)):
        value = usage.get(key) if isinstance(usage, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            counts.append(value)
        else:
            counts.append(math.ceil(chars / CHARS_PER_TOKEN))
    return counts[0], counts[1]
