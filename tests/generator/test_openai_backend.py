"""rayrag.generator.openai_backend against a real loopback HTTP server written here.

The server (stdlib `http.server` in a thread) speaks OpenAI's chat-completions shapes: a
`chat.completion` body, or SSE `data:` chunks ending in a usage-only chunk and `data: [DONE]`.
Each request takes the next scripted action (a status, a delay, a dropped connection) and is
recorded as received, so a test can read the exact body that left the process."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from rayrag.answering.pipeline import AnswerPipeline, LocalStages
from rayrag.config import RAGConfig, RedactionConfig
from rayrag.errors import ConfigError, DataError, GeneratorRejected, GeneratorUnavailable
from rayrag.event_log import JsonEventFormatter
from rayrag.generator.openai_backend import SYSTEM_PROMPT, OpenAIReader, build_messages
from rayrag.serve.errors import classify_error
from rayrag.types import Evidence, Fact, Passage, Principal, RedactedQuestion

KEY_ENV = "RAYRAG_TEST_OPENAI_KEY"
KEY = "sk-test-0123456789abcdefSECRET"
QUESTION = "Who acquired Brightwater Labs?"
PASSAGES = (
    Passage("d2#0", "d2", "Velora Systems acquired Brightwater Labs in 2021.", 0.9, "Velora"),
    Passage("d1#0", "d1", "PERSON_3f9a0c1e founded Brightwater Labs in 2015.", 0.7, None),
    Passage("d9#3", "d9", "Brightwater Labs hired engineers in Lisbon.", 0.2, "Lisbon"),
)
FACTS = (
    Fact("Velora Systems", "acquired", "Brightwater Labs", 0.9, ("d2#0",), ("d2",)),
    Fact("Brightwater Labs", "co_occurs", "Lisbon", 0.5, ("d9#3",), ("d9",)),
)
EVIDENCE = Evidence(passages=PASSAGES, facts=FACTS)


# ---------------------------------------------------------------- the loopback server


class Backend:
    """A scripted OpenAI-compatible server: `script` holds one action per request (the last
    repeats); `received` the requests as they came (path, headers, parsed JSON body)."""

    def __init__(self) -> None:
        self.script: list[tuple] = [("ok", "Velora Systems [1].")]
        self.received: list[SimpleNamespace] = []
        self.lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # /v1/models, what a readiness probe reads
                if self.path != "/v1/models":
                    backend.send(self, 404, {"error": {"type": "not_found"}})
                    return
                backend.send(self, 200, {"object": "list", "data": [{"id": "served-model-7"}]})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with backend.lock:
                    backend.received.append(
                        SimpleNamespace(
                            path=self.path,
                            headers=dict(self.headers),
                            raw=raw,
                            body=json.loads(raw),
                        )
                    )
                    n = len(backend.received)
                    action = backend.script[min(n, len(backend.script)) - 1]
                backend.act(self, action)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def act(self, handler: BaseHTTPRequestHandler, action: tuple) -> None:
        kind = action[0]
        if kind == "drop":  # the connection closes without a response
            handler.close_connection = True
            return
        if kind == "sleep":
            time.sleep(action[1])
            action = action[2]
            kind = action[0]
        request = self.received[-1].body
        if kind == "status":  # an error body that echoes the request, as some servers do
            echo = json.dumps(request) + " " + str(handler.headers.get("Authorization"))
            headers = action[2] if len(action) > 2 else {}
            self.send(handler, action[1], {"error": {"type": "x", "message": echo}}, headers)
        elif kind == "ok" and not request.get("stream"):
            self.send(
                handler,
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "served-model-7",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " " + action[1] + "\n"},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {"prompt_tokens": 321, "completion_tokens": 7, "total_tokens": 328},
                },
            )
        elif kind == "ok":  # streamed: content in pieces, finish, usage chunk, [DONE]
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.end_headers()
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1}
            chunk["model"] = "served-model-7"
            events = [{"role": "assistant", "content": ""}]
            events += [{"content": piece} for piece in action[1].split(" ")]
            for i, delta in enumerate(events):
                if i > 1:
                    delta = {"content": " " + delta["content"]}
                body = {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                self.write_event(handler, body)
            done = {"index": 0, "delta": {}, "finish_reason": "stop"}
            self.write_event(handler, {**chunk, "choices": [done]})
            if len(action) < 3 or action[2] != "no-usage":
                usage = {"prompt_tokens": 321, "completion_tokens": 7, "total_tokens": 328}
                self.write_event(handler, {**chunk, "choices": [], "usage": usage})
            handler.wfile.write(b"data: [DONE]\n\n")
        elif kind == "inband":  # a stream that fails after its status was sent
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.end_headers()
            chunk = {"choices": [{"index": 0, "delta": {"content": "Velora"}}]}
            self.write_event(handler, chunk)
            self.write_event(handler, {"error": {"type": action[1], "message": "echo"}})
        elif kind == "garbage":
            self.send(handler, 200, {"hello": "world"})

    @staticmethod
    def send(
        handler: BaseHTTPRequestHandler, status: int, body: dict, headers: dict | None = None
    ) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def write_event(handler: BaseHTTPRequestHandler, body: dict) -> None:
        handler.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
        handler.wfile.flush()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend() -> Iterator[Backend]:
    server = Backend()
    yield server
    server.close()


@pytest.fixture
def key(monkeypatch) -> str:
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


@pytest.fixture
def events() -> Iterator[io.StringIO]:
    """What rayrag's loggers write (JSON events, DEBUG and up) while a test runs."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonEventFormatter())
    base = logging.getLogger("rayrag")
    level = base.level
    base.addHandler(handler)
    base.setLevel(logging.DEBUG)
    yield out
    base.removeHandler(handler)
    base.setLevel(level)


