"""`rayrag ask`: one question through the AnswerPipeline in this process, as the server answers it.

Screen, redact, retrieve, read, guard: the answer printed is the Guard's (redacted,
validated, with its confidence), the same the Serve graph would return for the same key.
`--retrieval-only` stops after retrieval and prints the evidence.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from rayrag.cli.common import (
    ConfigOpt,
    GroupsOpt,
    ModeOpt,
    PrincipalOpt,
    SetOpt,
    _config,
    resolve_principal,
)
from rayrag.errors import ConfigError, DataError


def _print_facts(facts: Any) -> None:
    if facts:
        print("facts:")
    for f in facts:
        print(
            f"  - ({f.subject}) -[{f.relation}]-> ({f.object})  conf={f.confidence:.2f}  "
            f"docs={','.join(f.doc_ids)} chunks={','.join(f.chunk_ids)}"
        )


def print_evidence(evidence: Any) -> None:
    if not evidence.passages:
        print("no passages")
    for rank, p in enumerate(evidence.passages, 1):
        page = f" p. {p.page}" if p.page is not None else ""
        print(
            f"{rank:>2}. [{p.score:.4f}] {p.title or p.doc_id}{page}  "
            f"doc={p.doc_id} chunk={p.chunk_id}"
        )
        snippet = " ".join(p.text.split())
        print(f"    {snippet[:200]}{'...' if len(snippet) > 200 else ''}")
    _print_facts(evidence.facts)


def print_answer(response: Any) -> None:
    """The Guard's answer, its citations (`*` = cited in the text), facts and verdict."""
    print(response.answer or "(empty answer)")
    if response.refused:
        return
    truncated = response.truncated
    if truncated.chunk_ids or truncated.facts_dropped:
        print(
            "note: context truncated to fit the model's window: dropped "
            f"{len(truncated.chunk_ids)} lowest-ranked passage(s) "
            f"({', '.join(truncated.chunk_ids) or '-'}) and {truncated.facts_dropped} fact(s)"
        )
    print(
        "citations:"
        if response.citations
        else "citations: none (no passage fits or none retrieved)"
    )
    mentioned = set(response.cited_markers)
    for c in response.citations:
        flag = "*" if c.marker in mentioned else " "
        page = f" p. {c.page}" if c.page is not None else ""
        print(
            f" {flag}[{c.marker}] {c.title or c.doc_id}{page}  "
            f"doc={c.doc_id} chunk={c.chunk_id} score={c.score:.4f}"
        )
    _print_facts(response.facts)
    verdict = "escalated" if response.escalated else "ok"
    print(
        (
            f"guard: {verdict}  confidence {response.confidence:.2f}  "
            f"groundedness {response.groundedness:.2f}"
        )
        + (f"  ({', '.join(response.reasons)})" if response.reasons else "")
    )
    usage = response.usage
    print(
        f"model {response.model_version}  config {response.config_hash[:12]}  tokens: prompt "
        f"{usage.prompt_tokens}, completion {usage.completion_tokens} ({response.finish_reason})  "
        f"cost {usage.cost:.6f} {usage.currency}"
    )


def ask_command(
    question: Annotated[str, typer.Argument(help="The question.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Index bundle directory.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help=(
                "Generator checkpoint (from `rayrag train`) or "
                "models:/NAME@ALIAS; required unless --retrieval-only."
            ),
        ),
    ] = None,
    retrieval_only: Annotated[
        bool, typer.Option("--retrieval-only", help="Return evidence without generating.")
    ] = False,
    mode: ModeOpt = None,
    principal: PrincipalOpt = None,
    groups: GroupsOpt = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Passages to return.")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Answer a question from a bundle with a trained generator, checked by the Guard,
    citing the passages it read."""
    from rayrag.answering.pipeline import AnswerPipeline, LocalStages
    from rayrag.generator.prompt import served_prompt_label

    if not retrieval_only and not question.strip():
        raise DataError("question is empty")
    cfg = _config(config, overrides)
    remote = cfg.generator.backend == "openai"  # the endpoint generates: no checkpoint
    if not retrieval_only and model is None and not remote:
        raise ConfigError(
            "--model CKPT is required to generate an answer (or pass --retrieval-only, or "
            "--set generator.backend=openai)"
        )
    asker = resolve_principal(principal, groups)
    checkpoint = None
    if not retrieval_only and not remote:
        from rayrag.generator.prompt import pin_reader_prompt
        from rayrag.tracking.model_registry import model_prompt_tag, resolve_model

        if str(model).startswith("models:/"):  # a registry model: its pinned prompt is served
            cfg, _ = pin_reader_prompt(cfg, model_prompt_tag(model, cfg.tracking))
        checkpoint = resolve_model(model, cfg.tracking)
    stages = LocalStages(bundle, checkpoint, cfg, generate=not retrieval_only)
    pipeline = AnswerPipeline(
        cfg,
        stages,
        prompt_version=served_prompt_label(cfg),
    )
    if not retrieval_only:
        turn = pipeline.answer_sync(question, asker, mode=mode, top_k=top_k)
        if as_json:
            refused = {"passages": []} if turn.response.refused else {}
            print(json.dumps({"principal": asker.name, **turn.response.model_dump(), **refused}))
        else:
            print_answer(turn.response)
        return
    categories = pipeline.screen(question)
    if (
        categories is not None
    ):  # refused as the Serve ingress refuses: nothing retrieved or generated
        from rayrag.answering.pipeline import StageTimer

        response = pipeline.refusal(mode or cfg.retrieval.mode, categories, StageTimer()).response
        print(
            json.dumps({"principal": asker.name, **response.model_dump(), "passages": []})
            if as_json
            else response.answer
        )
        return
    _, evidence = pipeline.evidence_sync(question, asker, mode, top_k)
    safety = {
        "question_flagged": False,
        "categories": [],
        "flagged_chunks": evidence.flagged_chunks,
    }
    if as_json:
        print(
            json.dumps(
                {
                    "principal": asker.name,
                    "mode": mode or cfg.retrieval.mode,
                    "refused": False,
                    "passages": [asdict(p) for p in evidence.passages],
                    "facts": [asdict(f) for f in evidence.facts],
                    "safety": safety,
                }
            )
        )
        return
    print_evidence(evidence)
    if evidence.flagged_chunks:
        print(f"input safety: {evidence.flagged_chunks} retrieved chunk(s) withheld")
