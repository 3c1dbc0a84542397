"""The FastAPI app behind the Ingress: the body limit, the one error handler, the request id.

Every route's failures go through one place (`failure`): an exception becomes its status
and a one-line OpenAI-style body with the request id (`rayrag.serve.errors`), is counted
in `rayrag_requests` and leaves one content-free `request_failed` event. Routes raise;
they never build error bodies themselves. The request id is a dependency (`RequestId`):
X-Request-ID when it looks like an id (Serve's proxy sets one when the client sends none),
else a fresh one.

The Ingress attaches itself (`attach`) when its replica starts, so module-level routes
(`rayrag.serve.admin`) and this handler reach its metrics, keys and state; a replica is one
process holding one Ingress.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from rayrag import __version__
from rayrag.answering.response import ErrorResponse
from rayrag.serve.errors import HTTPFailure, classify_error
from rayrag.serve.schemas import error_body, request_id, validation_message

MAX_BODY_BYTES = 1024 * 1024  # refused before parsing: no request body is read past this
UPLOAD_PATH = "/v1/admin/documents"  # multipart uploads: their own limit (serve.uploads)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": what}
    for status, what in (
        (401, "no or wrong API key"),
        (403, "the key may not do this"),
        (413, "question or body too large"),
        (422, "a malformed field (named, never echoed)"),
        (502, "the generator backend rejected the request"),
        (503, "timeout or overload; retry"),
        (500, "internal error; quote the request id"),
    )
}

app = FastAPI(
    title="rayrag",
    version=__version__,
    responses=ERROR_RESPONSES,
    description="Governed retrieval-augmented generation: answers with citations, KG facts "
    "and validation, from the caller's readable documents only.",
)
_attached: list[Any] = [None]


def attach(ingress: Any) -> None:
    """Make `ingress` the one this process's routes and error handler report to."""
    _attached[0] = ingress


class ConfiguredCORS:
    """CORS for the origins of the attached Ingress's `serve.cors_origins` (e.g. a chat UI on
    another host); none configured = no CORS headers, same origin only. Installed on the
    module's app before Serve freezes a copy of it, so it reads the setting per request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._cors: tuple[tuple[str, ...], Any] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ingress = _attached[0]
        origins = tuple(ingress.config.serve.cors_origins) if ingress is not None else ()
        if scope["type"] != "http" or not origins:
            await self.app(scope, receive, send)
            return
        if self._cors is None or self._cors[0] != origins:
            cors = CORSMiddleware(
                self.app,
                allow_origins=list(origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            )
            self._cors = (origins, cors)
        await self._cors[1](scope, receive, send)


def current_ingress() -> Any:
    ingress = _attached[0]
    if ingress is None:
        raise HTTPFailure(503, "unavailable", "the service is starting; retry")
    return ingress


def request_id_of(request: Request) -> str:
    return request_id(request.headers.get("x-request-id"))


RequestId = Annotated[str, Depends(request_id_of)]


def route_of(request: Request) -> str:
    """The matched route's template (bounded label values for metrics), or "unmatched"."""
    return getattr(request.scope.get("route"), "path", "unmatched")


def failure(route: str, exc: Exception, rid: str, param: str | None = None) -> JSONResponse:
    """The response for a failed request, counted and logged by type only; `param` names
    the request field at fault (OpenAI's `error.param`), when one is."""
    status, kind, message = classify_error(exc)
    ingress = _attached[0]
    if ingress is not None:
        ingress.record_failure(route, exc, rid, status)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = error_body(kind, message, rid, param=param or getattr(exc, "param", None))
    return JSONResponse(body, status_code=status, headers=headers)


def body_limit(path: str) -> tuple[int, str]:
    """(bytes, the setting that says so) a body may declare: MAX_BODY_BYTES, except a
    document upload, limited by `serve.upload.max_request_bytes` (and while it streams)."""
    ingress = _attached[0]
    if path == UPLOAD_PATH and ingress is not None:
        return ingress.config.serve.upload.max_request_bytes, " (serve.upload.max_request_bytes)"
    return MAX_BODY_BYTES, ""


@app.middleware("http")
async def _one_error_handler(request: Request, call_next: Any) -> Any:
    """413 on the declared Content-Length before the body is read; any exception a route
    raises becomes its status here; every response is counted by route and status."""
    rid = request_id_of(request)
    try:
        length = int(request.headers.get("content-length") or 0)
    except ValueError:
        length = 0
    limit, setting = body_limit(request.url.path)
    if length > limit:
        return failure(
            request.url.path if request.url.path.startswith("/v1/") else "unmatched",
            HTTPFailure(
                413, "request_too_large", f"request body larger than {limit} bytes{setting}"
            ),
            rid,
        )
    try:
        response = await call_next(request)
    except Exception as exc:  # noqa: BLE001 - mapped to a status, never echoed
        return failure(route_of(request), exc, rid)
    ingress = _attached[0]
    if ingress is not None and response.status_code < 400:
        ingress.record_success(route_of(request))
    return response


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    loc = [str(p) for p in (errors[0].get("loc", ()) if errors else ()) if p != "body"]
    if errors and errors[0].get("type") == "extra_forbidden":
        loc = loc[:-1]  # an unknown key is the caller's text: never echoed
    return failure(
        route_of(request),
        HTTPFailure(422, "invalid_request", validation_message(exc)),
        request_id_of(request),
        param=".".join(loc) or None,
    )


app.add_middleware(ConfiguredCORS)  # outermost: a preflight is answered before auth and limits
