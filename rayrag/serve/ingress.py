"""The front door: FastAPI behind Ray Serve, orchestrating the stages with DeploymentHandles.

A question's path (the README's Architecture), each arrow one awaited handle call:

    auth (Bearer key -> principal, groups, team) -> Redactor (query PII)
      -> Retriever.search (embed + FAISS)  ||  KGEnricher.link (entity linking)   concurrently
      -> KGEnricher.graph_ranking (PageRank)
      -> KGEnricher.evidence (fusion, graph-guided hops, ACL re-check, facts) -> Generator -> Guard

The same steps as `HybridRetriever.retrieve` + `Reader.answer`, so the service answers what
`rayrag ask` answers. Nothing here blocks the event loop (no `ray.get`); the whole request
runs under `serve.request_timeout_s` and a late one gets 503, as does one the Ingress cannot
queue (`max_queued_requests`, Serve's own back-pressure).

Errors are one line in an OpenAI-style body with the request id and never echo the request:
401 (no or bad key), 403 (the principal may read nothing), 413 (question or body too large),
422 (malformed JSON or fields: the field and the reason, never the value), 503 (timeout,
overload, or an expert shard that could not be brought back), 500 (anything else: a type name in the event log, nothing in the body). The
request id is X-Request-ID: Serve's proxy makes one when the client sends none, passes it
in, and echoes it on the response; it is in every body, event and escalation record. Each
request leaves one privacy-safe event (ids, counts, timings, versions; `file_event_logger`)
and, when the guard is unsure, an escalation record (ids only). Stage latencies and request
counts are Ray Serve custom metrics (Prometheus), tagged by stage and route, never by user.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime, and
# through `serve.ingress` string annotations are not resolved (pydantic "not fully defined").

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.metrics import Counter, Histogram

from rayrag import __version__
from rayrag.config import RAGConfig
from rayrag.errors import AccessDenied, ConfigError, DataError, ShardFailure
from rayrag.event_log import file_event_logger, fingerprint
from rayrag.generator.prompt import prompt_label
from rayrag.generator.reader import result_to_json
from rayrag.generator.routing_health import shard_imbalance
from rayrag.serve.auth import ApiPrincipal, AuthError, KeyStore
from rayrag.serve.cache import AnswerCache, answer_key
from rayrag.serve.deployments import manifest_stamp
from rayrag.serve.escalation import EscalationQueue
from rayrag.serve.schemas import (
    AliasRequest,
    AskRequest,
    ChatCompletionRequest,
    ForgetRequest,
    PurgeRequest,
    chat_chunk,
    chat_completion,
    error_body,
    request_id,
    validation_message,
)
from rayrag.types import Evidence, Principal, RedactedQuestion

LATENCY_BOUNDARIES_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
BODY_OVERHEAD_BYTES = 16 * 1024  # JSON around the question: fields, chat history
MAX_BODY_BYTES = 1024 * 1024  # refused before parsing: no request body is read past this
STREAM_HOLD = " \n\t"  # streamed text is released a whole word at a time, redacted

app = FastAPI(title="rayrag", version=__version__,
              description="Governed retrieval-augmented generation: answers with citations, KG facts "
                          "and validation, from the caller's readable documents only.")


class HTTPFailure(Exception):
    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}


def _error(status: int, kind: str, message: str, rid: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(kind, message, rid), status_code=status, headers=headers)


@app.middleware("http")
async def _refuse_huge_bodies(request: Request, call_next: Any) -> Any:
    """413 on the declared Content-Length, before FastAPI reads and parses the body (the
    per-config question limit is checked after parsing, in `Ingress._admit`)."""
    try:
        length = int(request.headers.get("content-length") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        return _error(413, "request_too_large", f"request body larger than {MAX_BODY_BYTES} bytes",
                      request_id(request.headers.get("x-request-id")))
    return await call_next(request)


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error(422, "invalid_request", validation_message(exc), request_id(request.headers.get("x-request-id")))


class AdminOnly(AccessDenied):
    """A `user` key on an admin route (HTTP 403)."""


def classify_error(exc: Exception) -> tuple[int, str, str]:
    """(HTTP status, error type, message) for an exception; the message never carries request
    content (an exception's own text may: it is not used)."""
    if isinstance(exc, HTTPFailure):
        return exc.status, exc.kind, exc.message
    if isinstance(exc, AuthError):
        return 401, "unauthorized", str(exc)  # AuthError messages never echo the key
    if isinstance(exc, AdminOnly):
        return 403, "forbidden", str(exc)
    if isinstance(exc, AccessDenied):
        return 403, "forbidden", "this key's principal may not read the documents needed"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return 503, "timeout", "the request did not finish within serve.request_timeout_s; retry later"
    if isinstance(exc, ShardFailure):
        return 503, "unavailable", "the generator lost an expert shard and is restarting it; retry later"
    if isinstance(exc, (RayActorError, ActorUnavailableError)):  # a stage replica died mid-request
        return 503, "unavailable", "a serving replica was lost while answering; Serve is replacing it, retry"
    if isinstance(exc, DataError):
        return 400, "invalid_request", "the request could not be processed as given"
    return 500, "internal_error", "internal error; quote the request id to the operator"


def _cacheable(request: Request) -> bool:
    """False when the client sent `Cache-Control: no-cache` or `no-store` (benches, probes)."""
    directives = request.headers.get("cache-control", "").lower()
    return "no-cache" not in directives and "no-store" not in directives


def _events_for(path: Path, rid: str) -> list[dict[str, Any]]:
    """The events of one request id in the event log and its rotated files (oldest first)."""
    rotated = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    files = sorted(rotated, key=lambda p: int(p.suffix[1:]), reverse=True) + [path]  # .5 is the oldest
    found = []
    for file in files:
        if not file.is_file():
            continue
        with file.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if rid in line:
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if event.get("request_id") == rid:
                        found.append(event)
    return found


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    def __init__(self, redactor: Any, retriever: Any, kg: Any, generator: Any, guard: Any, config_json: str,
                 bundle: str = "") -> None:
        self.config = RAGConfig.model_validate_json(config_json)
        self.redactor, self.retriever, self.kg, self.generator, self.guard = redactor, retriever, kg, generator, guard
        serve_cfg = self.config.serve
        self.keys = KeyStore.from_config(serve_cfg)
        self.escalations = EscalationQueue(serve_cfg.escalation_queue)
        self.events = file_event_logger("rayrag.serve.events", serve_cfg.event_log,
                                        max_bytes=serve_cfg.event_log_max_bytes, backups=serve_cfg.event_log_backups)
        self.bundle = Path(bundle) if bundle else None
        self._bundle_stamp = manifest_stamp(self.bundle) if self.bundle else None
        self.bundle_id = self._read_bundle_id()
        self.cache = AnswerCache(serve_cfg.answer_cache_size, serve_cfg.answer_cache_ttl_s)
        self.model_version = ""  # the Generator's, learned from its first answer (or readyz)
        safety = self.config.governance.input_safety
        self.safety = None
        if safety.enabled:
            from rayrag.governance.safety.input_safety import input_safety

            self.safety = input_safety(safety)  # one compiled classifier per process
        self.last_purge: dict[str, Any] = {}
        self._stop = threading.Event()
        if self.config.governance.retention.purge_interval_s > 0:
            threading.Thread(target=self._purge_loop, name="rayrag-purge", daemon=True).start()
        self.requests = Counter("rayrag_requests", description="Requests by route and HTTP status.",
                                tag_keys=("route", "status"))
        self.latency = Histogram("rayrag_stage_latency_ms", description="Per-stage latency (ms).",
                                 boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("stage",))
        self.cost = Counter("rayrag_cost", description="Spend of answered requests, in serve.currency, by team.",
                            tag_keys=("team",))
        self.max_body = self.config.serve.max_question_chars * 4 + BODY_OVERHEAD_BYTES
        self.prompt_version = prompt_label(self.config.tracking.prompt_name, self.config.tracking.prompt_version)

    # -- probes ----------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """Alive: the ingress answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Ready: every stage has loaded its bundle or model and answers."""
        names = ("redactor", "retriever", "kg", "generator", "guard")
        try:
            states = await asyncio.wait_for(
                asyncio.gather(*(getattr(self, n).ready.remote() for n in names)), timeout=10)
        except Exception as exc:  # noqa: BLE001 - not ready, whatever the reason
            return JSONResponse({"ready": False, "error": type(exc).__name__}, status_code=503)
        return JSONResponse({"ready": True, "stages": dict(zip(names, states, strict=True)),
                             "config_hash": self.config.config_hash})

    # -- the API ---------------------------------------------------------------------------

    @app.post("/v1/ask")
    async def ask(self, body: AskRequest, request: Request) -> Any:
        """Answer a question from the caller's readable documents, with citations and facts."""
        rid = request_id(request.headers.get("x-request-id"))
        try:
            caller = await self._admit(request, body.question)
            if body.stream:
                return self._sse(self._ask_events(rid, caller, body), rid)
            response = await asyncio.wait_for(self._answer(rid, caller, body.question, body.mode, body.top_k,
                                                           body.max_new_tokens, _cacheable(request)),
                                              self.config.serve.request_timeout_s)
            return self._ok("/v1/ask", response, rid)
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never echoed
            return self._failure("/v1/ask", exc, rid)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Any:
        """OpenAI-compatible: the last user message is the question."""
        rid = request_id(request.headers.get("x-request-id"))
        try:
            try:
                question = body.question()
            except ValueError as exc:
                raise HTTPFailure(422, "invalid_request", f"invalid request: messages: {exc}") from None
            caller = await self._admit(request, question)
            if body.stream:
                return self._sse(self._chat_events(rid, caller, question, body.token_cap()), rid)
            response = await asyncio.wait_for(self._answer(rid, caller, question, None, None, body.token_cap(),
                                                           _cacheable(request)), self.config.serve.request_timeout_s)
            extra = {k: response[k] for k in ("citations", "facts", "validation", "escalated", "request_id",
                                               "model_version", "config_hash")}
            completion = chat_completion(rid, response["answer"], response["finish_reason"], response["usage"],
                                         response["model_version"], extra=extra)
            return self._ok("/v1/chat/completions", completion, rid)
        except Exception as exc:  # noqa: BLE001
            return self._failure("/v1/chat/completions", exc, rid)

    # -- administration (role admin only) --------------------------------------------------

    def _admin(self, request: Request) -> ApiPrincipal:
        caller = self.keys.authenticate(request.headers.get("authorization"))
        if not caller.is_admin:
            raise AdminOnly("this key's role may not use /v1/admin routes (admin only)")
        return caller

    def _audit(self, action: str, caller: ApiPrincipal, rid: str, **fields: Any) -> None:
        self.events.info("admin", extra={"fields": {"request_id": rid, "action": action,
                                                    "user": fingerprint(caller.principal.name),
                                                    "key_id": caller.key_id, **fields}})

    @app.post("/v1/admin/forget")
    async def admin_forget(self, body: ForgetRequest, request: Request) -> Any:
        """Erase documents from the served bundle: chunks, vectors, graph, caches; audited."""
        rid = request_id(request.headers.get("x-request-id"))
        try:
            caller = self._admin(request)
            if self.bundle is None:
                raise HTTPFailure(409, "conflict", "this graph was built without a bundle path; use `rayrag forget`")
            from rayrag.governance.privacy.erasure import forget
            from rayrag.index.bundle import IndexBundle

            known = set(IndexBundle.load(self.bundle).documents().column("doc_id").to_pylist())
            missing = sorted(set(body.doc_ids) - known)
            if missing:
                raise HTTPFailure(404, "not_found", f"{len(missing)} of {len(set(body.doc_ids))} document id(s) "
                                  "are not in the served bundle")
            report = await asyncio.to_thread(forget, self.bundle, body.doc_ids, self.config,
                                             actor=fingerprint(caller.principal.name))
            self._check_bundle()  # clears the answer cache now; the stages reload on their next call
            self.cache.clear()
            result = {**report.to_json(), "request_id": rid}
            self._audit("forget", caller, rid, docs=len(set(body.doc_ids)), bundle_id=result.get("bundle_id", ""))
            return self._ok("/v1/admin/forget", result, rid)
        except Exception as exc:  # noqa: BLE001
            return self._failure("/v1/admin/forget", exc, rid)

    @app.post("/v1/admin/purge")
    async def admin_purge(self, body: PurgeRequest, request: Request) -> Any:
        """Delete records past their retention (or older than `older_than_days`)."""
        rid = request_id(request.headers.get("x-request-id"))
        try:
            caller = self._admin(request)
            report = await asyncio.to_thread(self._purge, body.older_than_days, body.dry_run)
            self._audit("purge", caller, rid, dry_run=body.dry_run)
            return self._ok("/v1/admin/purge", {**report, "request_id": rid}, rid)
        except Exception as exc:  # noqa: BLE001
            return self._failure("/v1/admin/purge", exc, rid)

    @app.get("/v1/admin/events")
    async def admin_events(self, request: Request,
                           request_id_: str = Query(..., alias="request_id", min_length=1, max_length=64)) -> Any:
        """The content-free request events of one request id (tracing, audits)."""
        rid = request_id(request.headers.get("x-request-id"))
        try:
            self._admin(request)
            events = await asyncio.to_thread(_events_for, Path(self.config.serve.event_log), request_id_)
            return self._ok("/v1/admin/events", {"events": events, "request_id": rid}, rid)
        except Exception as exc:  # noqa: BLE001
            return self._failure("/v1/admin/events", exc, rid)

    @app.get("/v1/admin/escalations")
    async def admin_escalations(self, request: Request, request_id_: str | None = Query(
            None, alias="request_id", min_length=1, max_length=64)) -> Any:
        """The escalation queue (ids, reason codes, scores), or one request's records."""
        rid = request_id(request.headers.get("x-request-id"))
        try:
            self._admin(request)
            records = await asyncio.to_thread(self.escalations.read)
            if request_id_ is not None:
                records = [r for r in records if r.get("request_id") == request_id_]
            return self._ok("/v1/admin/escalations", {"records": records[-1000:], "request_id": rid}, rid)
        except Exception as exc:  # noqa: BLE001
            return self._failure("/v1/admin/escalations", exc, rid)

    def _registry(self) -> Any:
        if not self.config.tracking.enabled:
            raise HTTPFailure(409, "conflict", "the model registry is off in this deployment (tracking.enabled)")
        from rayrag.tracking.model_registry import ModelRegistry
        from rayrag.tracking.tracker import Tracker

        return ModelRegistry(Tracker(self.config.tracking))

    @app.get("/v1/admin/registry")
    async def admin_registry(self, request: Request) -> Any:
        """The served model name's versions and aliases."""
        rid = request_id(request.headers.get("x-request-id"))
        try:
            self._admin(request)

            def read() -> dict[str, Any]:
                registry = self._registry()
                versions = registry.versions()
                aliases = {alias: v.version for v in versions for alias in v.aliases}
                return {"model": registry.name, "aliases": aliases, "versions": [v.version for v in versions]}

            return self._ok("/v1/admin/registry", {**await asyncio.to_thread(read), "request_id": rid}, rid)
        except Exception as exc:  # noqa: BLE001
            return self._failure("/v1/admin/registry", exc, rid)

    @app.post("/v1/admin/registry/alias")
    async def admin_alias(self, body: AliasRequest, request: Request) -> Any:
        """Move `champion` or `challenger` to a version (a promotion or a rollback), audited."""
        rid = request_id(request.headers.get("x-request-id"))
        try:
            caller = self._admin(request)

            def move() -> dict[str, Any]:
                registry = self._registry()
                try:
                    registry.get(body.version)
                except ConfigError:
                    raise HTTPFailure(404, "not_found", f"model {registry.name} has no version {body.version}") from None
                before = registry.version_for_alias(body.alias)
                who = fingerprint(caller.principal.name)
                if body.alias == "champion":
                    registry.promote(body.version, who=who, why=f"admin api {rid}")
                else:
                    registry.set_challenger(body.version)
                return {"alias": body.alias, "version": body.version,
                        "previous": before.version if before is not None else None}

            result = await asyncio.to_thread(move)
            self._audit("alias", caller, rid, alias=body.alias, version=body.version, previous=result["previous"])
            return self._ok("/v1/admin/registry/alias", {**result, "request_id": rid}, rid)
        except ConfigError as exc:  # e.g. "version N is the champion; a challenger must be another version"
            return self._failure("/v1/admin/registry/alias", HTTPFailure(409, "conflict", str(exc)), rid)
        except Exception as exc:  # noqa: BLE001
            return self._failure("/v1/admin/registry/alias", exc, rid)

    @app.get("/v1/admin/governance")
    async def admin_governance(self, request: Request) -> Any:
        """What this deployment enforces, as configured and as loaded (no secrets)."""
        rid = request_id(request.headers.get("x-request-id"))
        try:
            self._admin(request)
            self._check_bundle()
            gov, serve_cfg = self.config.governance, self.config.serve
            body = {
                "redaction": {"enabled": gov.redaction.enabled, "entities": list(gov.redaction.entities)},
                "input_safety": {**gov.input_safety.model_dump(), "loaded": self.safety is not None},
                "retention": gov.retention.model_dump(), "last_purge": self.last_purge,
                "guard": {"confidence_threshold": serve_cfg.confidence_threshold},
                "bundle_id": self.bundle_id, "model_version": self.model_version,
                "config_hash": self.config.config_hash, "prompt_version": self.prompt_version,
                "answer_cache_size": serve_cfg.answer_cache_size, "answer_cache_entries": len(self.cache),
                "request_id": rid,
            }
            return self._ok("/v1/admin/governance", body, rid)
        except Exception as exc:  # noqa: BLE001
            return self._failure("/v1/admin/governance", exc, rid)

    # -- the pipeline ----------------------------------------------------------------------

    async def _admit(self, request: Request, question: str) -> ApiPrincipal:
        caller = self.keys.authenticate(request.headers.get("authorization"))
        length = int(request.headers.get("content-length") or 0)  # an int: the middleware parsed it
        if not length:  # chunked: no declared length, so measure what FastAPI read (cached, no re-read)
            length = len(await request.body())
        if length > self.max_body or len(question) > self.config.serve.max_question_chars:
            raise HTTPFailure(413, "request_too_large", f"question longer than "
                              f"{self.config.serve.max_question_chars} characters (serve.max_question_chars)")
        if not question.strip():
            raise HTTPFailure(422, "invalid_request", "invalid request: question: must not be blank")
        return caller

    async def _timed(self, timings: dict[str, float], stage: str, awaitable: Any) -> Any:
        started = time.perf_counter()
        try:
            return await awaitable
        finally:
            ms = (time.perf_counter() - started) * 1000
            timings[stage] = round(timings.get(stage, 0.0) + ms, 2)
            self.latency.observe(ms, tags={"stage": stage})

    async def _evidence(self, question: RedactedQuestion, principal: Principal, mode: str, top_k: int,
                        timings: dict[str, float]) -> Evidence:
        """`HybridRetriever.rank` across the Retriever and KGEnricher deployments."""
        retrieval = self.config.retrieval
        if mode == "bm25":  # the lexical index lives beside the graph; nothing else to search
            return await self._timed(timings, "retrieve", self.kg.evidence.remote(
                question, principal, mode, top_k, [], []))
        depth = top_k if mode == "dense" else max(top_k, retrieval.candidate_k)
        dense_ref = self.retriever.search.remote(question, principal, depth)
        if mode == "dense":
            dense_hits, links = await self._timed(timings, "retrieve", dense_ref), {}
        else:  # dense search and entity linking do not depend on each other
            dense_hits, links = await self._timed(timings, "retrieve", asyncio.gather(
                dense_ref, self.kg.link.remote(question, principal)))
        dense_ranking = [(p.chunk_id, p.score) for p in dense_hits]
        graph_ranking: list[tuple[str, float]] = []
        if mode != "dense":
            graph_ranking = await self._timed(
                timings, "kg", self.kg.graph_ranking.remote(principal, links, dense_hits, depth))
        return await self._timed(timings, "kg", self.kg.evidence.remote(
            question, principal, mode, top_k, dense_ranking, graph_ranking))

    async def _prepare(self, caller: ApiPrincipal, question: str, mode: str | None, top_k: int | None,
                       timings: dict[str, float]) -> tuple[str, dict[str, int], Evidence, str, int]:
        mode = mode or self.config.retrieval.mode
        top_k = top_k or self.config.retrieval.top_k
        redacted, question_pii = await self._timed(timings, "redact", self.redactor.redact_one.remote(question))
        evidence = await self._evidence(redacted, caller.principal, mode, top_k, timings)
        return redacted.text, question_pii, evidence, mode, top_k  # the reader reads the strictest form

    async def answer_for(self, caller: ApiPrincipal, question: str, mode: str | None = None,
                         top_k: int | None = None, max_new_tokens: int | None = None,
                         rid: str | None = None, use_cache: bool = True) -> dict[str, Any]:
        """The /v1/ask response for an authenticated caller, without HTTP (handles, benches)."""
        return await self._answer(rid or request_id(None), caller, question, mode, top_k, max_new_tokens, use_cache)

    async def _answer(self, rid: str, caller: ApiPrincipal, question: str, mode: str | None,
                      top_k: int | None, max_new_tokens: int | None, use_cache: bool = True) -> dict[str, Any]:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        mode = mode or self.config.retrieval.mode
        top_k = top_k or self.config.retrieval.top_k
        verdict = self._screen(question)
        if verdict is not None:
            return self._refusal(rid, caller, mode, verdict, timings, started)
        self._check_bundle()
        key = self._cache_key(caller, question, mode, top_k, max_new_tokens) if use_cache else None
        cached = self.cache.get(key) if key else None
        if cached is not None:
            return self._from_cache(rid, caller, cached, timings, started)
        redacted, question_pii, evidence, mode, top_k = await self._prepare(caller, question, mode, top_k, timings)
        result = await self._timed(timings, "generate",
                                   self.generator.answer.remote((redacted, evidence, max_new_tokens)))
        # The reader's candidates (decoding.candidates) go to the Guard, which keeps the one it trusts most.
        result, report = await self._timed(timings, "guard", self.guard.verify.remote(
            redacted, result, evidence, caller.principal))
        body = self._response(rid, caller, mode, question_pii, evidence, result, report, timings, started)
        self.model_version = body["model_version"]
        if use_cache:
            key = key or self._cache_key(caller, question, mode, top_k, max_new_tokens)
            if key:
                self.cache.put(key, body)
        return body

    # -- input safety, the answer cache, the bundle ----------------------------------------

    def _screen(self, question: str) -> Any:
        """The classifier's verdict when the question is flagged, else None."""
        if self.safety is None or not self.config.governance.input_safety.check_questions:
            return None
        verdict = self.safety.check(question)
        return verdict if verdict.flagged else None

    def _refusal(self, rid: str, caller: ApiPrincipal, mode: str, verdict: Any, timings: dict[str, float],
                 started: float) -> dict[str, Any]:
        """The refusal path: nothing retrieved, nothing generated, the event counted."""
        from rayrag.governance.safety.input_safety import REFUSAL_TEXT

        timings["total"] = round((time.perf_counter() - started) * 1000, 2)
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0,
                 "currency": self.config.serve.currency}
        body = {
            "answer": REFUSAL_TEXT, "citations": [], "cited_markers": [], "facts": [],
            "truncated": {"chunk_ids": [], "facts_dropped": 0}, "finish_reason": "content_filter",
            "usage": usage, "model_version": self.model_version, "config_hash": self.config.config_hash,
            "request_id": rid, "mode": mode, "timings_ms": timings, "redactions": {"question": {}, "answer": {}},
            "validation": {"checked": False, "supported": 0, "unknown": 0, "contradicted": 0, "claims": []},
            "groundedness": 0.0, "confidence": 0.0, "escalated": False, "reasons": ["input_safety"],
            "routing": {"expert_share": [], "max_share": 0.0}, "prompt_version": self.prompt_version,
            "refused": True, "cached": False,
            "safety": {"question_flagged": True, "categories": list(verdict.categories), "flagged_chunks": 0},
        }
        self._log_request(rid, caller, body, [], 0, {})
        return body

    def _cache_key(self, caller: ApiPrincipal, question: str, mode: str, top_k: int,
                   max_new_tokens: int | None) -> str | None:
        if not self.model_version or self.cache.max_entries == 0:
            return None  # the first answer names the model version; until then, no caching
        return answer_key(caller.principal, self.bundle_id, self.model_version, self.config.config_hash,
                          self.prompt_version, question, mode, top_k, max_new_tokens)

    def _from_cache(self, rid: str, caller: ApiPrincipal, cached: dict[str, Any], timings: dict[str, float],
                    started: float) -> dict[str, Any]:
        timings["total"] = round((time.perf_counter() - started) * 1000, 2)
        body = {**cached, "request_id": rid, "cached": True, "timings_ms": timings,
                "usage": {**cached["usage"], "cost": 0.0}}  # nothing was computed for this caller
        if body["escalated"]:  # a doubted answer reaches a human each time it is served
            self.escalations.record(rid, fingerprint(caller.principal.name), caller.team, body["reasons"],
                                    body["confidence"], body["groundedness"],
                                    [c["chunk_id"] for c in body["citations"]], body["model_version"])
        self._log_request(rid, caller, body, [c["chunk_id"] for c in body["citations"]],
                          body["safety"]["flagged_chunks"], body["redactions"]["question"])
        return body

    def _read_bundle_id(self) -> str:
        if self.bundle is None:
            return ""
        try:
            return str(json.loads((self.bundle / "manifest.json").read_text(encoding="utf-8")).get("bundle_id", ""))
        except (OSError, ValueError):
            return self.bundle_id if hasattr(self, "bundle_id") else ""

    def _check_bundle(self) -> None:
        """A replaced bundle (forget, re-ingest) empties the answer cache: the stages reload it
        on their next call (`BundleWatch`), and no answer built from the old one is served."""
        if self.bundle is None:
            return
        stamp = manifest_stamp(self.bundle)
        if stamp is not None and stamp != self._bundle_stamp:
            self._bundle_stamp = stamp
            self.bundle_id = self._read_bundle_id()
            self.cache.clear()

    def _purge_loop(self) -> None:
        """Retention, run by the serve graph itself every `retention.purge_interval_s`."""
        interval = self.config.governance.retention.purge_interval_s
        while not self._stop.wait(interval):
            try:
                self._purge(None, False)
            except Exception:  # noqa: BLE001 - logged by type in _purge; the next round retries
                continue

    def _purge(self, older_than_days: float | None, dry_run: bool) -> dict[str, Any]:
        from rayrag.governance.privacy.retention import purge

        try:
            report = purge(self.config, older_than_days=older_than_days, dry_run=dry_run).to_json()
        except Exception as exc:  # a purge error is logged by type only (its text may name files)
            self.events.warning("purge_failed", extra={"fields": {"error": type(exc).__name__}})
            raise
        if not dry_run:
            self.last_purge = {"ts": round(time.time(), 3), "purged": report.get("purged", {})}
            self.events.info("purge", extra={"fields": self.last_purge})
        return report

    def _response(self, rid: str, caller: ApiPrincipal, mode: str, question_pii: dict[str, int],
                  evidence: Evidence, result: Any, report: Any, timings: dict[str, float],
                  started: float) -> dict[str, Any]:
        serve_cfg = self.config.serve
        body = result_to_json(result)
        usage = dict(body["usage"])
        usage["cost"] = round(usage["prompt_tokens"] / 1000 * serve_cfg.price_per_1k_input_tokens
                              + usage["completion_tokens"] / 1000 * serve_cfg.price_per_1k_output_tokens, 8)
        usage["currency"] = serve_cfg.currency
        timings["total"] = round((time.perf_counter() - started) * 1000, 2)
        routing = {"expert_share": result.routing,
                   "max_share": max((max(layer) for layer in result.routing), default=0.0)}
        if result.shard_share:  # expert parallelism: each shard's share and their imbalance
            routing.update(shard_share=result.shard_share, shard_imbalance=shard_imbalance(result.shard_share))
        body.update({
            "answer": report.text, "request_id": rid, "mode": mode, "usage": usage, "timings_ms": timings,
            "redactions": {"question": question_pii, "answer": report.redactions},
            "validation": report.validation, "groundedness": report.groundedness,
            "confidence": report.confidence, "escalated": report.escalated, "reasons": report.reasons,
            "routing": routing, "prompt_version": self.prompt_version, "refused": False, "cached": False,
            "safety": {"question_flagged": False, "categories": [], "flagged_chunks": evidence.flagged_chunks},
        })
        chunk_ids = [p.chunk_id for p in evidence.passages]
        if report.escalated:
            self.escalations.record(rid, fingerprint(caller.principal.name), caller.team, report.reasons,
                                    report.confidence, report.groundedness, chunk_ids, body["model_version"])
        self._log_request(rid, caller, body, chunk_ids, evidence.flagged_chunks, question_pii,
                          facts=len(evidence.facts), shard_share=result.shard_share)
        if usage["cost"] > 0:
            self.cost.inc(usage["cost"], tags={"team": caller.team})
        return body

    def _log_request(self, rid: str, caller: ApiPrincipal, body: dict[str, Any], chunk_ids: list[str],
                     flagged_chunks: int, question_pii: dict[str, int], *, facts: int | None = None,
                     shard_share: Any = None) -> None:
        """The request's privacy_log event: ids, counts, timings, versions, cost; never text."""
        usage, answer_pii = body["usage"], body["redactions"]["answer"]
        self.events.info("request", extra={"fields": {
            "request_id": rid, "user": fingerprint(caller.principal.name), "team": caller.team,
            "key_id": caller.key_id, "role": caller.role, "mode": body["mode"], "chunks": len(chunk_ids),
            "chunk_ids": chunk_ids, "facts": len(body["facts"]) if facts is None else facts,
            "flagged_chunks": flagged_chunks, "question_flagged": body["safety"]["question_flagged"],
            "safety_categories": body["safety"]["categories"], "refused": body["refused"],
            "cached": body["cached"], "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"], "cost": usage["cost"], "currency": usage["currency"],
            "timings_ms": body["timings_ms"], "question_pii": sorted(question_pii), "answer_pii": sorted(answer_pii),
            "pii_detected": bool(question_pii or answer_pii), "escalated": body["escalated"],
            "reasons": body["reasons"], "expert_share": body["routing"]["expert_share"], "shard_share": shard_share,
            "model_version": body["model_version"], "config_hash": body["config_hash"],
            "prompt_version": self.prompt_version, "bundle_id": self.bundle_id}})

    # -- streaming -------------------------------------------------------------------------

    async def _stream_answer(self, rid: str, caller: ApiPrincipal, question: str, mode: str | None,
                             top_k: int | None, max_new_tokens: int | None) -> AsyncIterator[tuple[str, Any]]:
        """("meta", citations), ("delta", text)..., ("done", the /v1/ask response).

        Text leaves a whole word at a time and redacted (the Guard's Presidio); the final
        response carries the fully checked answer, which is authoritative."""
        started = time.perf_counter()
        deadline = started + self.config.serve.request_timeout_s
        timings: dict[str, float] = {}
        verdict = self._screen(question)
        if verdict is not None:
            body = self._refusal(rid, caller, mode or self.config.retrieval.mode, verdict, timings, started)
            yield "meta", {"request_id": rid, "citations": []}
            yield "delta", body["answer"]
            yield "done", body
            return
        self._check_bundle()
        redacted, question_pii, evidence, mode, top_k = await asyncio.wait_for(
            self._prepare(caller, question, mode, top_k, timings), self.config.serve.request_timeout_s)
        pieces = self.generator.options(stream=True).stream.remote(redacted, evidence, max_new_tokens)
        text, sent, result = "", "", None
        generate_started = time.perf_counter()
        cited = await pieces.__anext__()  # the passages that fit the reader's window
        yield "meta", {"request_id": rid, "citations": [
            {"marker": i, "chunk_id": p.chunk_id, "doc_id": p.doc_id, "title": p.title, "score": p.score}
            for i, p in enumerate(cited, 1)]}
        async for item in pieces:
            if time.perf_counter() > deadline:
                pieces.cancel()
                raise TimeoutError("request timed out while decoding")
            if not isinstance(item, str):
                result = item
                break
            text += item
            cut = max(text.rfind(c) for c in STREAM_HOLD)
            if cut > len(sent):
                safe = await self.guard.redact.remote(text[:cut], [p.chunk_id for p in evidence.passages])
                if safe.startswith(sent) and len(safe) > len(sent):
                    yield "delta", safe[len(sent):]
                    sent = safe
        timings["generate"] = round((time.perf_counter() - generate_started) * 1000, 2)
        report = await self._timed(timings, "guard", self.guard.check.remote(
            redacted, result.answer.text, evidence, caller.principal, result.answer_logprob))
        if report.text.startswith(sent) and len(report.text) > len(sent):
            yield "delta", report.text[len(sent):]
        yield "done", self._response(rid, caller, mode, question_pii, evidence, result, report, timings, started)

    async def _ask_events(self, rid: str, caller: ApiPrincipal, body: AskRequest) -> AsyncIterator[str]:
        try:
            async for kind, payload in self._stream_answer(rid, caller, body.question, body.mode, body.top_k,
                                                           body.max_new_tokens):
                data = {"text": payload} if kind == "delta" else payload
                yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
            self.requests.inc(tags={"route": "/v1/ask", "status": "200"})
        except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band
            status, kind, message = classify_error(exc)
            self._count_failure("/v1/ask", exc, rid, status)
            yield f"event: error\ndata: {json.dumps(error_body(kind, message, rid))}\n\n"

    async def _chat_events(self, rid: str, caller: ApiPrincipal, question: str,
                           max_new_tokens: int | None) -> AsyncIterator[str]:
        created = int(time.time())
        model = "rayrag"
        try:
            async for kind, payload in self._stream_answer(rid, caller, question, None, None, max_new_tokens):
                if kind == "meta":
                    chunk = chat_chunk(rid, model, created, {"role": "assistant", "content": ""})
                elif kind == "delta":
                    chunk = chat_chunk(rid, model, created, {"content": payload})
                else:
                    chunk = chat_chunk(rid, payload["model_version"], created, {}, payload["finish_reason"])
                    chunk["usage"] = payload["usage"]
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
            self.requests.inc(tags={"route": "/v1/chat/completions", "status": "200"})
        except Exception as exc:  # noqa: BLE001
            status, kind, message = classify_error(exc)
            self._count_failure("/v1/chat/completions", exc, rid, status)
            yield f"data: {json.dumps(error_body(kind, message, rid))}\n\n"

    def _sse(self, events: AsyncIterator[str], rid: str) -> StreamingResponse:
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # -- responses -------------------------------------------------------------------------

    def _ok(self, route: str, body: dict[str, Any], rid: str) -> JSONResponse:
        self.requests.inc(tags={"route": route, "status": "200"})
        return JSONResponse(body)

    def _count_failure(self, route: str, exc: Exception, rid: str, status: int) -> None:
        self.requests.inc(tags={"route": route, "status": str(status)})
        self.events.warning("request_failed", extra={"fields": {
            "request_id": rid, "route": route, "status": status, "error": type(exc).__name__}})

    def _failure(self, route: str, exc: Exception, rid: str) -> JSONResponse:
        status, kind, message = classify_error(exc)
        self._count_failure(route, exc, rid, status)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return _error(status, kind, message, rid, headers)