def config_for(url: str, *overrides: str) -> RAGConfig:
    return RAGConfig().with_overrides(
        [
            "generator.backend=openai",
            f"generator.openai.base_url={url}",
            "generator.openai.model=test-model",
            f"generator.openai.api_key_env={KEY_ENV}",
            "generator.openai.backoff_s=0.01",
            *overrides,
        ]
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once this socket is closed


# ---------------------------------------------------------------- the prompt


def test_the_prompt_numbers_the_passages_and_drops_the_lowest_ranked_first():
    full = build_messages(QUESTION, PASSAGES, FACTS[:1], 10_000)
    system, user = full.messages
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert user["content"] == (
        "context:\n[1] Velora: Velora Systems acquired Brightwater Labs in 2021."
        "\n[2] PERSON_3f9a0c1e founded Brightwater Labs in 2015."
        "\n[3] Lisbon: Brightwater Labs hired engineers in Lisbon."
        "\nfacts:\nVelora Systems acquired Brightwater Labs"
        "\n\nquestion: Who acquired Brightwater Labs?"
    )
    assert [c.marker for c in full.citations] == [1, 2, 3] and full.truncated == []
    budget = full.chars - len(PASSAGES[2].text)  # the third no longer fits
    cut = build_messages(QUESTION, PASSAGES, FACTS[:1], budget)
    assert [c.passage.chunk_id for c in cut.citations] == ["d2#0", "d1#0"]
    assert cut.truncated == ["d9#3"] and cut.chars <= budget and cut.facts_dropped == 0
    bare = build_messages(QUESTION, PASSAGES, FACTS[:1], len(SYSTEM_PROMPT) + 60)
    assert (
        bare.citations == [] and bare.facts_dropped == 1 and QUESTION in bare.messages[1]["content"]
    )
    with pytest.raises(DataError, match=r"^question does not fit the prompt: \d+ characters"):
        build_messages(QUESTION, PASSAGES, (), 100)  # the question is never cut


# ---------------------------------------------------------------- answers


def test_an_answer_carries_the_reader_contract_and_the_request_is_openais(backend, key):
    reader = OpenAIReader(config_for(backend.url))
    result = reader.answer(QUESTION, EVIDENCE)
    assert result.answer.text == "Velora Systems [1]."
    assert [p.chunk_id for p in result.answer.citations] == ["d2#0", "d1#0", "d9#3"]
    assert result.cited_markers == [1] and result.truncated_chunk_ids == []
    # only relation facts reach the prompt, as with the Reader
    assert [f.relation for f in result.answer.facts] == ["acquired"]
    assert result.usage() == {"prompt_tokens": 321, "completion_tokens": 7, "total_tokens": 328}
    assert result.answer_logprob is None and result.answer_probability is None
    assert result.finish_reason == "stop" and result.routing == []
    assert result.answer.model_version == "openai:served-model-7"
    (request,) = backend.received
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    body = request.body
    assert body["model"] == "test-model" and body["stream"] is False
    assert body["max_tokens"] == 256 and body["temperature"] == 0.0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "[1] Velora: Velora Systems acquired" in body["messages"][1]["content"]
    # a request's own cap, in the field the config names
    reader = OpenAIReader(
        config_for(backend.url, "generator.openai.token_limit_field=max_completion_tokens")
    )
    reader.answer(QUESTION, EVIDENCE, max_new_tokens=9)
    assert backend.received[-1].body["max_completion_tokens"] == 9
    assert "max_tokens" not in backend.received[-1].body


def test_streaming_yields_the_pieces_then_the_result_sync_and_async(backend, key):
    backend.script = [("ok", "Velora Systems acquired it [1].")]
    reader = OpenAIReader(config_for(backend.url))
    stream = reader.answer(QUESTION, EVIDENCE, stream=True)
    assert [p.chunk_id for p in stream.citations] == ["d2#0", "d1#0", "d9#3"]  # before any piece
    pieces = list(stream)
    assert "".join(pieces) == "Velora Systems acquired it [1]." and len(pieces) == 5
    assert stream.result.answer.text == "Velora Systems acquired it [1]."
    assert stream.result.usage()["prompt_tokens"] == 321 and stream.result.cited_markers == [1]
    body = backend.received[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}

    async def collect():
        items = [item async for item in reader.astream(QUESTION, EVIDENCE)]
        await reader.aclose()
        return items

    items = asyncio.run(collect())
    assert [p.chunk_id for p in items[0]] == ["d2#0", "d1#0", "d9#3"]  # the Generator's protocol
    assert "".join(items[1:-1]) == "Velora Systems acquired it [1]."
    assert items[-1].answer.text == "Velora Systems acquired it [1]."
    # without a usage chunk the tokens are estimated from the characters, never 0
    backend.script = [("ok", "Velora Systems [1].", "no-usage")]
    stream = reader.answer(QUESTION, EVIDENCE, stream=True)
    list(stream)
    assert stream.result.prompt_tokens > 0 and stream.result.completion_tokens == 5


def test_connect_errors_429_and_5xx_are_retried_with_backoff_then_succeed(backend, key, events):
    backend.script = [("drop",), ("status", 503), ("status", 429), ("ok", "Velora Systems [1].")]
    reader = OpenAIReader(config_for(backend.url, "generator.openai.max_retries=3"))
    started = time.perf_counter()
    result = reader.answer(QUESTION, EVIDENCE)
    assert result.answer.text == "Velora Systems [1]." and len(backend.received) == 4
    assert time.perf_counter() - started >= 0.01 + 0.02 + 0.04  # 0.01 * 2**(n-1)
    failures = [json.loads(line) for line in events.getvalue().splitlines()]
    failures = [e for e in failures if e["event"] == "generator_backend_attempt_failed"]
    assert [e["failure"] for e in failures] == ["connect", "http_503", "http_429"]
    assert {"attempt", "attempts", "ms", "bytes"} <= set(failures[0])
    # async: the same rule
    backend.script = [("status", 502), ("ok", "Velora Systems [1].")]
    backend.received.clear()
    result = asyncio.run(reader.aanswer(QUESTION, EVIDENCE))
    assert result.answer.text == "Velora Systems [1]." and len(backend.received) == 2


def test_the_readiness_probe_reads_models_once_and_labels_a_failure(backend, key):
    reader = OpenAIReader(config_for(backend.url, "generator.openai.max_retries=3"))
    assert asyncio.run(reader.aprobe()) == "ok"
    elsewhere = OpenAIReader(config_for(backend.url.removesuffix("/v1") + "/nothing/v1"))
    assert asyncio.run(elsewhere.aprobe()) == "http_404"
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    down = OpenAIReader(config_for(f"http://127.0.0.1:{closed}/v1"))
    assert asyncio.run(down.aprobe()) == "connect"
    assert backend.received == []  # a probe never posts a prompt


def test_retry_after_is_honoured_up_to_its_cap(backend, key):
    from rayrag.generator.openai_backend import retry_after_s

    backend.script = [("status", 429, {"Retry-After": "0.4"}), ("ok", "Velora Systems [1].")]
    reader = OpenAIReader(config_for(backend.url))
    started = time.perf_counter()
    assert reader.answer(QUESTION, EVIDENCE).answer.text == "Velora Systems [1]."
    assert time.perf_counter() - started >= 0.4  # not the 0.01 backoff
    # a server asking for an hour waits only max_retry_after_s
    backend.script = [("status", 503, {"Retry-After": "3600"}), ("ok", "Velora Systems [1].")]
    backend.received.clear()
    capped = OpenAIReader(config_for(backend.url, "generator.openai.max_retry_after_s=0.05"))
    started = time.perf_counter()
    capped.answer(QUESTION, EVIDENCE)
    assert time.perf_counter() - started < 2 and len(backend.received) == 2
    assert retry_after_s(None) == 0 and retry_after_s("soon") == 0 and retry_after_s("-3") == 0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # a date in the past
    assert (
        3590
        < retry_after_s(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3600)))
        <= 3600
    )


