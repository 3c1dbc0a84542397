"""The two streaming wire formats over one answer stream: `/v1/ask`'s named events and
OpenAI's `chat.completion.chunk`s.

The Ingress yields ("meta", the cited passages), ("delta", text)..., ("done", the /v1/ask
response); these functions only format. Once the headers are sent a failure can no longer
change the status, so it is reported in-band (`in_band`: the error body, counted and logged
by the Ingress) and the stream ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from rayrag.serve.openai_compat import ChatTurn, StopCutter
from rayrag.serve.schemas import chat_chunk

InBand = Callable[[Exception], dict[str, Any]]


def sse(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def citations_meta(rid: str, cited: Any) -> dict[str, Any]:
    """The `meta` event: the request id and the passages the answer may cite, by marker (the
    caller's own readable passages, as stored: redacted at ingest)."""
    return {
        "request_id": rid,
        "citations": [
            {
                "marker": i,
                "chunk_id": p.chunk_id,
                "doc_id": p.doc_id,
                "title": p.title,
                "score": p.score,
                "text": p.text,
                "page": p.page,
                "section": p.section,
            }
            for i, p in enumerate(cited, 1)
        ],
    }


async def ask_events(stream: AsyncIterator[tuple[str, Any]], in_band: InBand) -> AsyncIterator[str]:
    """`event: meta|delta|done` with JSON data; `event: error` on a failure."""
    try:
        async for kind, payload in stream:
            data = {"text": payload} if kind == "delta" else payload
            yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
    except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band
        yield f"event: error\ndata: {json.dumps(in_band(exc))}\n\n"


async def chat_events(
    stream: AsyncIterator[tuple[str, Any]], turn: ChatTurn, model: str, rid: str, in_band: InBand
) -> AsyncIterator[str]:
    """OpenAI's chunks, one `model` value throughout: the role first (with the rewritten
    question under `rayrag`), the text cut at a stop string, the finish reason, then with
    `stream_options.include_usage` a last chunk with no choices and the usage; `[DONE]`."""
    created = int(time.time())
    cutter = StopCutter(turn.stops)

    def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return chat_chunk(rid, model, created, delta, reason)

    def data(body: dict[str, Any]) -> str:
        return f"data: {json.dumps(body)}\n\n"

    try:
        async for kind, payload in stream:
            if kind == "meta":
                first = chunk({"role": "assistant", "content": ""})
                yield data(
                    {**first, "rayrag": {"question": turn.question if turn.rewritten else None}}
                )
            elif kind == "delta":
                if piece := cutter.feed(payload):
                    yield data(chunk({"content": piece}))
            else:
                if held := cutter.flush():
                    yield data(chunk({"content": held}))
                reason = "stop" if cutter.done else payload["finish_reason"]
                yield data(
                    {**chunk({}, reason), "rayrag": {"model_version": payload["model_version"]}}
                )
                if turn.include_usage:
                    yield data({**chunk({}), "choices": [], "usage": payload["usage"]})
        yield "data: [DONE]\n\n"
    except Exception as exc:  # noqa: BLE001
        yield data(in_band(exc))
