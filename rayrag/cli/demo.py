"""`rayrag demo`: the whole pipeline, as far as it exists, on the bundled demo corpus.

Generates the demo corpus into DIR/data, ingests it into DIR/bundle (MLflow in
DIR/mlflow.db unless MLFLOW_TRACKING_URI is set), trains the small MoE generator of the demo
config into DIR/model (what `rayrag train` runs: LM on the chunks, then reader fine-tuning on
questions generated from the knowledge graph; a checkpoint already there whose
training.json has the same config hash is reused), then answers sample one-hop and two-hop
questions: the top passages (dense vs hybrid) with scores, titles and KG facts, and the
generated answer (asked over HTTP of the Ray Serve graph) with its citations next to the
gold answer. The model is a version in MLflow's model registry (`rayrag-generator`, the first
one `champion`). Last, `rayrag eval` in-process on every demo question (or the first
`n_eval`): retrieval recall and MRR, SQuAD exact match and F1, groundedness, citation
precision, KG validation, PII leaks of the planted canaries, latency, each per slice (hops,
department, region, doc type) with gaps flagged; one MLflow run. The demo QA file is not
trained on, but the reader's training questions are generated from the graph's triples, and
a one-hop demo question can be worded like one. Then `rayrag tune --smoke`
(rayrag/configs/tune.yaml): 8 Ray Tune trials over chunk size, top-k and LoRA rank on the champion,
bundles cached in DIR/tune/bundles, the best config in DIR/tune/sweep-<time>/best.yaml, a winning
adapter registered as `challenger` (`tune=False` skips it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from rayrag.cli.eval import print_answer_table
from rayrag.config import RAGConfig
from rayrag.data.demo_corpus import generate_demo_corpus
from rayrag.data.readers import read_qa
from rayrag.errors import DataError
from rayrag.evaluation.answer_eval import evaluate_answers
from rayrag.evaluation.qa_metrics import exact_match as exact_match_score
from rayrag.pipelines.ingest import ingest
from rayrag.pipelines.train import train
from rayrag.retrieval.hybrid import HybridRetriever
from rayrag.serve.demo_env import ensure_demo_secrets, write_demo_env
from rayrag.tracking.tracker import Tracker, default_tracking_uri
from rayrag.training.report import SUMMARY_FILE
from rayrag.types import Principal


def _trained_model(
    out: Path, bundle_dir: Path, config: RAGConfig, tracker: Tracker, qa_path: Path | None = None
) -> dict:
    """DIR/model: reused when its training.json was written with the same training-relevant
    config (`RAGConfig.training_hash`: serving and retrieval settings do not count), else
    trained."""
    model_dir = out / "model"
    summary_file = model_dir / SUMMARY_FILE
    if summary_file.is_file() and (model_dir / "model.safetensors").is_file():
        try:
            previous = json.loads(summary_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = {}
        if previous.get("training_hash") == config.training_hash:
            print(
                f"[rayrag demo] reusing the trained model in {model_dir} (same training config, "
                f"hash {config.training_hash[:12]}); delete it to retrain",
                file=sys.stderr,
            )
            return {**previous, "reused": True}
    t = config.train
    print(
        f"[rayrag demo] training the generator ({t.lm_steps} LM + {t.reader_steps} reader steps, "
        f"~5 min on 2 CPU cores) -> {model_dir}",
        file=sys.stderr,
    )
    # The demo QA file is only read, for the exact-match learning curve; training questions
    # are generated from the bundle.
    result = train(config, model_dir, bundle=bundle_dir, tracker=tracker, curve_qa=qa_path)
    return {**result.summary, "reused": False}


def _training_figures(summary: dict) -> dict:
    phases = {
        name: {
            key: phase.get(key)
            for key in ("steps", "val_loss_start", "val_loss", "train_loss", "seconds")
        }
        for name, phase in summary.get("phases", {}).items()
    }
    return {
        "phases": phases,
        "seconds": summary.get("seconds"),
        "reused": summary.get("reused", False),
        "reader_source": summary.get("reader_source"),
        "mlflow_run_id": summary.get("mlflow_run_id"),
        "curve": summary.get("curve", []),
    }


def _registered(model_dir: Path, tracker: Tracker) -> Any:
    """The registry version holding this checkpoint (`rayrag train` registered it; a model the
    demo reused from an earlier run with another store is registered now)."""
    from rayrag.tracking.model_registry import ModelRegistry, model_digest

    registry = ModelRegistry(tracker)
    digest = model_digest(model_dir)
    for version in registry.versions():
        if version.model_digest == digest:
            return version
    return registry.register(model_dir, tags={"registered_by": "rayrag demo"})


@contextlib.contextmanager
def served(out: Path, config: RAGConfig) -> Iterator[tuple[str, str]]:
    """The serve graph on a free loopback port with a fresh demo key: (url, key).

    Only the key's hash is written (DIR/api_keys.yaml); the event log and the escalation
    queue go to DIR too. Ray and Serve are shut down on exit."""
    import ray
    from ray import serve

    from rayrag.serve.app import build_app
    from rayrag.serve.auth import generate_key, key_entry

    key = generate_key()
    keys_file = out / "api_keys.yaml"
    keys_file.write_text(
        yaml.safe_dump(
            [key_entry(key, "demo", ["public", "hr", "finance", "legal"], "demo", "admin")]
        ),
        encoding="utf-8",
    )
    serve_config = config.with_overrides(
        [
            f"serve.keys_file={keys_file.resolve()}",
            f"serve.event_log={(out / 'events.jsonl').resolve()}",
            f"serve.escalation_queue={(out / 'escalations.jsonl').resolve()}",
        ]
    )
    config_path = out / "serve.yaml"
    config_path.write_text(serve_config.to_yaml(), encoding="utf-8")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(
            num_cpus=max(2, os.cpu_count() or 2),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            build_app(
                {
                    "config": str(config_path),
                    "bundle": str(out / "bundle"),
                    "model": str(out / "model"),
                }
            ),
            name="rayrag",
            route_prefix="/",
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 300
        while httpx.get(f"{url}/readyz", timeout=30).status_code != 200:
            if time.time() > deadline:
                raise DataError("the serve graph did not become ready within 300 s")
            time.sleep(1)
        print(f"[rayrag demo] serving on {url}", file=sys.stderr)
        yield url, key
    finally:
        serve.shutdown()
        if started_ray:
            ray.shutdown()


def _tuning(out: Path, corpus: Any, config: RAGConfig, tracker: Tracker) -> dict:
    """The smoke sweep of rayrag/configs/tune.yaml on the demo corpus,
    the demo's model as the base."""
    from datetime import datetime, timezone

    from rayrag.tune.spec import load_tune_spec, tune_configs_path
    from rayrag.tune.sweep import run_sweep

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    print(
        "\n[rayrag demo] tuning: rayrag tune --smoke (Ray Tune: TPE + ASHA over chunk_size, "
        "top_k, lora_rank; a few minutes) ...",
        file=sys.stderr,
    )
    summary = run_sweep(
        load_tune_spec(tune_configs_path(), smoke=True),
        out=out / "tune" / f"sweep-{stamp}",
        cache=out / "tune" / "bundles",
        corpus=corpus.corpus_path,
        dev=corpus.qa_path,
        base_model=str(out / "model"),
        overrides=[f"tracking.tracking_uri={uri}" for uri in [config.tracking.tracking_uri] if uri],
        tracker=tracker,
    )
    best = summary["best"] or {}
    print(
        f"[rayrag demo] tuning: {summary['trials']} trials ({summary['stopped_early']} stopped "
        f"early by ASHA); best {best.get('trial_id')} objective {best.get('objective')} vs default "
        f"{summary['default'].get('objective')} -> {summary['best_config']}",
        file=sys.stderr,
    )
    return {
        k: summary.get(k)
        for k in (
            "trials",
            "completed",
            "stopped_early",
            "errored",
            "mlflow_runs",
            "best",
            "default",
            "best_config",
            "challenger",
            "bundles",
            "seconds",
        )
    }


