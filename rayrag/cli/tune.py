"""`rayrag tune`: a Ray Tune sweep over chunk size, top-k and LoRA rank (tune/sweep.py).

    rayrag tune --space rayrag/configs/tune.yaml --json
    rayrag tune --space rayrag/configs/tune.yaml --smoke  # >= 8 trials in a few minutes (CI)
    rayrag tune --space rayrag/configs/tune.yaml --num-samples 32 --base models:/rayrag-generator/3

Progress, the top trials and the sensitivity table go to stderr; the last stdout line is
one JSON object: trials, searched (knob names), mlflow_runs, best_config (path), best
(objective and knob values), default, challenger, bundles (built / reused / trial hits).
Registered in `rayrag.cli.main` as `app.command("tune")(tune_command)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rayrag.cli.common import SetOpt


def tune_command(
    space: Annotated[
        Path, typer.Option("--space", help="Search space YAML (rayrag/configs/tune.yaml).")
    ],
    smoke: Annotated[
        bool, typer.Option("--smoke", help="The space's `smoke:` sweep: a few minutes, for CI.")
    ] = False,
    num_samples: Annotated[
        int | None,
        typer.Option("--num-samples", help="Trials (TPE) or grid repeats; overrides the space."),
    ] = None,
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus",
            help="Corpus to build bundles from (default: the space's, else the demo corpus).",
        ),
    ] = None,
    dev: Annotated[
        Path | None,
        typer.Option("--dev", help="Dev QA JSONL (default: qa.jsonl beside the corpus)."),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help=(
                "Generator to fine-tune: a checkpoint dir or "
                "models:/NAME@ALIAS (default: the space's)."
            ),
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Sweep folder (default .rayrag/tune/sweep-<time>); must be new or empty."
        ),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Bundle cache (default: bundles/ beside the sweep folder)."),
    ] = None,
    overrides: SetOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Only the JSON summary on stdout.")
    ] = False,
) -> None:
    """Sweep chunking, retrieval depth and LoRA rank with Ray Tune (TPE or grid, ASHA),
    every trial in MLflow."""
    from rayrag.tune.spec import load_tune_spec
    from rayrag.tune.sweep import run_sweep

    spec = load_tune_spec(space, smoke=smoke, num_samples=num_samples)
    summary = run_sweep(
        spec,
        out=out,
        cache=cache,
        corpus=corpus,
        dev=dev,
        base_model=base,
        overrides=overrides or [],
    )
    if not as_json and summary.get("best"):
        best = summary["best"]
        knobs = ", ".join(f"{k}={best[k]}" for k in summary["searched"] if k in best)
        typer.echo(f"best: objective {best['objective']:.4f} ({knobs}) -> {summary['best_config']}")
    typer.echo(json.dumps(summary, default=str))