@pytest.mark.parametrize(
    ("status", "error", "http"),
    [
        (400, GeneratorRejected, 502),
        (401, GeneratorRejected, 502),
        (404, GeneratorUnavailable, 503),
    ],
)
def test_4xx_is_not_retried(backend, key, status, error, http):
    backend.script = [("status", status), ("ok", "never")]
    reader = OpenAIReader(config_for(backend.url, "generator.openai.max_retries=3"))
    with pytest.raises(error, match=f"HTTP {status}") as raised:
        reader.answer(QUESTION, EVIDENCE)
    assert len(backend.received) == 1
    assert "\n" not in str(raised.value) and classify_error(raised.value)[0] == http


def test_timeouts_are_retried_then_the_backend_is_unavailable(backend, key):
    backend.script = [("sleep", 1.0, ("ok", "late"))]
    reader = OpenAIReader(
        config_for(backend.url, "generator.openai.timeout_s=0.2", "generator.openai.max_retries=1")
    )
    started = time.perf_counter()
    with pytest.raises(GeneratorUnavailable, match=r"timeout \(the last of 2 attempts\)") as raised:
        reader.answer(QUESTION, EVIDENCE)
    assert time.perf_counter() - started < 0.9 and len(backend.received) == 2
    assert classify_error(raised.value) == (
        503,
        "unavailable",
        "the generator backend is unavailable; retry later",
    )


