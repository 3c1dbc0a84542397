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

router = APIRouter(tags=["feedback"])
Ingress = Annotated[Any, Depends(current_ingress)]


def any_caller(request: Request, ingress: Ingress) -> ApiPrincipal:
    """The caller of any valid key (401 without one, before the body is read)."""
    return ingress.keys.authenticate(request.headers.get("authorization"))


Caller = Annotated[ApiPrincipal, Depends(any_caller)]


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
    fields = {
        "request_id": body.request_id,
        "feedback_request_id": rid,
        "rating": body.rating,
        "user": fingerprint(caller.principal.name),
        "key_id": caller.key_id,
        "team": caller.team,
        "role": caller.role,
        "comment_chars": len(body.comment or ""),
    }
    ingress.events.info("feedback", extra={"fields": fields})
    return {"request_id": body.request_id, "recorded": True}
