"""`rayrag compare`: generator backends side by side on the same evidence (evaluation/compare.py).

A typer command in the style of `rayrag.cli.main`'s; the lead registers it there:

    app.command("compare")(compare_command)

    rayrag compare --backends moe,dense,extractive --dataset data/qa.jsonl --bundle bundle/ \\
        --model ckpt/ --dense-model ckpt-dense/ --limit 50 --json
    rayrag compare --backends extractive,openai=http://127.0.0.1:8000 --dataset data/qa.jsonl \\
        --bundle bundle/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

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
from rayrag.errors import ConfigError


def _progress(done: int, total: int) -> None:
    print(
        f"\rcompare: {done}/{total} questions",
        end="\n" if done == total else "",
        file=sys.stderr,
        flush=True,
    )


def compare_command(
    backends: Annotated[
        str,
        typer.Option(
            "--backends",
            help=(
                "Comma-separated: moe, dense, extractive, openai=URL (an "
                "OpenAI-compatible endpoint; key from $OPENAI_API_KEY or $RAYRAG_API_KEY)."
            ),
        ),
    ],
    dataset: Annotated[
        Path,
        typer.Option(
            "--dataset", help="QA JSONL with answers (and supporting_ids for citation precision)."
        ),
    ],
    bundle: Annotated[
        Path,
        typer.Option(
            "--bundle",
            help=(
                "Index bundle: retrieval runs once per question, shared by the in-process backends."
            ),
        ),
    ],
    model: Annotated[
        Path | None, typer.Option("--model", help="MoE generator checkpoint (needed for moe).")
    ] = None,
    dense_model: Annotated[
        Path | None,
        typer.Option(
            "--dense-model", help="Dense checkpoint of equal active size (needed for dense)."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the first N questions.")
    ] = None,
    openai_model: Annotated[
        str, typer.Option("--openai-model", help="`model` sent to an openai= endpoint.")
    ] = "rayrag",
    mode: ModeOpt = None,
    top_k: Annotated[
        int | None,
        typer.Option("--top-k", help="Passages per question (default: retrieval.top_k)."),
    ] = None,
    principal: PrincipalOpt = None,
    groups: GroupsOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON line (no table).")] = False,
) -> None:
    """Compare generator backends on one QA set:
    EM, F1, citation precision, TTFT, latency, tokens/s, cost."""
    from rayrag.evaluation.compare import compare_backends, format_table, parse_backends

    chosen = parse_backends(backends)
    if not dataset.is_file():
        raise ConfigError(f"dataset not found: {dataset} (--dataset)")
    cfg = _config(config, overrides)
    asker = resolve_principal(principal, groups, default="admin")
    result = compare_backends(
        chosen,
        dataset,
        cfg,
        bundle=bundle,
        model=model,
        dense_model=dense_model,
        principal=asker,
        limit=limit,
        mode=mode,
        top_k=top_k,
        openai_model=openai_model,
        progress=_progress,
    )
    if not as_json:
        print(format_table(result["table"]))
    print(json.dumps(result))
