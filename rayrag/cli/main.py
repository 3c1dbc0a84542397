"""The `rayrag` command line: thin typer wrappers over typed functions.

Every command turns a `RayRagError` into one line on stderr and exit code 2 (never a
traceback); long work shows progress on stderr; machine-readable results are one JSON
object on the last line of stdout.

    rayrag data demo --out data/
    rayrag ingest --corpus data/corpus.jsonl --out bundle/ --config rayrag/configs/demo.yaml
    rayrag train --bundle bundle/ --out ckpt/ --config demo
    rayrag ask "Who acquired Brightwater Labs?" --bundle bundle/ --model ckpt/ --principal analyst
    rayrag ask "Who acquired Brightwater Labs?" --bundle bundle/ --retrieval-only --json
    rayrag eval --retrieval-only --bundle bundle/ --dataset data/qa.jsonl --mode hybrid --json
    rayrag bench redaction --quick --json
    rayrag demo --out .rayrag/demo
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from rayrag.cli.common import (  # noqa: F401 - re-exported for the command modules' users
    PRINCIPALS_FILE,
    ConfigOpt,
    GroupsOpt,
    ModeOpt,
    PrincipalOpt,
    SetOpt,
    _config,
    load_principals,
    resolve_principal,
)
from rayrag.errors import ConfigError, RayRagError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="rayrag: governed retrieval-augmented generation on Ray.",
)


def _print_version(value: bool) -> None:
    if value:
        from rayrag import __version__

        print(f"rayrag {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """rayrag: governed retrieval-augmented generation on Ray."""


def _offline_env() -> None:
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("MLFLOW_DISABLE_TELEMETRY", "true"),
        ("RAY_USAGE_STATS_ENABLED", "0"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(key, value)


@app.command()
def ingest(
    corpus: Annotated[
        str,
        typer.Option(
            "--corpus",
            help="Corpus JSONL file, or folder or s3://bucket/prefix of .pdf/.html/.docx/.md/.txt.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory (replaced atomically).")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="Previous bundle: re-process only new or changed documents."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on the first bad row instead of quarantining.")
    ] = False,
    delete_missing: Annotated[
        bool,
        typer.Option(
            "--delete-missing", help="With --bundle: drop documents absent from --corpus."
        ),
    ] = False,
) -> None:
    """Ingest a corpus into a versioned index bundle (Ray Data)."""
    from rayrag.pipelines.ingest import ingest as run_ingest

    cfg = _config(config, overrides)
    if delete_missing and bundle is None:
        raise ConfigError("--delete-missing needs --bundle")
    result = run_ingest(
        corpus if "://" in corpus else Path(corpus),
        out,
        cfg,
        previous=bundle,
        strict=strict or None,
        delete_missing=delete_missing,
    )
    print(json.dumps(result.summary()))


@app.command()
def train(
    bundle: Annotated[
        Path,
        typer.Option(
            "--bundle", help="Index bundle whose chunks (and graph) are the training data."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help=(
                "Checkpoint directory (adapters with --lora-rank); resumable state in OUT/_resume."
            ),
        ),
    ],
    qa: Annotated[
        Path | None,
        typer.Option(
            "--qa",
            help="QA JSONL for reader fine-tuning; default: questions generated from the graph.",
        ),
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT/_resume at the saved step.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Data-parallel Ray Train workers (default: train.workers)."),
    ] = None,
    base: Annotated[
        Path | None, typer.Option("--base", help="Base checkpoint to fine-tune LoRA adapters on.")
    ] = None,
    lora_rank: Annotated[
        int | None,
        typer.Option("--lora-rank", help="LoRA rank (needs --base): train adapters only."),
    ] = None,
    dense: Annotated[
        bool,
        typer.Option(
            "--dense",
            help=(
                "Train the dense twin of the configured MoE (one FFN as wide "
                "as the k active experts): the `rayrag compare` baseline."
            ),
        ),
    ] = False,
    curve_qa: Annotated[
        Path | None,
        typer.Option(
            "--curve-qa",
            help=(
                "QA JSONL whose exact match (overall and per hops) is measured at every "
                "reader validation: the learning curve in MLflow (read, never trained on)."
            ),
        ),
    ] = None,
    curve_limit: Annotated[
        int | None,
        typer.Option("--curve-limit", help="Score only the first N questions of --curve-qa."),
    ] = None,
) -> None:
    """Train the generator: LM on the chunks, then reader fine-tuning (or LoRA adapters).
    A full training is registered in MLflow's model registry (the first version is champion)."""
    from rayrag.pipelines.train import train as run_train

    cfg = _config(config, overrides)
    if dense:
        from rayrag.evaluation.compare import dense_baseline_overrides

        # Its own registered model: a baseline is never a version the champion could roll to.
        cfg = cfg.with_overrides(
            [*dense_baseline_overrides(cfg), f"tracking.model_name={cfg.tracking.model_name}-dense"]
        )
    if lora_rank is not None and base is None:
        raise ConfigError("--lora-rank needs --base (the checkpoint whose adapters are trained)")
    if base is not None and lora_rank is None:
        raise ConfigError("--base needs --lora-rank")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    result = run_train(
        cfg,
        out,
        bundle=bundle,
        qa=qa,
        resume=resume,
        base=base,
        lora_rank=lora_rank,
        workers=workers,
        curve_qa=curve_qa,
        curve_limit=curve_limit,
    )
    print(json.dumps(result.to_json()))


