"""What OpenAI clients expect of `/v1` beyond the answer: `/v1/models`, the request fields
rayrag refuses (with a 400 naming the field), stop strings, and the follow-up rewrite.

Clients (the `openai` package, Open WebUI, LangChain) list models first, send content-part
arrays and sampling fields by default, and read one `model` value across a stream. rayrag
decodes one greedy answer per request, so `n` > 1 and sampling (`temperature` > 0, `top_p` <
1) are refused, not silently ignored; `stop` is honoured by cutting the answer at the first
stop string, streamed or not. A follow-up ("What does it make?") is made standalone from the
earlier turns (`answering.followup`) before the pipeline sees it; the caller is told what was
asked (`rayrag.question`), nothing is logged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from rayrag.answering.followup import rewrite_followup
from rayrag.serve.api import current_ingress
from rayrag.serve.errors import HTTPFailure
from rayrag.serve.schemas import ChatCompletionRequest, chat_completion

router = APIRouter(tags=["openai"])
Ingress = Annotated[Any, Depends(current_ingress)]
CREATED = int(time.time())  # when this replica started: the served model's `created`


@router.get("/v1/models")
async def list_models(request: Request, ingress: Ingress) -> dict[str, Any]:
    """OpenAI's model list: the one model this graph serves, under `serve.model_name`."""
    ingress.keys.authenticate(request.headers.get("authorization"))
    name = ingress.config.serve.model_name
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": CREATED, "owned_by": "rayrag"}],
    }


@dataclass(frozen=True)
class ChatTurn:
    """What the pipeline answers for one chat request: the standalone question, whether it
    was rewritten from a follow-up, the stop strings and the stream's usage option."""

    question: str
    rewritten: bool
    stops: tuple[str, ...]
    include_usage: bool


def chat_turn(body: ChatCompletionRequest) -> ChatTurn:
    """The request checked (400 naming the field for what rayrag does not do) and its
    question made standalone."""
    refused = refusal(body)
    if refused is not None:
        field, why = refused
        raise HTTPFailure(400, "unsupported_parameter", f"{field}: {why}", param=field)
    try:
        question = body.question()
        history = body.history()
    except ValueError as exc:
        raise HTTPFailure(
            422, "invalid_request", f"invalid request: messages: {exc}", param="messages"
        ) from None
    rewrite = rewrite_followup(history, question)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return ChatTurn(rewrite.question, rewrite.rewritten, tuple(body.stops()), include_usage)


def completion(turn: ChatTurn, response: Any, model: str, rid: str) -> dict[str, Any]:
    """The `chat.completion` for an answered `/v1/ask` response: the text cut at a stop
    string, rayrag's extras (citations, facts, validation, the rewritten question) beside."""
    text, stopped = cut_at_stop(response.answer, turn.stops)
    keep = {"citations", "facts", "validation", "escalated", "request_id", "model_version"}
    extra = response.model_dump(include=keep | {"config_hash"})
    extra["question"] = turn.question if turn.rewritten else None
    reason = "stop" if stopped else response.finish_reason
    return chat_completion(rid, text, reason, response.usage.model_dump(), model, extra=extra)


def refusal(body: ChatCompletionRequest) -> tuple[str, str] | None:
    """(field, reason) for the first field asking for what rayrag does not do, else None."""
    if body.n is not None and body.n > 1:
        return "n", "one answer per request (n = 1)"
    if body.temperature is not None and body.temperature > 0:
        return "temperature", "answers are decoded greedily: send 0 or leave it out"
    if body.top_p is not None and body.top_p < 1:
        return "top_p", "answers are decoded greedily: send 1 or leave it out"
    return None


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class StopCutter:
    """Stop strings on a stream: pieces are passed on except the tail that could still be
    the start of a stop string, which waits for the next piece; `done` after a stop."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops, self.held, self.done = stops, "", False
        self.hold = max((len(s) for s in stops), default=1) - 1

    def feed(self, piece: str) -> str:
        """The part of `piece` (with what was held) that can be sent now."""
        if self.done:
            return ""
        text = self.held + piece
        cut, stopped = cut_at_stop(text, self.stops)
        if stopped:
            self.held, self.done = "", True
            return cut
        keep = len(text) - self.hold if self.hold else len(text)
        self.held = text[max(keep, 0) :]
        return text[: max(keep, 0)]

    def flush(self) -> str:
        """What is still held once the stream ends without a stop."""
        held, self.held = ("" if self.done else self.held), ""
        return held
