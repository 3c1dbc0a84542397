"""Generator backends side by side on the same retrieved evidence: quality, speed, cost.

`rayrag compare` answers one QA set with several generators and prints one table. The
AnswerPipeline's redact and retrieve steps run once per question and every backend (an endpoint
too) reads the very same redacted question and `Evidence`, so the rows differ only by the
generator (the controlled comparison of RAG papers such as Lewis et al. 2020 and ALCE, Gao et
al. 2023). Backends:

- `moe`: our `Reader` on the MoE checkpoint.
- `dense`: the same `Reader` on a dense checkpoint of equal *active* size: one expert whose
  FFN is as wide as the k experts a MoE token passes through (Switch Transformer's
  FLOP-matched baseline, Fedus et al. 2021); `dense_baseline_overrides` makes its config.
- `extractive`: no model. The answer is the evidence sentence sharing the most distinct
  content words with the question (lower-cased alphanumeric tokens, stopwords and question
  words removed); ties go to the higher-ranked passage, then the earlier sentence; with no
  overlap anywhere it is the first sentence of the top passage. It cites that passage's
  marker `[n]`, and its first token is its whole answer (TTFT = latency).
- `openai=URL`: any OpenAI-compatible endpoint, `POST URL/v1/chat/completions` (a URL that
  already ends in `/v1` is used as is) with the prompt `generator.backend: openai` sends
  (`generator.openai_backend`): the same redacted question and evidence as every other backend,
  passages numbered [n] and dropped lowest-ranked first to fit `generator.openai.max_prompt_chars`.
  Streamed, so the first content token is timed; usage from the final chunk
  (`stream_options.include_usage`), else estimated from the characters.

Scoring: answer EM and token F1 (SQuAD, `qa_metrics`) with citation markers removed from the
text; citation precision over the passages an answer marks `[n]` (undefined and left out of
the mean when it marks none). Timing: TTFT and latency include the question's shared retrieval
time, for every backend alike; tokens/s is completion tokens over generation seconds (for an
endpoint, its whole request time: a lower bound). Cost uses `serve.price_per_1k_*` for our
backends and an endpoint's reported usage alike; extractive costs 0. The order of the backends
rotates per question, so none always runs on a warm (or a busy) machine, and each backend
answers the first question once untimed before the timed pass (first-call allocation and
kernel probes are not speed). A question a backend refuses or fails (an endpoint's 4xx, or 5xx
after its retries) scores as no answer, is left out of the timings and counts in `failed`; the
warm-up failing, or one backend failing `MAX_FAILURES_IN_A_ROW` questions in a row, stops the
run with that error (the endpoint is down or misconfigured, not answering). One MLflow run in
the `compare` activity holds numbers only: never question or answer text.

    >>> result = compare_backends(["moe", "dense", "extractive"], Path("qa.jsonl"), cfg,
    ...                           bundle=Path("bundle"), model=Path("ckpt"),
    ...                           dense_model=Path("ckpt-dense"), principal=admin)
    >>> print(format_table(result["table"]))
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayrag.answering.pipeline import cost_of
from rayrag.config import RAGConfig
from rayrag.errors import ConfigError, GeneratorRejected, GeneratorUnavailable
from rayrag.evaluation.compare_backends import (  # noqa: F401 - re-exported: compare's public API
    DEFAULT_OPENAI_MODEL,
    MARKER_RE,
    Extract,
    OpenAIBackend,
    ReaderBackend,
    Reply,
    content_tokens,
    extractive_answer,
    extractive_backend,
    marked_docs,
    split_sentences,
)
from rayrag.evaluation.qa_metrics import citation_precision, exact_match, mean, percentile, token_f1
from rayrag.types import Evidence, Principal

BACKEND_NAMES = ("moe", "dense", "extractive", "openai")
MAX_FAILURES_IN_A_ROW = 3
TABLE_COLUMNS = (
    "answer_em",
    "answer_f1",
    "citation_precision",
    "ttft_p50_ms",
    "latency_p50_ms",
    "latency_p99_ms",
    "tokens_per_s",
    "cost_per_request",
    "questions",
    "failed",
)


@dataclass(frozen=True)
class Backend:
    """One competitor: a name from BACKEND_NAMES and, for `openai`, the endpoint's base URL."""

    name: str
    url: str | None = None


