"""The front door: FastAPI behind Ray Serve, running the AnswerPipeline over the stage handles.

A question's path, each arrow one awaited handle call (`rayrag.serve.handles`):

    auth (Bearer key -> principal, groups, team) -> input safety -> Redactor (query PII)
      -> Retriever.search (embed + FAISS)  ||  Ranker.link (entity linking)   concurrently
      -> Ranker.graph_ranking (PageRank) -> Ranker.evidence (fusion, hops, facts)
      -> Generator -> Guard

The steps, the refusal, the cost and the response are `AnswerPipeline`'s, as in `rayrag
ask`. The service's own: keys, limits, the answer cache, `serve.ledger` (events,
escalations, metrics) and the MLflow trace of a sampled request (`tracking.traces`), under
`serve.request_timeout_s`. Errors are mapped in `serve.api`; admin routes are `serve.admin`
(document upload: `serve.uploads`), OpenAI's extras `serve.openai_compat`, ratings
`serve.feedback`, streams `serve.sse`, the web page `serve.web`.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime, and
# through `serve.ingress` string annotations are not resolved (pydantic "not fully defined").

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from ray import serve

from rayrag.answering.pipeline import AnswerPipeline, AnswerTurn
from rayrag.answering.response import AskResponse, ChatCompletion
from rayrag.config import RAGConfig
from rayrag.generator.prompt import served_prompt_label
from rayrag.serve import admin, feedback, openai_compat, uploads, web
from rayrag.serve.api import RequestId, app, attach
from rayrag.serve.auth import ApiPrincipal, KeyStore
from rayrag.serve.cache import AnswerCache, answer_key, served_from_cache
from rayrag.serve.deployments import manifest_stamp, read_bundle_id
from rayrag.serve.errors import HTTPFailure, classify_error
from rayrag.serve.feedback import requester
from rayrag.serve.handles import HandleStages
from rayrag.serve.ledger import RequestLedger
from rayrag.serve.locate import locate_bundle
from rayrag.serve.schemas import AskRequest, ChatCompletionRequest, error_body
from rayrag.serve.sse import ask_events, chat_events, citations_meta, sse
from rayrag.tracking.traces import ServeTracer

BODY_OVERHEAD_BYTES = 16 * 1024  # JSON around the question: fields, chat history
STAGES = ("redactor", "retriever", "ranker", "generator", "guard")
app.include_router(admin.router)
app.include_router(openai_compat.router)
app.include_router(feedback.router)
app.include_router(web.router)
app.include_router(uploads.router)


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
            prompt_version=served_prompt_label(config),
        )
        serve_cfg = config.serve
        self.keys = KeyStore.from_config(serve_cfg)
        self.ledger = RequestLedger(serve_cfg)
        self.events, self.escalations = self.ledger.events, self.ledger.escalations
        self.bundle = locate_bundle(bundle) if bundle else None
        self._bundle_stamp = manifest_stamp(self.bundle) if self.bundle else None
        self.bundle_id = read_bundle_id(self.bundle) if self.bundle else ""
        self.cache = AnswerCache(serve_cfg.answer_cache_size, serve_cfg.answer_cache_ttl_s)
        self.max_body = serve_cfg.max_question_chars * 4 + BODY_OVERHEAD_BYTES
        self.last_purge: dict[str, Any] = {}
        self.tracer = ServeTracer(config.tracking)
        self.tracer.warm_up()
        self._stop = admin.start_purge_loop(self)
        attach(self)

    def __del__(self) -> None:
        """Serve's graceful shutdown: the traces still on MLflow's export queue are written
        (a deleted or scaled-down replica would otherwise lose its last requests' traces)."""
        if hasattr(self, "tracer"):  # a replica whose __init__ failed has nothing to flush
            self._stop.set()
            self.tracer.flush()

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
        stages = dict(zip(STAGES, states, strict=True))
        # a generator endpoint that does not answer: the graph cannot answer either
        ready = all(state.get("endpoint", "ok") == "ok" for state in stages.values())
        return JSONResponse(
            {"ready": ready, "stages": stages, "config_hash": self.config.config_hash},
            status_code=200 if ready else 503,
        )

    # -- the API ---------------------------------------------------------------------------

    @app.post("/v1/ask", response_model=AskResponse)
    async def ask(self, body: AskRequest, request: Request, rid: RequestId) -> Any:
        """Answer a question from the caller's readable documents, with citations and facts."""
        caller = await self._admit(request, body.question)
        if body.stream:
            events = self._stream(rid, caller, body, "/v1/ask")
            return sse(ask_events(events, self._in_band(rid, "/v1/ask")))
        answer = self._answer(rid, caller, body, _cacheable(request), "/v1/ask")
        return await asyncio.wait_for(answer, self.config.serve.request_timeout_s)

    @app.post("/v1/chat/completions", response_model=ChatCompletion)
    async def chat_completions(
        self, body: ChatCompletionRequest, request: Request, rid: RequestId
    ) -> Any:
        """OpenAI-compatible: the last user message, made standalone, is the question."""
        self.keys.authenticate(request.headers.get("authorization"))  # 401 before the body
        turn = openai_compat.chat_turn(body)
        caller = await self._admit(request, turn.question)
        ask = AskRequest.model_construct(question=turn.question, max_new_tokens=body.token_cap())
        model = self.config.serve.model_name
        route = "/v1/chat/completions"
        if body.stream:
            report = self._in_band(rid, route)
            return sse(chat_events(self._stream(rid, caller, ask, route), turn, model, rid, report))
        answer = self._answer(rid, caller, ask, _cacheable(request), route)
        response = await asyncio.wait_for(answer, self.config.serve.request_timeout_s)
        return openai_compat.completion(turn, response, model, rid)

    # -- answering -------------------------------------------------------------------------

    async def _admit(self, request: Request, question: str) -> ApiPrincipal:
        caller = self.keys.authenticate(request.headers.get("authorization"))
        # Chunked bodies declare no length: measure what FastAPI read (cached, no re-read).
        length = int(request.headers.get("content-length") or 0) or len(await request.body())
        limit = self.config.serve.max_question_chars
        if length > self.max_body or len(question) > limit:
            message = f"question longer than {limit} characters (serve.max_question_chars)"
            raise HTTPFailure(413, "request_too_large", message)
        if not question.strip():
            message = "invalid request: question: must not be blank"
            raise HTTPFailure(422, "invalid_request", message)
        return caller

    async def answer_for(
        self,
        caller: ApiPrincipal,
        question: str,
        mode: str | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
    ) -> dict[str, Any]:
        """The /v1/ask response for an authenticated caller, without HTTP (handles, tests)."""
        ask = AskRequest.model_construct(
            question=question, mode=mode, top_k=top_k, max_new_tokens=max_new_tokens
        )
        response = await self._answer(uuid.uuid4().hex, caller, ask, False, "handle")
        return response.model_dump()

    async def _answer(
        self,
        rid: str,
        caller: ApiPrincipal,
        ask: AskRequest,
        use_cache: bool = True,
        route: str = "/v1/ask",
    ) -> AskResponse:
        """The answer, traced when sampled (`rayrag.tracking.traces`): a failure or a timeout
        (the cancellation `wait_for` sends) leaves an error trace and is raised on."""
        record = self.tracer.begin(rid, route, self.ledger.observe)
        try:
            turn = await self._answer_turn(rid, caller, ask, use_cache, record)
        except BaseException as exc:
            self.tracer.finish(record, requester(caller), error=exc)
            raise
        self.tracer.finish(record, requester(caller), turn, {"bundle_id": self.bundle_id})
        return turn.response

    async def _answer_turn(
        self, rid: str, caller: ApiPrincipal, ask: AskRequest, use_cache: bool, record: Any
    ) -> AnswerTurn:
        started = time.perf_counter()
        question, max_new_tokens = ask.question, ask.max_new_tokens
        mode = ask.mode or self.config.retrieval.mode
        top_k = ask.top_k or self.config.retrieval.top_k
        self.check_bundle()
        categories = self.pipeline.screen(question)
        key = self._cache_key(caller, question, mode, top_k, max_new_tokens) if use_cache else None
        cached = self.cache.get(key) if key and categories is None else None
        if cached is not None:  # nothing is computed for this caller: no cost
            response = served_from_cache(cached, rid, time.perf_counter() - started)
            turn = AnswerTurn(response=response)
            self._record(rid, caller, turn)
            return turn
        turn = await self.pipeline.answer(
            question,
            caller.principal,
            mode=mode,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            request_id=rid,
            observe=record.observe if record is not None else self.ledger.observe,
            screened=categories,
        )
        self._record(rid, caller, turn)
        if use_cache and not turn.response.refused:
            key = key or self._cache_key(caller, question, mode, top_k, max_new_tokens)
            if key:
                self.cache.put(key, turn.response)
        return turn

    def _cache_key(
        self, caller: ApiPrincipal, question: str, mode: str, top_k: int, max_new_tokens: int | None
    ) -> str | None:
        if not self.pipeline.model_version or self.cache.max_entries == 0:
            return None  # the first answer names the model version; until then, no caching
        versions = (self.bundle_id, self.pipeline.model_version, self.config.config_hash)
        return answer_key(
            caller.principal,
            *versions,
            self.pipeline.prompt_version,
            question,
            mode,
            top_k,
            max_new_tokens,
        )

    def _record(self, rid: str, caller: ApiPrincipal, turn: AnswerTurn) -> None:
        self.ledger.answered(rid, caller, turn, self.bundle_id)

    # -- streaming -------------------------------------------------------------------------

    async def _stream(
        self, rid: str, caller: ApiPrincipal, ask: AskRequest, route: str
    ) -> AsyncIterator[tuple[str, Any]]:
        """("meta", citations), ("delta", text)..., ("done", the /v1/ask response); traced
        as `_answer` is, a client that goes away mid-stream as an error (GeneratorExit)."""
        record = self.tracer.begin(rid, route, self.ledger.observe)
        finished = False
        try:
            async for kind, payload in self._stream_turn(rid, caller, ask, record):
                if kind == "done":
                    self._record(rid, caller, payload)
                    self.tracer.finish(
                        record, requester(caller), payload, {"bundle_id": self.bundle_id}
                    )
                    finished = True
                    yield kind, payload.response.model_dump()
                else:
                    yield kind, payload
        except BaseException as exc:
            if not finished:
                self.tracer.finish(record, requester(caller), error=exc)
            raise

    async def _stream_turn(
        self, rid: str, caller: ApiPrincipal, ask: AskRequest, record: Any
    ) -> AsyncIterator[tuple[str, Any]]:
        self.check_bundle()
        deadline = time.perf_counter() + self.config.serve.request_timeout_s
        events = self.pipeline.stream(
            ask.question,
            caller.principal,
            mode=ask.mode,
            top_k=ask.top_k,
            max_new_tokens=ask.max_new_tokens,
            request_id=rid,
            observe=record.observe if record is not None else self.ledger.observe,
            deadline=deadline,
        )
        kind, cited = await asyncio.wait_for(
            events.__anext__(), self.config.serve.request_timeout_s
        )
        yield kind, citations_meta(rid, cited)
        async for kind, payload in events:
            yield kind, payload

    def _in_band(self, rid: str, route: str) -> Any:
        """A stream's failure: counted and logged here, its error body sent in-band."""

        def report(exc: Exception) -> dict[str, Any]:
            status, kind, message = classify_error(exc)
            self.record_failure(route, exc, rid, status)
            return error_body(kind, message, rid)

        return report

    # -- what serve.api and serve.admin call -----------------------------------------------

    def record_success(self, route: str) -> None:
        self.ledger.succeeded(route)

    def record_failure(self, route: str, exc: Exception, rid: str, status: int) -> None:
        self.ledger.failed(route, exc, rid, status)

    def check_bundle(self) -> None:
        """A replaced bundle (forget, re-ingest) empties the answer cache: the stages reload it
        on their next call (`BundleWatch`), and no answer built from the old one is served."""
        if self.bundle is None:
            return
        stamp = manifest_stamp(self.bundle)
        if stamp is not None and stamp != self._bundle_stamp:
            self._bundle_stamp = stamp
            self.bundle_id = read_bundle_id(self.bundle, self.bundle_id)
            self.cache.clear()