@app.command()
def bench(
    name: Annotated[
        str,
        typer.Argument(
            help=(
                "redaction | ingest | retrieval | kg | moe | "
                "softmax | decode | moe-quality | ep | ep-memory | serve | scale | openai | files"
            )
        ),
    ],
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes (CI).")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Last stdout line is one JSON object.")
    ] = False,
    bundle: Annotated[
        Path | None, typer.Option(help="serve: the index bundle (default .rayrag/demo/bundle).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="serve: the reader checkpoint (default .rayrag/demo/model).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="scale: folder for plots and scale.json (default .rayrag/bench)."),
    ] = None,
    docs: Annotated[
        bool, typer.Option("--docs", help="scale: also refresh docs/scaling_*.png (full run only).")
    ] = False,
) -> None:
    """Run a benchmark: competitors side by side in one process; ratios, not times."""
    from rayrag.bench import run_bench

    result = run_bench(
        name, quick=quick, bundle=bundle, model=model, out_dir=out, docs=docs or None
    )
    if not as_json:
        for key, value in result.get("ratios", {}).items():
            print(f"{key}: {value:.2f}" if isinstance(value, (int, float)) else f"{key}: {value}")
    print(json.dumps(result))


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Demo directory (data/, bundle/, mlflow.db).")
    ] = Path(".rayrag/demo"),
    config: ConfigOpt = "demo",
    overrides: SetOpt = None,
    tune: Annotated[
        bool,
        typer.Option("--tune/--no-tune", help="End with the smoke tuning sweep (a few minutes)."),
    ] = True,
) -> None:
    """Generate the demo corpus, ingest, train, serve, answer, evaluate, and tune (smoke sweep)."""
    from rayrag.cli.demo import run_demo

    run_demo(out, _config(config, overrides), tune=tune)


def _register_commands() -> None:
    """Commands kept in their own modules (they import this one's option types)."""
    from rayrag.cli.ask import ask_command
    from rayrag.cli.compare import compare_command
    from rayrag.cli.data import data_app
    from rayrag.cli.eval import eval_command
    from rayrag.cli.governance import forget_command, purge_command
    from rayrag.cli.readiness import readiness_command
    from rayrag.cli.registry import registry_app
    from rayrag.cli.serve import serve_app
    from rayrag.cli.tune import tune_command

    app.add_typer(data_app, name="data")
    app.command("ask")(ask_command)
    app.command("eval")(eval_command)
    app.command("compare")(compare_command)
    app.command("tune")(tune_command)
    app.command("readiness")(readiness_command)
    app.command("purge")(purge_command)
    app.command("forget")(forget_command)
    app.add_typer(registry_app, name="registry")
    app.add_typer(serve_app, name="serve")


_register_commands()


def main() -> None:
    _offline_env()
    try:
        code = app(standalone_mode=False)  # a command's typer.Exit(n) comes back as n in this mode
    except RayRagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