def parse_backend(item: str) -> Backend:
    name, _, url = item.strip().partition("=")
    name = name.strip()
    if name not in BACKEND_NAMES:
        raise ConfigError(
            f"unknown backend {name!r} (--backends); choose from moe, dense, extractive, openai=URL"
        )
    if name == "openai":
        if not re.match(r"^https?://[^\s/]+", url.strip()):
            raise ConfigError(
                "openai backend needs an http(s) URL: openai=http://host:port (--backends)"
            )
        return Backend("openai", url.strip().rstrip("/"))
    if url:
        raise ConfigError(f"backend {name!r} takes no =value (--backends)")
    return Backend(name)


def parse_backends(spec: str | Sequence[str]) -> list[Backend]:
    """`"moe,dense,extractive,openai=http://h:8000"`
    (or its items as a list) -> Backends, in order."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    backends = [parse_backend(item) for item in items if item.strip()]
    if not backends:
        raise ConfigError("--backends must name at least one backend, e.g. moe,dense,extractive")
    names = [b.name for b in backends]
    if len(set(names)) != len(names):
        raise ConfigError(f"each backend may appear once in --backends, got {','.join(names)}")
    return backends


# ---------------------------------------------------------------- the dense twin


def dense_baseline_overrides(config: RAGConfig) -> list[str]:
    """`--set` overrides that turn a MoE config into its dense twin of equal active size: one
    expert, always chosen, as wide as the k experts a token goes through (the router's own
    d_model weights aside). A shared expert stays as it is; every other setting is kept."""
    gen = config.generator
    return [
        "generator.n_experts=1",
        "generator.experts_per_token=1",
        f"generator.ffn_dim={gen.experts_per_token * gen.ffn_dim}",
    ]


def active_parameters(model: Any) -> int:
    """Parameters one token's forward touches: everything but the unchosen experts' share."""
    total = sum(p.numel() for p in model.parameters())
    config = model.config
    expert = sum(p.numel() for name, p in model.named_parameters() if ".experts." in f".{name}")
    return int(total - expert + expert * config.experts_per_token // config.n_experts)


# ---------------------------------------------------------------- the extractive baseline


def summarize(
    replies: Sequence[Reply],
    retrieval_s: Sequence[float],
    answers: Sequence[Sequence[str]],
    gold_docs: Sequence[Sequence[str]],
    config: RAGConfig,
    *,
    in_process: bool,
    priced: bool = True,
) -> dict[str, float | None]:
    """One backend's table row (and a few extras) from its replies, question by question."""
    shared = list(retrieval_s) if in_process else [0.0] * len(replies)
    texts = [MARKER_RE.sub(" ", r.text) for r in replies]
    costs = [
        cost_of(r.prompt_tokens, r.completion_tokens, config.serve) if priced else 0.0
        for r in replies
    ]
    completion = sum(r.completion_tokens for r in replies)
    generation_s = sum(r.latency_s for r in replies)
    # a failed question scores as no answer but is not timed: an error is not a latency
    timed = [(r, s) for r, s in zip(replies, shared, strict=True) if r.failed is None]
    latencies = [(r.latency_s + s) * 1000 for r, s in timed]
    return {
        "answer_em": mean(exact_match(t, a) for t, a in zip(texts, answers, strict=True)) or 0.0,
        "answer_f1": mean(token_f1(t, a) for t, a in zip(texts, answers, strict=True)) or 0.0,
        "citation_precision": mean(
            citation_precision(r.cited_doc_ids, g) if r.cited_doc_ids and g else None
            for r, g in zip(replies, gold_docs, strict=True)
        ),
        "ttft_p50_ms": percentile([(r.ttft_s + s) * 1000 for r, s in timed], 50),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p99_ms": percentile(latencies, 99),
        "tokens_per_s": completion / generation_s if completion and generation_s > 0 else None,
        "cost_per_request": sum(costs) / len(costs) if costs else 0.0,
        "questions": float(len(replies)),
        "answered": float(sum(bool(t.strip()) for t in texts)),
        "failed": float(sum(r.failed is not None for r in replies)),
        "cited_share": sum(r.cited_doc_ids is not None for r in replies) / max(len(replies), 1),
        "prompt_tokens": float(sum(r.prompt_tokens for r in replies)),
        "completion_tokens": float(completion),
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned text: one line per backend, TABLE_COLUMNS across; '-' for undefined."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if float(value).is_integer():
            return str(int(value))
        return (
            f"{value:.1f}"
            if abs(value) >= 100
            else f"{value:.4f}"
            if abs(value) >= 0.01
            else f"{value:.2e}"
        )

    header = ["backend", *TABLE_COLUMNS]
    lines = [[str(row["backend"]), *(cell(row.get(c)) for c in TABLE_COLUMNS)] for row in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            f"{v:<{w}}" if i == 0 else f"{v:>{w}}"
            for i, (v, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, *lines]
    )


def _redacted_url(url: str) -> str:
    """scheme://host[:port]/path: no userinfo, query or fragment in MLflow."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


# ---------------------------------------------------------------- the comparison


def compare_backends(
    backends: Sequence[str | Backend],
    dataset: Path,
    config: RAGConfig,
    *,
    bundle: Path,
    model: Path | None,
    dense_model: Path | None,
    principal: Principal,
    tracker: Any = None,
    limit: int | None = None,
    api_key: str | None = None,
    mode: str | None = None,
    top_k: int | None = None,
    openai_model: str = DEFAULT_OPENAI_MODEL,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Answer `dataset` with every backend on shared evidence; score, time, price; one MLflow run.

    Returns {"backends": {name: metrics}, "table": [{"backend", *TABLE_COLUMNS}], "questions",
    "run_id", "bundle_id", "dataset_digest", "mode", "skipped_no_answer"}. `api_key` defaults to
    $OPENAI_API_KEY, then $RAYRAG_API_KEY (sent as Bearer to an `openai=` backend only).
    """
    from rayrag.answering.pipeline import AnswerPipeline, LocalStages
    from rayrag.data.readers import read_qa
    from rayrag.tracking.tracker import Tracker

    chosen = [b if isinstance(b, Backend) else parse_backend(b) for b in backends]
    # duplicates, emptiness
    parse_backends([b.name if b.url is None else f"{b.name}={b.url}" for b in chosen])
    names = [b.name for b in chosen]
    if "moe" in names and model is None:
        raise ConfigError("--model CKPT is required when moe is among --backends")
    if "dense" in names and dense_model is None:
        raise ConfigError(
            "--dense-model CKPT is required when dense is among --backends "
            "(train one with `rayrag train --set` dense_baseline_overrides)"
        )
    if limit is not None and limit <= 0:
        raise ConfigError(f"limit must be > 0, got {limit} (--limit)")
    if not Path(dataset).is_file():
        raise ConfigError(f"dataset not found: {dataset} (--dataset)")
    mode = mode or config.retrieval.mode

    runners: dict[str, Callable[[str, Evidence], Reply]] = {}
    extras: dict[str, dict[str, Any]] = {name: {} for name in names}
    for backend in chosen:  # load the weights first: a bad checkpoint fails before retrieval
        if backend.name in ("moe", "dense"):
            from rayrag.generator.reader import Reader

            reader = Reader(model if backend.name == "moe" else dense_model, config)
            reader.warm_up()
            runners[backend.name] = ReaderBackend(reader)
            extras[backend.name] = {
                "active_params": float(active_parameters(reader.model)),
                "experts": float(reader.model.config.n_experts),
            }
        elif backend.name == "extractive":
            runners["extractive"] = extractive_backend
        else:
            key = api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("RAYRAG_API_KEY")
            runners["openai"] = OpenAIBackend(
                backend.url,
                config,
                key,
                model=openai_model,
                timeout_s=max(config.serve.request_timeout_s, 30.0),
            )

    pairs = read_qa(dataset)
    usable = [qa for qa in pairs if qa.answers]
    usable = usable[:limit] if limit is not None else usable
    # The evidence every backend reads: the AnswerPipeline's redact and retrieve
    # steps, as served (the question each backend reads is the redacted one).
    stages = LocalStages(Path(bundle), None, config, generate=False)
    pipeline = AnswerPipeline(config, stages)
    stages.warm_up()

    def evidence_for(question: str) -> tuple[str, Evidence]:
        redacted, evidence = pipeline.evidence_sync(question, principal, mode, top_k)
        return redacted.text, evidence

    def ask(name: str, question: str, redacted: str, evidence: Evidence) -> Reply:
        # Every backend, an endpoint too, reads the redacted question and the same evidence.
        return runners[name](redacted, evidence)

    in_a_row = dict.fromkeys(names, 0)

    def ask_or_count(name: str, question: str, redacted: str, evidence: Evidence) -> Reply:
        # One refused or failed question is that backend's miss, not the run's end; a backend
        # failing MAX_FAILURES_IN_A_ROW questions in a row is down, and the run stops.
        try:
            reply = ask(name, question, redacted, evidence)
        except (GeneratorRejected, GeneratorUnavailable) as exc:
            in_a_row[name] += 1
            if in_a_row[name] >= MAX_FAILURES_IN_A_ROW:
                raise type(exc)(
                    f"compare stopped: backend {name} failed {in_a_row[name]} questions in a "
                    f"row, the last with: {exc}"
                ) from None
            return Reply("", None, 0.0, 0.0, failed=type(exc).__name__)
        in_a_row[name] = 0
        return reply

    replies: dict[str, list[Reply]] = {name: [] for name in names}
    retrieval_s: list[float] = []
    try:
        # one untimed answer each: first-call costs (allocation, kernel probes) are not the
        # backend's speed
        if usable:
            redacted, evidence = evidence_for(usable[0].question)
            for name in names:
                ask(name, usable[0].question, redacted, evidence)
        for i, qa in enumerate(usable):
            started = time.perf_counter()
            redacted, evidence = evidence_for(qa.question)
            retrieval_s.append(time.perf_counter() - started)
            shift = i % len(names)  # rotate who goes first: no backend always meets a warm cache
            for name in names[shift:] + names[:shift]:
                replies[name].append(ask_or_count(name, qa.question, redacted, evidence))
            if progress is not None:
                progress(i + 1, len(usable))
    finally:
        for runner in runners.values():
            if isinstance(runner, OpenAIBackend):
                runner.close()

    answers = [qa.answers for qa in usable]
    gold_docs = [qa.supporting_ids for qa in usable]
    metrics = {
        name: {
            **summarize(
                replies[name],
                retrieval_s,
                answers,
                gold_docs,
                config,
                in_process=True,
                priced=name != "extractive",
            ),
            **extras[name],
        }
        for name in names
    }
    table = [{"backend": name, **{c: metrics[name][c] for c in TABLE_COLUMNS}} for name in names]
    digest = hashlib.sha256(Path(dataset).read_bytes()).hexdigest()
    bundle_id = stages.retriever.dense.bundle.bundle_id
    result: dict[str, Any] = {
        "backends": metrics,
        "table": table,
        "questions": len(usable),
        "mode": mode,
        "skipped_no_answer": len(pairs) - len([qa for qa in pairs if qa.answers]),
        "retrieval_p50_ms": percentile([s * 1000 for s in retrieval_s], 50),
        "bundle_id": bundle_id,
        "dataset_digest": digest,
    }

    tracker = tracker or Tracker(config.tracking)
    tags = {
        "backends": ",".join(names),
        "dataset_digest": digest,
        "bundle_id": bundle_id,
        "principal": principal.name,
        "mode": mode,
    }
    from rayrag.tracking.tracker import compose_run_name

    name = compose_run_name("compare", config, mode, "+".join(names))
    with tracker.start_run("compare", config, tags=tags, run_name=name) as run:
        params: dict[str, Any] = {
            "compare.backends": ",".join(names),
            "compare.questions": len(usable),
            "compare.limit": limit,
            "compare.mode": mode,
            "compare.top_k": top_k or config.retrieval.top_k,
        }
        if model is not None:
            params["compare.model"] = Path(model).name
        if dense_model is not None:
            params["compare.dense_model"] = Path(dense_model).name
        for backend in chosen:
            if backend.url:
                params["compare.openai_url"] = _redacted_url(backend.url)
                params["compare.openai_model"] = openai_model
        run.log_params(params)
        run.log_metrics(
            {
                f"{name}/{metric}": value
                for name, values in metrics.items()
                for metric, value in values.items()
                if value is not None
            }
        )
        run.log_metrics({"questions": float(len(usable))})
        run.log_dict({"columns": ["backend", *TABLE_COLUMNS], "rows": table}, "compare/table.json")
        result["run_id"] = run.run_id
    return result
