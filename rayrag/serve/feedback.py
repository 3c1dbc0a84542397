"""`POST /v1/feedback`: a thumbs up or down, with an optional comment, on one served answer.

Who may rate: the principal that asked (with any of its keys) or an admin key. The asker is
found in the ledger's memory of recent requests, else in the event log's `request` event
(another replica, a restart); a request id that is unknown or another principal's gets the
same 404, so a key learns nothing about requests it did not make.

What is kept: a content-free `feedback` event (the rated request id, the rating, who as a
fingerprint, key id and team, the comment's length), and, when the request was traced, an
assessment on its MLflow trace (`rayrag.tracking.traces`). The comment is user content: it
reaches MLflow, redacted by the graph's Redactor, as the assessment's rationale only when
`tracking.trace_content` is `redacted`; otherwise its text is dropped here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from rayrag.event_log import fingerprint
from rayrag.serve.admin import events_for
from rayrag.serve.api import RequestId, current_ingress
from rayrag.serve.auth import ApiPrincipal
from rayrag.serve.errors import HTTPFailure
from rayrag.serve.schemas import FeedbackRequest
from rayrag.tracking.traces import Requester

router = APIRouter(tags=["feedback"])
Ingress = Annotated[Any, Depends(current_ingress)]


def any_caller(request: Request, ingress: Ingress) -> ApiPrincipal:
    """The caller of any valid key (401 without one, before the body is read)."""
    return ingress.keys.authenticate(request.headers.get("authorization"))


Caller = Annotated[ApiPrincipal, Depends(any_caller)]


def requester(caller: ApiPrincipal) -> Requester:
    """Who a key stands for, as traces and assessments may name them (no names, no key)."""
    return Requester(fingerprint(caller.principal.name), caller.key_id, caller.team, caller.role)


def asker_in_log(event_log: Path, rid: str) -> str | None:
    """The asker's fingerprint in the newest `request` event of `rid`, if any."""
    asked = [e for e in events_for(event_log, rid) if e.get("event") == "request"]
    return asked[-1].get("user") if asked else None


async def asked_by(ingress: Any, rid: str) -> str | None:
    """Who asked `rid`: the ledger's memory first, the event log (in a thread) otherwise."""
    asker = ingress.ledger.asker(rid)
    if asker is None:
        asker = await asyncio.to_thread(asker_in_log, Path(ingress.config.serve.event_log), rid)
    return asker


@router.post("/v1/feedback")
async def feedback(
    body: FeedbackRequest, caller: Caller, ingress: Ingress, rid: RequestId
) -> dict[str, Any]:
    """Rate an answer this key's principal received (admins: any answer)."""
    asker = await asked_by(ingress, body.request_id)
    if asker is None or (asker != fingerprint(caller.principal.name) and not caller.is_admin):
        raise HTTPFailure(
            404,
            "not_found",
            "no answer to this key's principal has this request_id",
            param="request_id",
        )
    traced = await rate_trace(ingress, body, caller)
    fields = {
        "request_id": body.request_id,
        "feedback_request_id": rid,
        "rating": body.rating,
        "user": fingerprint(caller.principal.name),
        "key_id": caller.key_id,
        "team": caller.team,
        "role": caller.role,
        "comment_chars": len(body.comment or ""),
        "traced": traced,
    }
    ingress.events.info("feedback", extra={"fields": fields})
    return {"request_id": body.request_id, "recorded": True}


async def rate_trace(ingress: Any, body: FeedbackRequest, caller: ApiPrincipal) -> bool:
    """The rating as an assessment on the request's trace, if it was traced; the comment,
    redacted by the Redactor deployment, only where `tracking.trace_content` keeps text."""
    tracer = ingress.tracer
    if not tracer.enabled:
        return False
    rationale = None
    if tracer.with_text and body.comment:
        try:
            redacted, _counts = await ingress.handles["redactor"].redact_one.remote(body.comment)
            rationale = redacted.text
        except Exception:  # noqa: BLE001 - no redaction, no comment: the rating still counts
            rationale = None
    up = body.rating == "up"
    rated = await asyncio.to_thread(
        tracer.feedback, body.request_id, up, requester(caller), rationale
    )
    return rated is not None
