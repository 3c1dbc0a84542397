"""The content-free event one answered request leaves in `serve.event_log`.

Ids, counts, timings, versions, cost and a fingerprint of the user: never the question,
the answer or a passage (an operator can trace a request without reading it).
"""

from __future__ import annotations

from typing import Any

from rayrag.answering.pipeline import AnswerTurn
from rayrag.event_log import fingerprint
from rayrag.serve.auth import ApiPrincipal


def request_event(
    rid: str, caller: ApiPrincipal, turn: AnswerTurn, bundle_id: str
) -> dict[str, Any]:
    """The `request` event's fields for one answered (or refused, or cached) request."""
    body, evidence = turn.response, turn.evidence
    chunk_ids = (
        [p.chunk_id for p in evidence.passages]
        if evidence
        else [c.chunk_id for c in body.citations]
    )
    usage, redactions, safety = body.usage, body.redactions, body.safety
    return {
        "request_id": rid,
        "user": fingerprint(caller.principal.name),
        "team": caller.team,
        "key_id": caller.key_id,
        "role": caller.role,
        "mode": body.mode,
        "chunks": len(chunk_ids),
        "chunk_ids": chunk_ids,
        "facts": len(evidence.facts) if evidence else len(body.facts),
        "flagged_chunks": safety.flagged_chunks,
        "question_flagged": safety.question_flagged,
        "safety_categories": safety.categories,
        "refused": body.refused,
        "cached": body.cached,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cost": usage.cost,
        "currency": usage.currency,
        "timings_ms": body.timings_ms,
        "question_pii": sorted(redactions.question),
        "answer_pii": sorted(redactions.answer),
        "pii_detected": bool(redactions.question or redactions.answer),
        "escalated": body.escalated,
        "reasons": body.reasons,
        "expert_share": body.routing.expert_share,
        "shard_share": body.routing.shard_share,
        "model_version": body.model_version,
        "config_hash": body.config_hash,
        "prompt_version": body.prompt_version,
        "bundle_id": bundle_id,
    }
