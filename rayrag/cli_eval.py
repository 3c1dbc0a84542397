"""`rayrag eval`: retrieval-only or end-to-end answer evaluation, with an optional champion gate.

    rayrag eval --dataset data/qa.jsonl --bundle bundle/ --retrieval-only --json
    rayrag eval --dataset data/qa.jsonl --bundle bundle/ --model ckpt/ --principal admin
    rayrag eval --dataset data/qa.jsonl --url http://127.0.0.1:8000     # key in $RAYRAG_API_KEY
    rayrag eval --dataset data/qa.jsonl --bundle bundle/ --model models:/rayrag-generator@challenger \\
        --gate champion                                                  # exit 1 on a regression

Without --json a table goes to stdout first (overall, then every slice, flagged gaps marked
`!`); the last stdout line is always one JSON object. Exit codes: 0 ok, 1 the gate failed
(after printing), 2 a user error (`RayRagError`, turned into one line by `rayrag.cli.main`).
Registered in `rayrag.cli` as `app.command("eval")(eval_command)`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rayrag.cli_common import (
    ConfigOpt,
    GroupsOpt,
    ModeOpt,
    PrincipalOpt,
    SetOpt,
    _config,
    resolve_principal,
)
from rayrag.errors import ConfigError

TABLE_METRICS = {"recall_at_5": "recall@5", "mrr": "mrr", "answer_em": "em", "answer_f1": "f1",
                 "groundedness": "grounded", "citation_precision": "cite_prec", "kg_validation_rate": "kg_valid",
                 "kg_supported_rate": "kg_support", "pii_leak_rate": "pii_leak"}


def _cell(value: Any) -> str:
    return f"{value:>10.4f}" if isinstance(value, (int, float)) else f"{'-':>10}"


def print_answer_table(result: dict[str, Any], out: Any = None) -> None:
    """Overall row, one row per slice (`!` after a flagged value), then latency, usage and gate."""
    out = out or sys.stdout
    flagged = {(f["metric"], f"{f['key']}={f['group']}") for f in result["disaggregation"]["flags"]}
    print(f"{'slice':<32} {'n':>5} " + " ".join(f"{short:>11}" for short in TABLE_METRICS.values()), file=out)
    rows = [("all", {**result, "n": result["questions"]}), *result["slices"].items()]
    for name, values in rows:
        cells = [_cell(values.get(m)) + ("!" if (m, name) in flagged else " ") for m in TABLE_METRICS]
        print(f"{name[:32]:<32} {int(values['n']):>5} " + " ".join(cells), file=out)
    print(f"latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; "
          f"tokens/request {result['tokens_per_request']:.1f}; cost/request {result['cost_per_request']:.6f}",
          file=out)
    for flag in result["disaggregation"]["flags"]:
        print(f"gap: {flag['metric']} {flag['key']}={flag['group']} (n={flag['n']}) {flag['metric_value']:.4f} "
              f"vs overall {flag['overall']:.4f}", file=out)
    gate = result.get("gate")
    if gate:
        print(f"gate vs champion v{gate['champion_version']} (run {gate['baseline_run_id']}): "
              f"{'passed' if gate['passed'] else 'FAILED'}", file=out)
        for reg in gate["regressions"]:
            print(f"  {reg['metric']}: {reg['baseline']:.4f} -> {reg['current']:.4f} ({reg['delta']:+.4f})", file=out)


def _print_retrieval_table(result: dict[str, Any]) -> None:
    from rayrag.pipelines.evaluate import METRICS

    print(f"{'slice':<32} {'n':>5} " + " ".join(f"{m:>12}" for m in METRICS))
    rows = [("all", {**result, "n": result["counts"]["questions"]}), *result["slices"].items()]
    for name, values in rows:
        print(f"{name:<32} {int(values['n']):>5} " + " ".join(f"{values[m]:>12.4f}" for m in METRICS))


def _progress(done: int, total: int) -> None:
    if done == total or done % 10 == 0:
        print(f"\reval {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def eval_command(
    dataset: Annotated[Path, typer.Option("--dataset", help="QA JSONL with answers and supporting_ids (gold doc ids).")],
    bundle: Annotated[Path | None, typer.Option("--bundle", help="Index bundle directory (in-process evaluation).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Generator checkpoint or models:/NAME@ALIAS (in-process).")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Evaluate a running server (POST URL/v1/ask; key in $RAYRAG_API_KEY).")] = None,
    retrieval_only: Annotated[bool, typer.Option("--retrieval-only", help="Score retrieval only (recall@k, MRR).")] = False,
    mode: ModeOpt = None,
    principal: PrincipalOpt = None,
    groups: GroupsOpt = None,
    canaries: Annotated[Path | None, typer.Option("--canaries", help="Planted PII (JSON) to count leaks of; default: planted_pii.json beside the dataset.")] = None,
    gate: Annotated[str | None, typer.Option("--gate", help="`champion`: fail (exit 1) on a regression vs the champion's last evaluation.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N questions.")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON line (no table).")] = False,
) -> None:
    """Evaluate on a QA set: retrieval, answers, groundedness, KG validation, PII leaks, latency
    and cost, per slice with gap flags; one MLflow run; `--gate champion` for CI."""
    if not dataset.is_file():
        raise ConfigError(f"dataset not found: {dataset} (--dataset)")
    cfg = _config(config, overrides)
    asker = resolve_principal(principal, groups, default="admin")
    if retrieval_only:
        from rayrag.pipelines.evaluate import evaluate_retrieval

        if bundle is None:
            raise ConfigError("--retrieval-only needs --bundle")
        if gate is not None or url is not None:
            raise ConfigError("--gate and --url evaluate answers; drop --retrieval-only")
        result = evaluate_retrieval(bundle, dataset, cfg, mode or cfg.retrieval.mode, asker)
        if not as_json:
            _print_retrieval_table(result)
        print(json.dumps(result))
        return

    from rayrag.governance.tracking import resolve_model
    from rayrag.pipelines.answer_eval import evaluate_answers, load_canaries

    if url is None:
        if bundle is None or model is None:
            raise ConfigError("answer evaluation needs --bundle and --model (or --url, or --retrieval-only)")
        if not (bundle / "manifest.json").is_file():
            raise ConfigError(f"no index bundle at {bundle} (--bundle)")
    elif model is not None:
        raise ConfigError("--url evaluates the server's model; drop --model")
    checkpoint = resolve_model(model, cfg.tracking) if model is not None else None
    planted = load_canaries(canaries) if canaries is not None else None
    result = evaluate_answers(dataset, cfg, bundle=bundle, model=checkpoint, url=url, principal=asker,
                              canaries=planted, gate=gate, limit=limit, mode=mode,
                              progress=_progress)
    if not as_json:
        print_answer_table(result)
    print(json.dumps(result))
    if result.get("gate") and not result["gate"]["passed"]:
        raise typer.Exit(1)
