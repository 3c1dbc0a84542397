"""`generator.backend: openai` in the serve graph, against a real OpenAI-compatible server.

Two rayrag applications in one Serve instance: `backend` (route /backend) is the graph with a
tiny trained MoE reader, whose `/v1/chat/completions` is OpenAI-compatible; `rag` (route /rag)
is the same graph with `generator.backend: openai` pointed at `/backend/v1`, so its Generator
deployment holds no model and asks the first application over HTTP. `rag` answers with
citations and its own Guard's report; once `backend` is deleted, `rag` answers 503 quickly.

Settings the backend app needs for this (said here, as the test sets them): its question is
`rag`'s whole user message (context + question), so `serve.max_question_chars=4000` lets it in,
and `generator.max_seq_len=1024` gives the tiny reader a window that holds it (it is trained on
255-token windows: its answers are noise, which is not what is tested). `rag` caps its prompt at
`generator.openai.max_prompt_chars=1500`.
"""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace

import httpx
import pytest
import yaml

from rayrag.config import resolve_config
from rayrag.serve.app import build_app
from rayrag.serve.auth import key_entry
from tests.serve.test_app import free_port, sse
from tests.tiny import TINY_MODEL, demo_slice

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ADMIN_KEY = "rr-test-admin-key-openai-0123456789"
KEY_ENV = "RAYRAG_TEST_GENERATOR_KEY"
# Set when this module is imported, before any fixture starts Ray: Serve replicas inherit the
# environment of the Ray this process starts, so `rag`'s Generator reads its key from there as a
# deployment reads it from its node's environment (never from the config).
os.environ.setdefault(KEY_ENV, "rr-test-generator-key-0123456789")


@pytest.fixture(scope="module")
def stack(ray_local, demo_corpus, tmp_path_factory):
    from rayrag.pipelines.ingest import ingest
    from rayrag.pipelines.train import train

    root = tmp_path_factory.mktemp("openai-backend")
    corpus = demo_slice(demo_corpus, root, n_questions=2)
    keys_file = root / "api_keys.yaml"
    keys_file.write_text(
        yaml.safe_dump(
            [
                key_entry(ADMIN_KEY, "admin", ["public", "hr", "finance", "legal"], "ops", "admin"),
                # the key `rag`'s Generator sends: a user of the backend app like any other
                key_entry(os.environ[KEY_ENV], "rag-generator", ["public"], "rag", "user"),
            ]
        )
    )
    port = free_port()
    common = [
        f"serve.keys_file={keys_file}",
        "tracking.enabled=false",
        "serve.stage_num_cpus=0.1",
        f"serve.escalation_queue={root / 'escalations.jsonl'}",
        "serve.request_timeout_s=120",
        *TINY_MODEL,
        "generator.max_seq_len=1024",
    ]
    backend = resolve_config(
        "demo",
        [
            *common,
            "serve.generator_num_cpus=0.3",
            f"serve.event_log={root / 'backend-events.jsonl'}",
            "serve.max_question_chars=4000",
        ],
    )
    rag = resolve_config(
        "demo",
        [
            *common,
            "serve.generator_num_cpus=0.1",  # it only waits on HTTP
            f"serve.event_log={root / 'rag-events.jsonl'}",
            "generator.backend=openai",
            f"generator.openai.base_url=http://127.0.0.1:{port}/backend/v1",
            "generator.openai.model=rayrag-backend",  # any id: rayrag serves one model
            f"generator.openai.api_key_env={KEY_ENV}",
            "generator.openai.timeout_s=60",
            "generator.openai.max_retries=1",
            "generator.openai.backoff_s=0.1",
            "generator.openai.max_prompt_chars=1500",
        ],
    )
    (root / "backend.yaml").write_text(backend.to_yaml())
    (root / "rag.yaml").write_text(rag.to_yaml())
    ingest(root / "corpus.jsonl", root / "bundle", backend, progress=lambda *_: None)
    train(backend, root / "model", bundle=root / "bundle", progress=False)
    return SimpleNamespace(root=root, port=port, questions=corpus.questions, rag=rag)


