"""Bench: the OpenAI-compatible generator backend's own cost per request.

`rayrag bench openai [--quick] --json`. What `generator.backend: openai` adds to a request is
everything between the evidence and the endpoint: building the messages (passages numbered,
dropped to the budget), the JSON body, the retry loop, parsing the chat completion and making
the `ReaderResult` (citations, cited markers, usage). Competitors, in one process against one
loopback server (stdlib `http.server` in a thread answering at once, so the endpoint's own time
is as small as it gets and the difference is ours), alternating over rounds after a warm-up,
median seconds per round:

    direct          httpx.Client.post of a prebuilt body to {base_url}/chat/completions and
                    json.loads of the reply: the least any caller does
    backend         `OpenAIReader.answer(question, evidence)`: the same request, built from the
                    evidence, and its `ReaderResult`
    direct_stream   the same as `direct`, streamed: SSE lines read until `data: [DONE]`
    backend_stream  `OpenAIReader.answer(..., stream=True)`, read to its result

Both sides of a pair share one keep-alive client setting (httpx.Client, the same timeout) and
send the same bytes (`same_body`), and the backend's answer is the server's text (`same_text`).
Ratios: backend_vs_direct (and _stream), > 1 is the backend's overhead; `overhead_ms` per
request is the difference of the medians.
"""

from __future__ import annotations

import json
import statistics
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from rayrag.bench import alternate
from rayrag.config import RAGConfig
from rayrag.types import Evidence, Fact, Passage

FULL = {"requests": 200, "rounds": 7}
QUICK = {"requests": 20, "rounds": 3}
ANSWER = "Velora Systems acquired Brightwater Labs in 2021 [1]."
QUESTION = "Who acquired Brightwater Labs?"


def evidence(n_passages: int = 5, chars: int = 600) -> Evidence:
    """Five ranked passages of about `chars` characters and three relation facts."""
    sentence = "Velora Systems acquired Brightwater Labs in 2021 after a year of talks. "
    text = (sentence * (chars // len(sentence) + 1))[:chars]
    passages = tuple(
        Passage(f"d{i}#0", f"d{i}", text, 1.0 - i / 10, f"Title {i}") for i in range(n_passages)
    )
    facts = tuple(
        Fact("Velora Systems", "acquired", f"Company {i}", 0.9, (f"d{i}#0",), (f"d{i}",))
        for i in range(3)
    )
    return Evidence(passages=passages, facts=facts)


class LoopbackServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 that answers every chat completion with
    ANSWER at once (JSON, or SSE chunks word by word when the request streams); keeps
    connections alive (HTTP/1.1) and counts requests and body bytes."""

    def __init__(self) -> None:
        self.requests = 0
        self.bodies: list[bytes] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as servers do: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests += 1
                if len(server.bodies) < 4:
                    server.bodies.append(raw)
                if json.loads(raw).get("stream"):
                    self._stream()
                else:
                    self._json()

            def _json(self) -> None:
                body = json.dumps(completion()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for event in stream_events():
                    data = f"data: {event}\n\n".encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a kept-alive connection reset at shutdown is not news


def completion() -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 900, "completion_tokens": 12, "total_tokens": 912},
    }


def stream_events() -> list[str]:
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0}
    head["model"] = "bench"
    words = ANSWER.split(" ")
    events = [
        {**head, "choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w}}]}
        for i, w in enumerate(words)
    ]
    events.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = {"prompt_tokens": 900, "completion_tokens": 12, "total_tokens": 912}
    events.append({**head, "choices": [], "usage": usage})
    return [json.dumps(e) for e in events] + ["[DONE]"]


def run(quick: bool = False) -> dict[str, Any]:
    size = QUICK if quick else FULL
    n, rounds = size["requests"], size["rounds"]
    server = LoopbackServer()
    config = RAGConfig().with_overrides(
        [
            "generator.backend=openai",
            f"generator.openai.base_url={server.url}",
            "generator.openai.model=bench",
            "generator.openai.api_key_env=''",
        ]
    )
    from rayrag.generator.openai_backend import OpenAIReader

    reader = OpenAIReader(config)
    facts = evidence()
    prompt = reader.build(QUESTION, facts)
    body, stream_body = reader.payload(prompt, None, False), reader.payload(prompt, None, True)
    direct = httpx.Client(timeout=httpx.Timeout(config.generator.openai.timeout_s))
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    endpoint = reader.endpoint
    texts: dict[str, str] = {}

    def direct_once() -> str:
        response = direct.post(endpoint, content=body, headers=headers)
        return json.loads(response.content)["choices"][0]["message"]["content"]

    def direct_stream_once() -> str:
        pieces = []
        with direct.stream("POST", endpoint, content=stream_body, headers=headers) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                for choice in json.loads(data).get("choices") or []:
                    pieces.append((choice.get("delta") or {}).get("content") or "")
        return "".join(pieces)

    def backend_once() -> str:
        return reader.answer(QUESTION, facts).answer.text

    def backend_stream_once() -> str:
        stream = reader.answer(QUESTION, facts, stream=True)
        for _ in stream:
            pass
        return stream.result.answer.text

    singles = {
        "direct": direct_once,
        "backend": backend_once,
        "direct_stream": direct_stream_once,
        "backend_stream": backend_stream_once,
    }
    try:
        for name, once in singles.items():  # warm-up: connections open, code paths loaded
            texts[name] = once()
        server.bodies.clear()
        for once in (direct_once, backend_once, direct_stream_once, backend_stream_once):
            once()
        bodies = list(server.bodies)
        competitors = {name: _repeat(once, n) for name, once in singles.items()}
        started = server.requests
        seconds = alternate(competitors, rounds)
        served = server.requests - started
    finally:
        direct.close()
        reader.close()
        server.close()
    per_request_ms = {
        name: round(statistics.median(values) / n * 1000, 4) for name, values in seconds.items()
    }
    return {
        "bench": "openai",
        "quick": quick,
        "requests_per_round": n,
        "rounds": rounds,
        "passages": len(facts.passages),
        "prompt_chars": prompt.chars,
        "body_bytes": len(body),
        "requests_served": served,
        "same_body": bodies[0] == bodies[1] and bodies[2] == bodies[3],
        "same_text": len(set(texts.values())) == 1 and texts["direct"] == ANSWER,
        "per_request_ms": per_request_ms,
        "overhead_ms": {
            "json": round(per_request_ms["backend"] - per_request_ms["direct"], 4),
            "stream": round(per_request_ms["backend_stream"] - per_request_ms["direct_stream"], 4),
        },
        "ratios": {
            "backend_vs_direct": round(per_request_ms["backend"] / per_request_ms["direct"], 3),
            "backend_vs_direct_stream": round(
                per_request_ms["backend_stream"] / per_request_ms["direct_stream"], 3
            ),
        },
    }


def _repeat(once: Any, n: int) -> Any:
    def many() -> None:
        for _ in range(n):
            once()

    return many
