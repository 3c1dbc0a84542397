"""Tiny real stacks for end-to-end tests: a slice of the demo corpus and a model trained for a
few steps on it (seconds on a CPU), shared by the serve, eval and compare tests."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

TINY_MODEL = [
    "generator.vocab_size=512",
    "generator.d_model=32",
    "generator.n_layers=2",
    "generator.n_heads=2",
    "generator.n_kv_heads=1",
    "generator.ffn_dim=48",
    "generator.n_experts=4",
    "generator.adaptive_softmax_cutoffs=[128, 300]",
    "generator.copy_dim=16",
    "train.lm_steps=4",
    "train.reader_steps=6",
    "train.batch_size=2",
    "train.seq_len=255",
    "train.eval_every=100",
    "train.checkpoint_every=100",
    "train.max_graph_qa=40",
    "decoding.max_new_tokens=8",
]


def demo_slice(
    demo_corpus: Any, out: Path, n_questions: int, n_restricted: int = 0
) -> SimpleNamespace:
    """OUT/corpus.jsonl with the supporting documents of the first `n_questions` questions whose
    supports are all public, `n_restricted` restricted documents and four distractors.
    Returns docs (all, by id), questions (the chosen QA rows), restricted and kept (doc ids)."""
    docs = {d["id"]: d for d in map(json.loads, demo_corpus.corpus_path.read_text().splitlines())}
    questions = [json.loads(line) for line in demo_corpus.qa_path.read_text().splitlines()]
    public_q = [
        q for q in questions if all(docs[i]["acl"] == ["public"] for i in q["supporting_ids"])
    ][:n_questions]
    restricted = sorted(d for d, row in docs.items() if "public" not in row["acl"])[:n_restricted]
    kept = (
        {i for q in public_q for i in q["supporting_ids"]} | set(restricted) | set(sorted(docs)[:4])
    )
    (out / "corpus.jsonl").write_text("".join(json.dumps(docs[d]) + "\n" for d in sorted(kept)))
    return SimpleNamespace(docs=docs, questions=public_q, restricted=restricted, kept=kept)
