"""The HTTP API's failures: exception -> (status, error type, one-line message).

One mapping for every route. A message never carries request content: an exception's own
text may (a question in a `DataError`), so only the fixed messages here leave the process.
"""

from __future__ import annotations

import asyncio

from ray.exceptions import ActorUnavailableError, RayActorError

from rayrag.errors import (
    AccessDenied,
    DataError,
    GeneratorRejected,
    GeneratorUnavailable,
    ShardFailure,
)
from rayrag.serve.auth import AuthError


class HTTPFailure(Exception):
    """A failure the Ingress decides itself (413, 404, 409...), with its status and type."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}
        self.param = param  # the request field at fault (OpenAI's error.param), if one is


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
        return (
            503,
            "timeout",
            "the request did not finish within serve.request_timeout_s; retry later",
        )
    if isinstance(exc, ShardFailure):
        return (
            503,
            "unavailable",
            "the generator lost an expert shard and is restarting it; retry later",
        )
    if isinstance(exc, GeneratorUnavailable):
        return 503, "unavailable", "the generator backend is unavailable; retry later"
    if isinstance(exc, GeneratorRejected):
        return (
            502,
            "bad_gateway",
            "the generator backend rejected the request; the operator must check generator.openai",
        )
    if isinstance(exc, (RayActorError, ActorUnavailableError)):  # a stage replica died mid-request
        return (
            503,
            "unavailable",
            "a serving replica was lost while answering; Serve is replacing it, retry",
        )
    if isinstance(exc, DataError):
        return 400, "invalid_request", "the request could not be processed as given"
    return 500, "internal_error", "internal error; quote the request id to the operator"