@pytest.fixture(scope="module")
def served(stack):
    from ray import serve

    root = stack.root
    serve.start(http_options={"host": "127.0.0.1", "port": stack.port})
    for name, config in (("backend", "backend.yaml"), ("rag", "rag.yaml")):
        args = {"config": str(root / config), "bundle": str(root / "bundle")}
        serve.run(
            build_app({**args, "model": str(root / "model")}), name=name, route_prefix=f"/{name}"
        )
    url = f"http://127.0.0.1:{stack.port}"
    for name in ("backend", "rag"):
        ready = httpx.get(f"{url}/{name}/readyz", timeout=30)
        assert ready.status_code == 200, (name, ready.text)
    yield url
    serve.shutdown()


def ask(url: str, question: str, **extra) -> httpx.Response:
    return httpx.post(
        f"{url}/rag/v1/ask",
        json={"question": question, **extra},
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Cache-Control": "no-cache"},
        timeout=180,
    )


def test_the_openai_backend_answers_with_citations_and_the_guards_report(served, stack):
    ready = httpx.get(f"{served}/rag/readyz", timeout=30).json()
    assert ready["ready"] and ready["stages"]["generator"] == {
        "model_version": "openai:rayrag-backend",
        "backend": "openai",
        "endpoint": "ok",
    }
    response = ask(served, stack.questions[0]["question"])
    assert response.status_code == 200, response.text
    body = response.json()
    # The answer names the model the backend graph said answered: its served model id
    # (serve.model_name, what /v1/models lists), not a name this app's config made up.
    assert body["model_version"] == "openai:rayrag"
    # and the prompt it names is the chat prompt that left, not the registry's reader template
    from rayrag.generator.openai_backend import chat_prompt_label

    assert body["prompt_version"] == chat_prompt_label()
    assert body["prompt_version"].startswith("rayrag-openai-chat/")
    assert body["citations"] and {"marker", "chunk_id", "doc_id"} <= set(body["citations"][0])
    assert body["citations"][0]["marker"] == 1
    # the Guard ran on it, without a model probability
    assert body["validation"]["checked"] is True and 0 <= body["groundedness"] <= 1
    assert 0 <= body["confidence"] <= 1 and isinstance(body["reasons"], list)
    assert body["routing"]["expert_share"] == []  # no experts in this process
    # priced from the backend's reported usage
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["cost"] > 0
    assert {"generate", "guard", "total"} <= set(body["timings_ms"])
    # streamed through the Generator deployment's SSE reader
    streamed = ask(served, stack.questions[1]["question"], stream=True)
    events = sse(streamed.text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "meta" and kinds[-1] == "done" and "error" not in kinds, streamed.text
    meta, done = json.loads(events[0][1]), json.loads(events[-1][1])
    assert meta["citations"] and [c["chunk_id"] for c in meta["citations"]] == [
        c["chunk_id"] for c in done["citations"]
    ]
    assert done["model_version"].startswith("openai:") and "confidence" in done


def test_with_the_backend_gone_the_graph_answers_503_quickly(served, stack):
    from ray import serve

    serve.delete("backend")
    started = time.perf_counter()
    response = ask(served, stack.questions[0]["question"])
    elapsed = time.perf_counter() - started
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "unavailable" and "generator backend" in error["message"]
    assert elapsed < 10, elapsed
    # and the graph says it is not ready, naming why, without waiting on a retry
    started = time.perf_counter()
    ready = httpx.get(f"{served}/rag/readyz", timeout=30)
    assert ready.status_code == 503 and not ready.json()["ready"]
    assert ready.json()["stages"]["generator"]["endpoint"] == "http_404"  # Serve: no such app
    assert time.perf_counter() - started < 5
