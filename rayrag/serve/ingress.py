"""The front door: FastAPI behind Ray Serve, running the AnswerPipeline over the stage handles.

A question's path, each arrow one awaited handle call (`rayrag.serve.handles`):

    auth (Bearer key -> principal, groups, team) -> input safety -> Redactor (query PII)
      -> Retriever.search (embed + FAISS)  ||  Ranker.link (entity linking)   concurrently
      -> Ranker.graph_ranking (PageRank) -> Ranker.evidence (fusion, hops, facts)
      -> Generator -> Guard

The steps, the refusal, the cost and the response are `AnswerPipeline`'s, the same as
`rayrag ask` runs in one process. What is the service's own lives here: keys, limits, the
answer cache, escalation records, the request's content-free event and its metrics. The
whole request runs under `serve.request_timeout_s` (503 after it, and when the Ingress
cannot queue it: `max_queued_requests`). Errors are mapped in one place (`serve.api`);
admin routes are `serve.admin`.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime, and
# through `serve.ingress` string annotations are not resolved (pydantic "not fully defined").

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.metrics import Counter, Histogram

from rayrag.answering.pipeline import AnswerPipeline, AnswerTurn
from rayrag.answering.response import AskResponse, ChatCompletion
from rayrag.config import RAGConfig
from rayrag.event_log import file_event_logger
from rayrag.generator.prompt import prompt_label
from rayrag.serve import admin
from rayrag.serve.api import RequestId, app, attach
from rayrag.serve.auth import ApiPrincipal, KeyStore
from rayrag.serve.cache import AnswerCache, answer_key
from rayrag.serve.deployments import manifest_stamp
from rayrag.serve.errors import HTTPFailure, classify_error
from rayrag.serve.escalation import EscalationQueue
from rayrag.serve.handles import HandleStages
from rayrag.serve.locate import locate_bundle
from rayrag.serve.request_log import request_event
from rayrag.serve.schemas import (
    AskRequest,
    ChatCompletionRequest,
    chat_chunk,
    chat_completion,
    error_body,
)

LATENCY_BOUNDARIES_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
BODY_OVERHEAD_BYTES = 16 * 1024  # JSON around the question: fields, chat history
STAGES = ("redactor", "retriever", "ranker", "generator", "guard")
app.include_router(admin.router)


def _cacheable(request: Request) -> bool:
    """False when the client sent `Cache-Control: no-cache` or `no-store` (benches, probes)."""
    directives = request.headers.get("cache-control", "").lower()
    return "no-cache" not in directives and "no-store" not in directives


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    def __init__(
        self,
        redactor: Any,
        retriever: Any,
        ranker: Any,
        generator: Any,
        guard: Any,
        config_json: str,
        bundle: str = "",
    ) -> None:
        self.config = config = RAGConfig.model_validate_json(config_json)
        self.handles = dict(
            zip(STAGES, (redactor, retriever, ranker, generator, guard), strict=True)
        )
        self.pipeline = AnswerPipeline(
            config,
            HandleStages(config, redactor, retriever, ranker, generator, guard),
            prompt_version=prompt_label(
                config.tracking.prompt_name, config.tracking.prompt_version
            ),
        )
        serve_cfg = config.serve
        self.keys = KeyStore.from_config(serve_cfg)
        self.escalations = EscalationQueue(serve_cfg.escalation_queue)
        self.events = file_event_logger(
            "rayrag.serve.events",
            serve_cfg.event_log,
            max_bytes=serve_cfg.event_log_max_bytes,
            backups=serve_cfg.event_log_backups,
        )
        self.bundle = locate_bundle(bundle) if bundle else None
        self._bundle_stamp = manifest_stamp(self.bundle) if self.bundle else None
        self.bundle_id = self._read_bundle_id()
        self.cache = AnswerCache(serve_cfg.answer_cache_size, serve_cfg.answer_cache_ttl_s)
        self.max_body = serve_cfg.max_question_chars * 4 + BODY_OVERHEAD_BYTES
        self.last_purge: dict[str, Any] = {}
        self._stop = admin.start_purge_loop(self)
        self.requests = Counter(
            "rayrag_requests",
            description="Requests by route and HTTP status.",
            tag_keys=("route", "status"),
        )
        self.latency = Histogram(
            "rayrag_stage_latency_ms",
            description="Per-stage latency (ms).",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("stage",),
        )
        self.cost = Counter(
            "rayrag_cost",
            description="Spend of answered requests, in serve.currency, by team.",
            tag_keys=("team",),
        )
        attach(self)

    # -- probes ----------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """Alive: the ingress answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Ready: every stage has its current bundle or model loaded and answers."""
        try:
            states = await asyncio.wait_for(
                asyncio.gather(*(handle.ready.remote() for handle in self.handles.values())),
                timeout=10,
            )
        except Exception as exc:  # noqa: BLE001 - not ready, whatever the reason
            return JSONResponse({"ready": False, "error": type(exc).__name__}, status_code=503)
        return JSONResponse(
            {
                "ready": True,
                "stages": dict(zip(STAGES, states, strict=True)),
                "config_hash": self.config.config_hash,
            }
        )

    # -- the API ---------------------------------------------------------------------------

    @app.post("/v1/ask", response_model=AskResponse)
    async def ask(self, body: AskRequest, request: Request, rid: RequestId) -> Any:
        """Answer a question from the caller's readable documents, with citations and facts."""
        caller = await self._admit(request, body.question)
        if body.stream:
            return self._sse(self._ask_events(rid, caller, body))
        return await asyncio.wait_for(
            self._answer(
                rid,
                caller,
                body.question,
                body.mode,
                body.top_k,
                body.max_new_tokens,
                _cacheable(request),
            ),
            self.config.serve.request_timeout_s,
        )

    @app.post("/v1/chat/completions", response_model=ChatCompletion)
    async def chat_completions(
        self, body: ChatCompletionRequest, request: Request, rid: RequestId
    ) -> Any:
        """OpenAI-compatible: the last user message is the question."""
        try:
            question = body.question()
        except ValueError as exc:
            raise HTTPFailure(422, "invalid_request", f"invalid request: messages: {exc}") from None
        caller = await self._admit(request, question)
        if body.stream:
            return self._sse(self._chat_events(rid, caller, question, body.token_cap()))
        response = await asyncio.wait_for(
            self._answer(rid, caller, question, None, None, body.token_cap(), _cacheable(request)),
            self.config.serve.request_timeout_s,
        )
        extra = response.model_dump(
            include={
                "citations",
                "facts",
                "validation",
                "escalated",
                "request_id",
                "model_version",
                "config_hash",
            }
        )
        return chat_completion(
            rid,
            response.answer,
            response.finish_reason,
            response.usage.model_dump(),
            response.model_version,
            extra=extra,
        )

    # -- answering -------------------------------------------------------------------------

    async def _admit(self, request: Request, question: str) -> ApiPrincipal:
        caller = self.keys.authenticate(request.headers.get("authorization"))
        length = int(request.headers.get("content-length") or 0)  # an int: the middleware parsed it
        if (
            not length
        ):  # chunked: no declared length, so measure what FastAPI read (cached, no re-read)
            length = len(await request.body())
        if length > self.max_body or len(question) > self.config.serve.max_question_chars:
            raise HTTPFailure(
                413,
                "request_too_large",
                f"question longer than "
                f"{self.config.serve.max_question_chars} characters (serve.max_question_chars)",
            )
        if not question.strip():
            raise HTTPFailure(
                422, "invalid_request", "invalid request: question: must not be blank"
            )
        return caller

    def _observe(self, stage: str, ms: float) -> None:
        self.latency.observe(ms, tags={"stage": stage})

    async def answer_for(
        self,
        caller: ApiPrincipal,
        question: str,
        mode: str | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
    ) -> dict[str, Any]:
        """The /v1/ask response for an authenticated caller, without HTTP (handles, tests)."""
        response = await self._answer(
            uuid.uuid4().hex, caller, question, mode, top_k, max_new_tokens, False
        )
        return response.model_dump()

    async def _answer(
        self,
        rid: str,
        caller: ApiPrincipal,
        question: str,
        mode: str | None,
        top_k: int | None,
        max_new_tokens: int | None,
        use_cache: bool = True,
    ) -> AskResponse:
        started = time.perf_counter()
        mode = mode or self.config.retrieval.mode
        top_k = top_k or self.config.retrieval.top_k
        self.check_bundle()
        categories = self.pipeline.screen(question)
        key = self._cache_key(caller, question, mode, top_k, max_new_tokens) if use_cache else None
        cached = self.cache.get(key) if key and categories is None else None
        if cached is not None:
            ms = round((time.perf_counter() - started) * 1000, 2)
            response = cached.model_copy(
                update={
                    "request_id": rid,
                    "cached": True,
                    "timings_ms": {"total": ms},
                    "usage": cached.usage.model_copy(update={"cost": 0.0}),
                }
            )
            self._record(
                rid, caller, AnswerTurn(response=response)
            )  # nothing was computed for this caller
            return response
        turn = await self.pipeline.answer(
            question,
            caller.principal,
            mode=mode,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            request_id=rid,
            observe=self._observe,
            screened=categories,
        )
        self._record(rid, caller, turn)
        if use_cache and not turn.response.refused:
            key = key or self._cache_key(caller, question, mode, top_k, max_new_tokens)
            if key:
                self.cache.put(key, turn.response)
        return turn.response

    def _cache_key(
        self, caller: ApiPrincipal, question: str, mode: str, top_k: int, max_new_tokens: int | None
    ) -> str | None:
        if not self.pipeline.model_version or self.cache.max_entries == 0:
            return None  # the first answer names the model version; until then, no caching
        return answer_key(
            caller.principal,
            self.bundle_id,
            self.pipeline.model_version,
            self.config.config_hash,
            self.pipeline.prompt_version,
            question,
            mode,
            top_k,
            max_new_tokens,
        )

    def _record(self, rid: str, caller: ApiPrincipal, turn: AnswerTurn) -> None:
        """The request's content-free event, its escalation record and its cost."""
        event = request_event(rid, caller, turn, self.bundle_id)
        body = turn.response
        if body.escalated:  # a doubted answer reaches a human each time it is served
            self.escalations.record(
                rid,
                event["user"],
                caller.team,
                body.reasons,
                body.confidence,
                body.groundedness,
                event["chunk_ids"],
                body.model_version,
            )
        self.events.info("request", extra={"fields": event})
        if body.usage.cost > 0:
            self.cost.inc(body.usage.cost, tags={"team": caller.team})

    # -- streaming -------------------------------------------------------------------------

    async def _stream(
        self,
        rid: str,
        caller: ApiPrincipal,
        question: str,
        mode: str | None,
        top_k: int | None,
        max_new_tokens: int | None,
    ) -> AsyncIterator[tuple[str, Any]]:
        """("meta", citations), ("delta", text)..., ("done", the /v1/ask response)."""
        self.check_bundle()
        deadline = time.perf_counter() + self.config.serve.request_timeout_s
        events = self.pipeline.stream(
            question,
            caller.principal,
            mode=mode,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            request_id=rid,
            observe=self._observe,
            deadline=deadline,
        )
        kind, cited = await asyncio.wait_for(
            events.__anext__(), self.config.serve.request_timeout_s
        )
        yield (
            kind,
            {
                "request_id": rid,
                "citations": [
                    {
                        "marker": i,
                        "chunk_id": p.chunk_id,
                        "doc_id": p.doc_id,
                        "title": p.title,
                        "score": p.score,
                    }
                    for i, p in enumerate(cited, 1)
                ],
            },
        )
        async for kind, payload in events:
            if kind == "done":
                self._record(rid, caller, payload)
                yield kind, payload.response.model_dump()
            else:
                yield kind, payload

    async def _ask_events(
        self, rid: str, caller: ApiPrincipal, body: AskRequest
    ) -> AsyncIterator[str]:
        try:
            async for kind, payload in self._stream(
                rid, caller, body.question, body.mode, body.top_k, body.max_new_tokens
            ):
                data = {"text": payload} if kind == "delta" else payload
                yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
        except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band
            yield f"event: error\ndata: {json.dumps(self._in_band(exc, rid, '/v1/ask'))}\n\n"

    async def _chat_events(
        self, rid: str, caller: ApiPrincipal, question: str, max_new_tokens: int | None
    ) -> AsyncIterator[str]:
        created, model = int(time.time()), "rayrag"
        try:
            async for kind, payload in self._stream(
                rid, caller, question, None, None, max_new_tokens
            ):
                if kind == "meta":
                    chunk = chat_chunk(rid, model, created, {"role": "assistant", "content": ""})
                elif kind == "delta":
                    chunk = chat_chunk(rid, model, created, {"content": payload})
                else:
                    chunk = chat_chunk(
                        rid, payload["model_version"], created, {}, payload["finish_reason"]
                    )
                    chunk["usage"] = payload["usage"]
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        except Exception as exc:  # noqa: BLE001
            yield f"data: {json.dumps(self._in_band(exc, rid, '/v1/chat/completions'))}\n\n"

    def _in_band(self, exc: Exception, rid: str, route: str) -> dict[str, Any]:
        status, kind, message = classify_error(exc)
        self.record_failure(route, exc, rid, status)
        return error_body(kind, message, rid)

    @staticmethod
    def _sse(events: AsyncIterator[str]) -> StreamingResponse:
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    # -- what serve.api and serve.admin call -----------------------------------------------

    def record_success(self, route: str) -> None:
        self.requests.inc(tags={"route": route, "status": "200"})

    def record_failure(self, route: str, exc: Exception, rid: str, status: int) -> None:
        self.requests.inc(tags={"route": route, "status": str(status)})
        self.events.warning(
            "request_failed",
            extra={
                "fields": {
                    "request_id": rid,
                    "route": route,
                    "status": status,
                    "error": type(exc).__name__,
                }
            },
        )

    def check_bundle(self) -> None:
        """A replaced bundle (forget, re-ingest) empties the answer cache: the stages reload it
        on their next call (`BundleWatch`), and no answer built from the old one is served."""
        if self.bundle is None:
            return
        stamp = manifest_stamp(self.bundle)
        if stamp is not None and stamp != self._bundle_stamp:
            self._bundle_stamp = stamp
            self.bundle_id = self._read_bundle_id()
            self.cache.clear()

    def _read_bundle_id(self) -> str:
        if self.bundle is None:
            return ""
        try:
            return str(
                json.loads((self.bundle / "manifest.json").read_text(encoding="utf-8")).get(
                    "bundle_id", ""
                )
            )
        except (OSError, ValueError):
            return getattr(self, "bundle_id", "")