def test_a_backend_that_is_down_is_a_typed_error_quickly_sync_and_async(key):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    reader = OpenAIReader(config_for(url, "generator.openai.max_retries=2"))
    started = time.perf_counter()
    with pytest.raises(
        GeneratorUnavailable,
        match="^generator backend unavailable: connect \\(the last of 3 attempts\\)$",
    ):
        reader.answer(QUESTION, EVIDENCE)
    with pytest.raises(GeneratorUnavailable):
        list(reader.answer(QUESTION, EVIDENCE, stream=True))

    async def streamed():
        return [item async for item in reader.astream(QUESTION, EVIDENCE)]

    with pytest.raises(GeneratorUnavailable):
        asyncio.run(streamed())
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("kind", "error"),
    [("invalid_request", GeneratorRejected), ("server_error", GeneratorUnavailable)],
)
def test_an_error_reported_mid_stream_is_typed_by_its_kind(backend, key, kind, error):
    backend.script = [("inband", kind)]
    stream = OpenAIReader(config_for(backend.url)).answer(QUESTION, EVIDENCE, stream=True)
    with pytest.raises(error, match="mid-stream"):
        list(stream)
    assert len(backend.received) == 1  # a stream is not retried once it has begun


def test_a_body_that_is_not_a_chat_completion_is_rejected(backend, key):
    backend.script = [("garbage",)]
    with pytest.raises(GeneratorRejected, match="without a chat completion"):
        OpenAIReader(config_for(backend.url)).answer(QUESTION, EVIDENCE)


# ---------------------------------------------------------------- the key and privacy


def test_the_key_comes_from_the_named_variable_and_never_reaches_errors_or_logs(
    backend, key, events, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log through the root logger
    backend.script = [("status", 500), ("status", 401)]  # bodies that echo the Authorization
    reader = OpenAIReader(config_for(backend.url, "generator.openai.max_retries=1"))
    with pytest.raises(GeneratorRejected) as raised:
        reader.answer(QUESTION, EVIDENCE)
    assert backend.received[0].headers["Authorization"] == f"Bearer {KEY}"
    text = str(raised.value) + repr(raised.value.args) + events.getvalue() + caplog.text
    assert KEY not in text and "SECRET" not in text and "Brightwater" not in text
    assert raised.value.__cause__ is None and raised.value.__context__ is None  # no httpx text
    # unset: a one-line ConfigError that names the variable, never a value
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match=f"^generator.openai.api_key_env names \\${KEY_ENV}"):
        OpenAIReader(config_for(backend.url)).warm_up()
    # no variable named: no Authorization header at all (a local server)
    keyless = OpenAIReader(config_for(backend.url, "generator.openai.api_key_env=''"))
    backend.script = [("ok", "Velora Systems [1].")]
    keyless.answer(QUESTION, EVIDENCE)
    assert "Authorization" not in backend.received[-1].headers


