"""Bench: Presidio batch analysis vs one `AnalyzerEngine.analyze()` call per document.

`rayrag bench redaction [--quick] --json`. Ingest redacts every document, so
what matters is documents per second through the analyzer. Competitors, run in one process
on the same documents, alternating over several rounds after a warm-up, median times:

    per_doc           plain `AnalyzerEngine.analyze()` per document (`Redactor.analyze_per_doc`)
    batch             what ingest ships: spaCy `nlp.pipe` via Presidio's `BatchAnalyzerEngine`
                      (`Redactor.analyze_batch`), same engine, recognizers and entity list
    batch_no_parser   `batch` with spaCy's dependency parser switched off: an experiment, not
                      shipped, because the parser's sentence ends bound NER spans and without
                      it some detections change (`same_results_no_parser` says whether they did)

Both shipped competitors must find exactly the same spans (`same_results`).

`ray_actors` is the stage's scaling on Ray: the same documents, in batches, through 1 and then
2 warm Ray actors that each hold a `Redactor` and call `redact_batch` (what ingest's redaction
actors run), alternating over the rounds; `ratios.ray_2_vs_1_actors` is the docs/s ratio (2.0
= linear; on a 2-core machine the other jobs on the cores decide how close it gets). Actor
start-up is outside the timing: ingest pays it once per actor, not per batch. A document is
four consecutive records of a labelled PII set joined together (sentences with names,
e-mails, phones, cards, IBANs, SSNs, IP addresses, and some without PII). The records come from
`rayrag.data.pii_set.generate_pii_set` (seed 0: in every checkout, the same bytes) unless
$RAYRAG_DATA_DIR names a data folder holding presidio-research's labelled set
(pii/presidio_generated_large.json: `RAYRAG_DATA_DIR=../shared/data`, or tests/fixtures for
the subset the tests ship); `source` says which was read.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rayrag.config import RedactionConfig
from rayrag.data.pii_set import generate_pii_set
from rayrag.errors import ConfigError
from rayrag.governance.privacy.redaction import Redactor

PII_FILE = Path("pii") / "presidio_generated_large.json"
RECORDS_PER_DOC = 4


def pii_file() -> Path | None:
    """presidio-research's labelled set under $RAYRAG_DATA_DIR,
    or None when the variable is unset."""
    folder = os.environ.get("RAYRAG_DATA_DIR")
    if not folder:
        return None
    path = Path(folder) / PII_FILE
    if not path.is_file():
        raise ConfigError(
            f"RAYRAG_DATA_DIR={folder} has no {PII_FILE}; "
            "unset it to bench on the generated PII set"
        )
    return path


def load_documents(n_docs: int) -> tuple[list[str], str]:
    """`n_docs` documents of RECORDS_PER_DOC records each, and the records' source."""
    path = pii_file()
    if path is not None:
        records, source = json.loads(path.read_text(encoding="utf-8")), str(path)
    else:
        records, source = (
            generate_pii_set(n_docs * RECORDS_PER_DOC, seed=0),
            "generate_pii_set(seed=0)",
        )
    texts = [str(r["full_text"]) for r in records]
    docs = [" ".join(texts[i : i + RECORDS_PER_DOC]) for i in range(0, len(texts), RECORDS_PER_DOC)]
    while len(docs) < n_docs:  # a small labelled file: reuse documents rather than shrink the bench
        docs.extend(docs[: n_docs - len(docs)])
    return docs[:n_docs], source


def _detections(results: list[list[Any]]) -> list[list[tuple[str, int, int, float]]]:
    return [
        sorted((r.entity_type, r.start, r.end, round(r.score, 6)) for r in doc) for doc in results
    ]


class _RedactActor:
    """One Ray actor's Redactor, as in an ingest redaction actor."""

    def __init__(self) -> None:
        self.redactor = Redactor(RedactionConfig(operators={}, default_operator="replace"))
        self.redactor.warm_up()

    def redact(self, texts: list[str]) -> int:
        return sum(sum(r.counts.values()) for r in self.redactor.redact_batch(texts))


