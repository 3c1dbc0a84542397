"""`rayrag demo`: the whole pipeline, as far as it exists, on the bundled demo corpus.

Generates the demo corpus into DIR/data, ingests it into DIR/bundle (MLflow in
DIR/mlflow.db unless MLFLOW_TRACKING_URI is set), then answers three sample two-hop questions
with the top passages (dense vs hybrid), their scores, titles and supporting KG facts. Later stages (generation, serving, tuning)
extend this same command.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rayrag.config import RAGConfig, TrackingConfig
from rayrag.data.demo_corpus import generate_demo_corpus
from rayrag.data.readers import read_qa
from rayrag.governance.tracking import Tracker
from rayrag.pipelines.ingest import ingest
from rayrag.retrieval.hybrid import HybridRetriever
from rayrag.types import Principal

# Demo-only secrets: a real deployment sets these from its secret store. Printed as a
# warning so nobody mistakes them for a production setup.
_DEMO_SECRETS = {"RAYRAG_HMAC_KEY": "rayrag-demo-hmac-key-not-for-production",
                 "RAYRAG_ENCRYPTION_KEY": "rayrag-demo-key-0123456789abcdef"[:32]}


def _ensure_demo_secrets(config: RAGConfig) -> None:
    redaction = config.governance.redaction
    for env_name, default_name in ((redaction.hmac_key_env, "RAYRAG_HMAC_KEY"),
                                   (redaction.encryption_key_env, "RAYRAG_ENCRYPTION_KEY")):
        if not os.environ.get(env_name):
            os.environ[env_name] = _DEMO_SECRETS[default_name]
            print(f"[rayrag demo] warning: {env_name} not set; using a demo-only key", file=sys.stderr)


def run_demo(out: Path, config: RAGConfig, n_questions: int = 3) -> dict:
    out = Path(out)
    _ensure_demo_secrets(config)
    data_dir, bundle_dir = out / "data", out / "bundle"
    corpus = generate_demo_corpus(data_dir, seed=config.seed)
    print(f"[rayrag demo] corpus: {corpus.documents} documents, {corpus.questions} questions "
          f"-> {data_dir}", file=sys.stderr)
    tracking = config.tracking
    if not tracking.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        tracking = TrackingConfig(**{**tracking.model_dump(),
                                     "tracking_uri": f"sqlite:///{(out / 'mlflow.db').resolve()}"})
    tracker = Tracker(tracking, artifact_root=out / "mlartifacts")
    result = ingest(corpus.corpus_path, bundle_dir, config, tracker=tracker)

    retriever = HybridRetriever(bundle_dir, config)
    everyone = Principal("demo", frozenset({"public", "hr", "finance", "legal"}))
    questions = [q for q in read_qa(corpus.qa_path) if q.metadata.get("hops") == 2][:n_questions]
    for qa in questions:
        print(f"\nQ: {qa.question}\n   gold answer: {qa.answers[0]}")
        for mode in ("dense", "hybrid"):
            evidence = retriever.retrieve(qa.question, everyone, mode=mode)
            print(f"  [{mode}]")
            for rank, p in enumerate(evidence.passages, 1):
                gold = "*" if p.doc_id in qa.supporting_ids else " "
                print(f"   {rank}.{gold}[{p.score:.3f}] {p.title or p.doc_id}")
        for fact in evidence.facts[:3]:
            print(f"   fact: {fact.subject} --{fact.relation}--> {fact.object}  ({', '.join(fact.doc_ids[:2])})")
    print("\n(* = a gold supporting document; hybrid = dense + knowledge-graph PageRank, fused)")
    summary = result.summary()
    print(json.dumps(summary))
    return summary