class _PlantedStages:
    """The pipeline's steps with the real Presidio redactor, fixed evidence, the real OpenAI
    backend and a pass-through guard: what reaches the endpoint is what the pipeline sends."""

    def __init__(self, redactor, reader) -> None:
        self.redactor, self.reader = redactor, reader

    async def redact(self, question: str) -> RedactedQuestion:
        result = self.redactor.redact(question)
        return RedactedQuestion(text=result.text, counts=dict(result.counts))

    async def retrieve(self, question, principal, mode, top_k, timer) -> Evidence:
        return EVIDENCE

    async def read(self, question, evidence, max_new_tokens):
        return self.reader.answer(question, evidence, max_new_tokens=max_new_tokens)

    async def verify(self, question, result, evidence, principal):
        report = SimpleNamespace(
            text=result.answer.text,
            redactions={},
            validation={"checked": False, "supported": 0, "unknown": 0, "contradicted": 0},
            groundedness=0.5,
            confidence=0.5,
            escalated=False,
            reasons=[],
        )
        report.validation["claims"] = []
        return result, report


def test_pii_planted_in_a_question_never_reaches_the_backend_or_the_logs(
    backend, key, events, monkeypatch
):
    from rayrag.governance.privacy.redaction import Redactor

    monkeypatch.setenv("RAYRAG_HMAC_KEY", "openai-test-hmac-key-0123456789")
    redactor = Redactor(RedactionConfig())
    redactor.warm_up()
    planted = ["jane.doe@example.com", "078-05-1120", "4111 1111 1111 1111", "Jane Doe"]
    question = (
        f"Jane Doe (jane.doe@example.com, SSN 078-05-1120, card 4111 1111 1111 1111) asks: "
        f"{QUESTION}"
    )
    config = config_for(backend.url)
    stages = _PlantedStages(redactor, OpenAIReader(config))
    turn = AnswerPipeline(config, stages).answer_sync(question, Principal("ana", ("public",)))
    assert turn.response.answer == "Velora Systems [1]." and turn.response.redactions.question
    (request,) = backend.received
    sent = request.raw.decode()
    assert "Brightwater Labs" in sent  # the question and the passages did go
    for value in planted:
        assert value not in sent and value not in events.getvalue()
    # priced from the endpoint's usage
    assert turn.response.usage.prompt_tokens == 321 and turn.response.model_version.startswith(
        "openai:"
    )


# ---------------------------------------------------------------- wiring


def test_local_stages_pick_the_backend_from_the_config(backend, key, monkeypatch):
    """`rayrag ask` / `eval` in process: no checkpoint, the endpoint answers."""
    import rayrag.answering.guard as guard_module
    import rayrag.retrieval.hybrid as hybrid_module

    class Stub:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def warm_up(self, **kwargs) -> None:
            pass

    monkeypatch.setattr(hybrid_module, "HybridRetriever", Stub)
    monkeypatch.setattr(guard_module, "Guard", Stub)
    stages = LocalStages("bundle", None, config_for(backend.url))
    assert stages.generate
    stages.warm_up()
    assert isinstance(stages.reader, OpenAIReader)
    from rayrag.coroutines import run_sync

    result = run_sync(stages.read(QUESTION, EVIDENCE, None))
    assert result.answer.text == "Velora Systems [1]." and len(backend.received) == 1
    # evidence only, whatever the backend
    evidence_only = LocalStages("bundle", None, config_for(backend.url), generate=False)
    evidence_only.warm_up()
    assert evidence_only.reader is None
    # moe without a checkpoint stays evidence-only, as before
    assert not LocalStages("bundle", None, RAGConfig()).generate


def test_compare_sends_the_same_prompt_passages_included(backend):
    from rayrag.evaluation.compare_backends import OpenAIBackend

    runner = OpenAIBackend(backend.url.removesuffix("/v1"), RAGConfig(), api_key=KEY, model="m")
    reply = runner(QUESTION, EVIDENCE)
    runner.close()
    (request,) = backend.received
    assert request.path == "/v1/chat/completions" and request.body["model"] == "m"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert "[1] Velora: Velora Systems acquired" in request.body["messages"][1]["content"]
    assert reply.text == "Velora Systems [1]." and reply.cited_doc_ids == ("d2",)
    assert reply.prompt_tokens == 321 and 0 < reply.ttft_s <= reply.latency_s


def test_checkpoints_do_not_record_the_backend():
    import torch

    from rayrag.config import GeneratorConfig
    from rayrag.generator.checkpoint import mixtral_config_dict
    from rayrag.generator.model import MoETransformer

    cfg = GeneratorConfig(
        vocab_size=64, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=16, n_experts=2
    )
    cfg = cfg.model_copy(update={"experts_per_token": 1, "adaptive_softmax_cutoffs": ()})
    torch.manual_seed(0)
    saved = mixtral_config_dict(MoETransformer(cfg))["rayrag"]["generator"]
    assert "backend" not in saved and "openai" not in saved