def ray_scaling(docs: list[str], rounds: int, actors: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Docs/s of `redact_batch` over warm Ray actors, one pool size after another per round."""
    import ray

    from rayrag.config import RAGConfig
    from rayrag.ray_runtime import ensure_ray

    ensure_ray(RAGConfig())
    cpus = ray.cluster_resources().get("CPU", 1.0)
    remote = ray.remote(num_cpus=min(1.0, cpus / max(actors)))(_RedactActor)
    pool = [remote.remote() for _ in range(max(actors))]
    ray.get([a.redact.remote(docs[:2]) for a in pool])  # models loaded, caches warm
    batch = max(1, len(docs) // 8)
    batches = [docs[i : i + batch] for i in range(0, len(docs), batch)]
    wall: dict[int, list[float]] = {n: [] for n in actors}
    spans: dict[int, int] = {}
    try:
        for round_index in range(rounds):
            order = actors if round_index % 2 == 0 else tuple(reversed(actors))
            for n in order:
                start = time.perf_counter()
                # Round-robin over n actors; each actor's calls queue in order.
                found = ray.get(
                    [pool[i % n].redact.remote(texts) for i, texts in enumerate(batches)]
                )
                wall[n].append(time.perf_counter() - start)
                spans[n] = sum(found)
    finally:
        for actor in pool:
            ray.kill(actor)
    docs_per_s = {str(n): round(len(docs) / statistics.median(wall[n]), 1) for n in actors}
    return {
        "batches": len(batches),
        "seconds": {str(n): [round(s, 3) for s in wall[n]] for n in actors},
        "docs_per_s": docs_per_s,
        "same_spans": len(set(spans.values())) == 1,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Time the competitors and return the bench record (ratios are what count)."""
    n_docs, rounds = (40, 5) if quick else (400, 5)
    docs, source = load_documents(n_docs)
    # Analysis does not depend on operators; replacing everything needs no keys.
    redactor = Redactor(RedactionConfig(operators={}, default_operator="replace"))
    redactor.warm_up()

    competitors: dict[str, Callable[[list[str]], list[list[Any]]]] = {
        "per_doc": redactor.analyze_per_doc,
        "batch": redactor.analyze_batch,
        "batch_no_parser": lambda texts: redactor.analyze_batch(texts, disable=("parser",)),
    }
    for analyze in competitors.values():  # warm-up: lazy recognizer loads, caches, allocator
        analyze(docs[:8])

    wall: dict[str, list[float]] = {name: [] for name in competitors}
    cpu: dict[str, list[float]] = {name: [] for name in competitors}
    outputs: dict[str, list[list[tuple[str, int, int, float]]]] = {}
    names = list(competitors)
    for round_index in range(rounds):
        # Rotate the order each round so no competitor always runs first on a warm cache.
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            found = competitors[name](docs)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            outputs.setdefault(name, _detections(found))

    scaling = ray_scaling(docs, rounds)
    seconds = {name: statistics.median(values) for name, values in wall.items()}
    cpu_seconds = {name: statistics.median(values) for name, values in cpu.items()}
    return {
        "bench": "redaction",
        "quick": quick,
        "source": source,
        "docs": len(docs),
        "chars": sum(len(d) for d in docs),
        "rounds": rounds,
        "batch_size": redactor.config.batch_size,
        "seconds": {name: round(s, 4) for name, s in seconds.items()},
        "cpu_seconds": {name: round(s, 4) for name, s in cpu_seconds.items()},
        "docs_per_s": {name: round(len(docs) / s, 1) for name, s in seconds.items()},
        "same_results": outputs["batch"] == outputs["per_doc"],
        "same_results_no_parser": outputs["batch_no_parser"] == outputs["per_doc"],
        "spans": sum(len(doc) for doc in outputs["per_doc"]),
        # All competitors are single-threaded, so process CPU time is their cost; unlike wall
        # time it does not swing when other jobs share the cores. Wall ratios are kept too.
        "ratios": {
            "batch_vs_per_doc": round(cpu_seconds["per_doc"] / cpu_seconds["batch"], 3),
            "batch_no_parser_vs_per_doc": round(
                cpu_seconds["per_doc"] / cpu_seconds["batch_no_parser"], 3
            ),
            "batch_vs_per_doc_wall": round(seconds["per_doc"] / seconds["batch"], 3),
            "ray_2_vs_1_actors": round(scaling["docs_per_s"]["2"] / scaling["docs_per_s"]["1"], 3),
        },
        "ray_actors": scaling,
    }


if __name__ == "__main__":
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv)))