def run_demo(
    out: Path, config: RAGConfig, n_questions: int = 3, n_eval: int | None = None, tune: bool = True
) -> dict:
    out = Path(out)
    started = time.perf_counter()
    ensure_demo_secrets(config)
    data_dir, bundle_dir = out / "data", out / "bundle"
    corpus = generate_demo_corpus(data_dir, seed=config.seed)
    print(
        f"[rayrag demo] corpus: {corpus.documents} documents, {corpus.questions} questions "
        f"-> {data_dir}",
        file=sys.stderr,
    )
    if not config.tracking.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        config = config.with_overrides(
            [f"tracking.tracking_uri=sqlite:///{(out / 'mlflow.db').resolve()}"]
        )
    tracker = Tracker(config.tracking, artifact_root=out / "mlartifacts")
    result = ingest(corpus.corpus_path, bundle_dir, config, tracker=tracker)
    ingest_seconds = time.perf_counter() - started

    training = _training_figures(_trained_model(out, bundle_dir, config, tracker, corpus.qa_path))
    for name, phase in training["phases"].items():
        print(
            (
                f"[rayrag demo] {name} phase: val loss "
                f"{phase['val_loss_start']} -> {phase['val_loss']}"
            ),
            file=sys.stderr,
        )
    for point in training[
        "curve"
    ]:  # exact match on the demo QA while training (read, not trained on)
        print(
            f"[rayrag demo] step {point['step']}: exact match {point.get('curve/em')} (1-hop "
            f"{point.get('curve/em_hops_1')}, 2-hop {point.get('curve/em_hops_2')})",
            file=sys.stderr,
        )
    train_seconds = time.perf_counter() - started - ingest_seconds

    version = _registered(out / "model", tracker)
    print(
        f"[rayrag demo] model registry: {config.tracking.model_name} version {version.version} "
        f"[{','.join(version.aliases) or '-'}]",
        file=sys.stderr,
    )
    retriever = HybridRetriever(bundle_dir, config)
    everyone = Principal("demo", frozenset({"public", "hr", "finance", "legal"}))
    qa_pairs = read_qa(corpus.qa_path)
    by_hops = {hops: [q for q in qa_pairs if q.metadata.get("hops") == hops] for hops in (1, 2)}
    n_one_hop = (n_questions + 1) // 2
    questions = by_hops[1][:n_one_hop] + by_hops[2][: n_questions - n_one_hop]
    answers = []
    for qa in questions:
        print(f"\nQ: {qa.question}\n   gold answer: {qa.answers[0]}")
        for mode in ("dense", "hybrid"):
            evidence = retriever.retrieve(qa.question, everyone, mode=mode)
            print(f"  [{mode}]")
            for rank, p in enumerate(evidence.passages, 1):
                gold = "*" if p.doc_id in qa.supporting_ids else " "
                print(f"   {rank}.{gold}[{p.score:.3f}] {p.title or p.doc_id}")
    # The answers come from the Ray Serve graph over HTTP, as a client of `rayrag serve` gets them.
    print(
        "\n[rayrag demo] starting the serve graph (Ray Serve, six deployments) on 127.0.0.1 ...",
        file=sys.stderr,
    )
    with served(out, config) as (url, key):
        for qa in questions:
            response = httpx.post(
                f"{url}/v1/ask",
                json={"question": qa.question, "mode": "hybrid"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=300,
            )
            body = response.json()
            if response.status_code != 200:
                raise DataError(
                    "the served graph answered HTTP "
                    f"{response.status_code}: {body['error']['message']}"
                )
            print(f"\nQ (over HTTP, request {body['request_id'][:8]}): {qa.question}")
            print(
                f"  answer: {body['answer']!r}   (gold: {qa.answers[0]!r}; "
                f"{body['usage']['completion_tokens']} tokens, {body['timings_ms']['total']:.0f} "
                f"ms, confidence {body['confidence']:.2f}"
                f"{', escalated' if body['escalated'] else ''})"
            )
            print(
                "   cited: "
                + ", ".join(
                    f"[{c['marker']}] {c['title'] or c['doc_id']}" for c in body["citations"]
                )
            )
            for fact in body["facts"][:3]:
                print(
                    f"   fact: {fact['subject']} --{fact['relation']}--> {fact['object']}  "
                    f"({', '.join(fact['doc_ids'][:2])})"
                )
            cited_docs = {c["doc_id"] for c in body["citations"]}
            answers.append(
                {
                    "question_id": qa.id,
                    "question": qa.question,
                    "gold": qa.answers[0],
                    "answer": body["answer"],
                    "exact_match": bool(exact_match_score(body["answer"], qa.answers)),
                    "citations": [c["chunk_id"] for c in body["citations"]],
                    "gold_cited": sorted(cited_docs & set(qa.supporting_ids)),
                    "truncated": body["truncated"]["chunk_ids"],
                    "usage": body["usage"],
                    "validation": {
                        k: body["validation"].get(k)
                        for k in ("supported", "contradicted", "unknown")
                    },
                    "escalated": body["escalated"],
                    "request_id": body["request_id"],
                }
            )
    print("\n(* = a gold supporting document; hybrid = dense + knowledge-graph PageRank, fused)")
    print(
        f"\n[rayrag demo] evaluating on {n_eval or 'all'} questions (rayrag eval: retrieval, "
        "answers, groundedness, citations, KG validation, PII leaks, latency; per slice) ...",
        file=sys.stderr,
    )
    evaluation = evaluate_answers(
        corpus.qa_path,
        config,
        bundle=bundle_dir,
        model=out / "model",
        principal=everyone,
        canaries=None,
        tracker=tracker,
        limit=n_eval,
        mode="hybrid",
    )
    print_answer_table(evaluation)
    exact_match = {
        f"{hops}_hop": {
            "em": evaluation["slices"][f"hops={hops}"]["answer_em"],
            "questions": int(evaluation["slices"][f"hops={hops}"]["n"]),
        }
        for hops in (1, 2)
        if f"hops={hops}" in evaluation["slices"]
    }
    tuning = _tuning(out, corpus, config, tracker) if tune else None
    summary = {
        **result.summary(),
        "training": training,
        "model": str(out / "model"),
        "tuning": tuning,
        "model_version": evaluation["model_version"],
        "registry_version": version.version,
        "answers": answers,
        "exact_match": exact_match,
        "evaluation": {
            k: evaluation[k]
            for k in (
                "recall_at_5",
                "mrr",
                "answer_em",
                "answer_f1",
                "groundedness",
                "citation_precision",
                "pii_leak_rate",
                "p50_ms",
                "p99_ms",
                "run_id",
            )
        },
        "seconds": {
            "ingest": round(ingest_seconds, 1),
            "train": round(train_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
    }
    env_file = write_demo_env(out, config, default_tracking_uri(config.tracking))
    summary["env_file"] = str(env_file)
    print(
        f"\n[rayrag demo] next: source {env_file}   (demo-only secrets, this MLflow store, an API "
        "key as $RAYRAG_API_KEY)",
        file=sys.stderr,
    )
    print(
        "[rayrag demo] next: make serve   (the graph on "
        f"http://{config.serve.host}:{config.serve.port}; Ctrl-C stops it)",
        file=sys.stderr,
    )
    print(
        f"[rayrag demo] next: curl -s {config.serve.host}:{config.serve.port}/v1/ask -H "
        "\"Authorization: Bearer $RAYRAG_API_KEY\" -H 'Content-Type: application/json' -d "
        f'\'{{"question": "{questions[0].question}"}}\'',
        file=sys.stderr,
    )
    print(json.dumps(summary))
    return summary
