"""`rayrag eval`: retrieval-only or end-to-end answer evaluation, with an optional champion gate.

    rayrag eval --dataset data/qa.jsonl --bundle bundle/ --retrieval-only --json
    rayrag eval --dataset data/qa.jsonl --bundle bundle/ --model ckpt/ --principal admin
    rayrag eval --dataset data/qa.jsonl --url http://127.0.0.1:8000     # key in $RAYRAG_API_KEY
    rayrag eval --dataset data/qa.jsonl --bundle bundle/ \\
        --model models:/rayrag-generator@challenger --gate champion     # exit 1 on a regression
    rayrag eval pii --dataset presidio_generated_large.json --format presidio --json
    rayrag eval safety --dataset ../shared/data/hotpotqa_sample --holdout --json

Without --json a table goes to stdout first (overall, then every slice, flagged gaps marked
`!`); the last stdout line is always one JSON object. `rayrag eval pii` scores the Redactor's
PII detection instead (token-level precision, recall, F2; `rayrag.governance.privacy.pii_eval`);
`rayrag eval safety` the input-safety classifier (attack recall per category, false-positive
rates on benign questions and passages; `--dataset` a HotpotQA sample added to the demo
corpus as benign text; `--holdout` the held-out attacks; `rayrag.governance.safety.safety_eval`).
Exit codes: 0 ok, 1 the gate failed (after printing), 2 a user error (`RayRagError`, turned into one
line by `rayrag.cli.main.main`). Registered in `rayrag.cli.main` as
`app.command("eval")(eval_command)`.
"""

from __future__ import annotations

import json
import sys
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
from rayrag.errors import ConfigError

TABLE_METRICS = {
    "recall_at_5": "recall@5",
    "mrr": "mrr",
    "answer_em": "em",
    "reader_em": "reader_em",
    "answer_f1": "f1",
    "groundedness": "grounded",
    "citation_precision": "cite_prec",
    "kg_validation_rate": "kg_valid",
    "kg_supported_rate": "kg_support",
    "pii_leak_rate": "pii_leak",
}


def _cell(value: Any) -> str:
    return f"{value:>10.4f}" if isinstance(value, (int, float)) else f"{'-':>10}"


def print_answer_table(result: dict[str, Any], out: Any = None) -> None:
    """Overall row, one row per slice (`!` after a flagged value), then latency, usage and gate."""
    out = out or sys.stdout
    flagged = {(f["metric"], f"{f['key']}={f['group']}") for f in result["disaggregation"]["flags"]}
    print(
        f"{'slice':<32} {'n':>5} " + " ".join(f"{short:>11}" for short in TABLE_METRICS.values()),
        file=out,
    )
    rows = [("all", {**result, "n": result["questions"]}), *result["slices"].items()]
    for name, values in rows:
        cells = [
            _cell(values.get(m)) + ("!" if (m, name) in flagged else " ") for m in TABLE_METRICS
        ]
        print(f"{name[:32]:<32} {int(values['n']):>5} " + " ".join(cells), file=out)
    if result.get("confidence_auroc") is not None:
        print(
            f"confidence AUROC (right vs wrong) {result['confidence_auroc']:.3f}; escalated: "
            f"{_cell(result.get('escalation_rate_correct')).strip()} of right, "
            f"{_cell(result.get('escalation_rate_incorrect')).strip()} of wrong answers; "
            f"groundedness {_cell(result.get('groundedness_correct')).strip()} right vs "
            f"{_cell(result.get('groundedness_incorrect')).strip()} wrong",
            file=out,
        )
    print(
        f"latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; "
        f"tokens/request {result['tokens_per_request']:.1f}; cost/request "
        f"{result['cost_per_request']:.6f}",
        file=out,
    )
    for flag in result["disaggregation"]["flags"]:
        print(
            f"gap: {flag['metric']} {flag['key']}={flag['group']} (n={flag['n']}) "
            f"{flag['metric_value']:.4f} vs overall {flag['overall']:.4f}",
            file=out,
        )
    gate = result.get("gate")
    if gate:
        print(
            f"gate vs champion v{gate['champion_version']} (run {gate['baseline_run_id']}): "
            f"{'passed' if gate['passed'] else 'FAILED'}",
            file=out,
        )
        for reg in gate["regressions"]:
            if reg.get("reason"):
                print(f"  {reg['metric']}: {reg['reason']}", file=out)
            else:
                print(
                    (
                        f"  {reg['metric']}: {reg['baseline']:.4f} -> "
                        f"{reg['current']:.4f} ({reg['delta']:+.4f})"
                    ),
                    file=out,
                )


def _print_retrieval_table(result: dict[str, Any]) -> None:
    from rayrag.evaluation.retrieval_eval import METRICS

    print(f"{'slice':<32} {'n':>5} " + " ".join(f"{m:>12}" for m in METRICS))
    rows = [("all", {**result, "n": result["counts"]["questions"]}), *result["slices"].items()]
    for name, values in rows:
        print(
            f"{name:<32} {int(values['n']):>5} " + " ".join(f"{values[m]:>12.4f}" for m in METRICS)
        )


def _print_fusion_table(result: dict[str, Any]) -> None:
    weights = result["chosen"]["weights"]
    print(
        f"fusion weights chosen on {result['counts']['dev']} questions: "
        + ", ".join(f"{k} {v:g}" for k, v in weights.items())
        + (
            " (configured: "
            f"{', '.join(f'{k} {v:g}' for k, v in result['configured_weights'].items())})"
        )
    )
    print(
        f"{'held-back (' + str(result['counts']['heldout']) + ')':<22} "
        f"{'R@2':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6}"
    )
    for mode, m in result["heldout"].items():
        print(
            f"{mode:<22} {m['recall_at_2']:>6.3f} {m['recall_at_5']:>6.3f} "
            f"{m['recall_at_10']:>6.3f} {m['mrr']:>6.3f}"
        )
    print(
        f"set it with --set 'retrieval.fusion_weights={{dense: {weights['dense']:g}, graph: "
        f"{weights['graph']:g}, bm25: {weights['bm25']:g}}}'"
    )


def _progress(done: int, total: int) -> None:
    if done == total or done % 10 == 0:
        print(
            f"\reval {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True
        )


PII_FORMATS = ("presidio",)


def print_pii_table(result: dict[str, Any], out: Any = None) -> None:
    """Overall P/R/F2 (detected and redacted),
    then recall per gold type and precision per predicted type."""
    out = out or sys.stdout
    red = result["redacted"]  # under the default policy; every policy's follows when present
    print(f"PII vs not-PII over {result['tokens']} tokens of {result['examples']} texts", file=out)
    print(f"{'':<28} {'precision':>10} {'recall':>10} {'f2':>10}", file=out)
    print(
        (
            f"{'detected':<28} {result['precision']:>10.4f} "
            f"{result['recall']:>10.4f} {result['f2']:>10.4f}"
        ),
        file=out,
    )
    for policy, row in result.get("redacted_by_policy", {"": red}).items():
        label = f"redacted ({policy})" if policy else "redacted"
        print(
            f"{label:<28} {row['precision']:>10.4f} {row['recall']:>10.4f} {row['f2']:>10.4f}",
            file=out,
        )
    print(
        f"\n{'gold entity':<20} {'scored as':<18} {'tokens':>7} {'recall':>8} {'typed':>8}",
        file=out,
    )
    for label, row in result["per_entity"].items():
        print(
            f"{label:<20} {row['mapped_to']:<18} {row['tokens']:>7} {row['recall']:>8.4f} "
            f"{row['typed_recall']:>8.4f}",
            file=out,
        )
    print(f"\n{'predicted':<20} {'tokens':>7} {'precision':>10}", file=out)
    for kind, row in result["per_predicted"].items():
        print(f"{kind:<20} {row['tokens']:>7} {row['precision']:>10.4f}", file=out)


def _pii_eval(dataset: Path, fmt: str, limit: int | None, cfg: Any, as_json: bool) -> None:
    from rayrag.governance.privacy.pii_eval import evaluate_pii
    from rayrag.tracking.tracker import Tracker, compose_run_name

    redaction = cfg.governance.redaction
    result = evaluate_pii(dataset, redaction, fmt=fmt, limit=limit)
    with Tracker(cfg.tracking).start_run(
        "eval", cfg, tags={"eval_kind": "pii"}, run_name=compose_run_name("eval", cfg, "pii")
    ) as run:
        if run.run_id is not None:  # counts and ratios only: the dataset's text never leaves
            run.log_params(
                {"pii.dataset": dataset.name, "pii.format": fmt, "pii.examples": result["examples"]}
            )
            metrics = {f"pii_{key}": result[key] for key in ("precision", "recall", "f2")}
            metrics.update(
                {
                    f"pii_redacted_{key}": result["redacted"][key]
                    for key in ("precision", "recall", "f2")
                }
            )
            metrics.update(
                {
                    f"pii_recall.{label}": row["recall"]
                    for label, row in result["per_entity"].items()
                }
            )
            run.log_metrics(metrics)
            result["run_id"] = run.run_id
    if not as_json:
        print_pii_table(result)
    print(json.dumps(result))


def print_safety_table(result: dict[str, Any], out: Any = None) -> None:
    """Recall per category and disguise, false-positive rate per benign source."""
    out = out or sys.stdout
    print(
        (
            f"attacks {result['attacks']}: recall "
            f"{result['attack_recall']:.4f} (threshold {result['threshold']})"
        ),
        file=out,
    )
    for name, recall in result["recall_per_category"].items():
        print(
            f"  {name:<22} n={result['attacks_per_category'][name]:<4} recall {recall:.4f}",
            file=out,
        )
    print(
        "by variant: " + ", ".join(f"{v} {r:.2f}" for v, r in result["recall_per_variant"].items()),
        file=out,
    )
    print(
        f"benign questions {result['benign_questions']}: fpr {result['benign_fpr_questions']:.4f}; "
        f"passages {result['benign_passages']}: fpr {result['benign_fpr_passages']:.4f}; "
        f"hard benign {result['hard_benign']}: fpr {result['hard_benign_fpr']:.4f}",
        file=out,
    )
    for source, fpr in result["fpr_by_source"].items():
        print(f"  {source:<22} n={result['benign_counts'][source]:<5} fpr {fpr:.4f}", file=out)
    for split in ("holdout", "holdout_b"):
        if split in result:
            held = result[split]
            print(
                f"{split} attacks {held['attacks']}: recall {held['attack_recall']:.4f}", file=out
            )
            for name, recall in held["recall_per_category"].items():
                print(
                    f"  {name:<22} n={held['attacks_per_category'][name]:<4} recall {recall:.4f}",
                    file=out,
                )


def _safety_eval(hotpotqa: Path | None, holdout: bool, cfg: Any, as_json: bool) -> None:
    from rayrag.governance.safety.safety_eval import evaluate_safety, tracking_metrics
    from rayrag.tracking.tracker import Tracker, compose_run_name

    result = evaluate_safety(
        cfg.governance.input_safety, hotpotqa=hotpotqa, holdout=holdout, seed=cfg.seed
    )
    with Tracker(cfg.tracking).start_run(
        "eval",
        cfg,
        tags={"eval_kind": "safety"},
        run_name=compose_run_name("eval", cfg, "safety-holdout" if holdout else "safety"),
    ) as run:
        if run.run_id is not None:  # counts and ratios only: no attack or benign text leaves
            run.log_params(
                {
                    "safety.threshold": result["threshold"],
                    "safety.max_chars": result["max_chars"],
                    "safety.hotpotqa": result["hotpotqa"],
                    "safety.holdout": holdout,
                }
            )
            run.log_metrics(tracking_metrics(result))
            result["run_id"] = run.run_id
    if not as_json:
        print_safety_table(result)
    print(json.dumps(result))


TARGETS = ("pii", "safety", "fusion")


def eval_command(
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            help=(
                "QA JSONL with answers and supporting_ids (gold doc ids); for `eval safety`, "
                "an optional HotpotQA sample (folder or questions file) used as benign text."
            ),
        ),
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="Index bundle directory (in-process evaluation)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Generator checkpoint or models:/NAME@ALIAS (in-process)."),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="Evaluate a running server (POST URL/v1/ask; key in $RAYRAG_API_KEY)."
        ),
    ] = None,
    retrieval_only: Annotated[
        bool, typer.Option("--retrieval-only", help="Score retrieval only (recall@k, MRR).")
    ] = False,
    mode: ModeOpt = None,
    principal: PrincipalOpt = None,
    groups: GroupsOpt = None,
    canaries: Annotated[
        Path | None,
        typer.Option(
            "--canaries",
            help=(
                "Planted PII (JSON) to count leaks of; "
                "default: planted_pii.json beside the dataset."
            ),
        ),
    ] = None,
    gate: Annotated[
        str | None,
        typer.Option(
            "--gate",
            help="`champion`: fail (exit 1) on a regression vs the champion's last evaluation.",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Evaluate only the first N questions.")
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON line (no table).")] = False,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="`rayrag eval pii` dataset format: presidio (presidio-research JSON)."
        ),
    ] = "presidio",
    holdout: Annotated[
        bool,
        typer.Option("--holdout", help="`rayrag eval safety`: also score the held-out attacks."),
    ] = False,
    target: Annotated[
        str | None,
        typer.Argument(
            help=(
                "`pii`: score PII detection on a labelled set instead of QA; "
                "`safety`: the input-safety classifier; `fusion`: calibrate hybrid's "
                "fusion weights on the dataset's first half, report on the rest."
            )
        ),
    ] = None,
) -> None:
    """Evaluate on a QA set: retrieval, answers, groundedness, KG validation, PII leaks, latency
    and cost, per slice with gap flags; one MLflow run; `--gate champion` for CI.
    `rayrag eval pii --dataset FILE`: token-level PII precision/recall/F2 of the Redactor.
    `rayrag eval safety [--dataset HOTPOTQA] [--holdout]`: the input-safety classifier.
    `rayrag eval fusion --bundle B --dataset qa.jsonl`: fusion weights calibrated on the first
    half, hybrid against each retriever on the held-back half."""
    if target not in (None, *TARGETS):
        raise ConfigError(
            f"unknown eval target {target!r}; one of {', '.join(TARGETS)} (rayrag eval pii)"
        )
    if target == "safety":
        extra = [
            flag
            for flag, value in (
                ("--bundle", bundle),
                ("--model", model),
                ("--url", url),
                ("--retrieval-only", retrieval_only),
                ("--gate", gate),
                ("--canaries", canaries),
                ("--limit", limit),
            )
            if value
        ]
        if extra:
            raise ConfigError(
                f"rayrag eval safety takes --dataset, --holdout; drop {', '.join(extra)}"
            )
        if dataset is not None and not dataset.exists():
            raise ConfigError(f"HotpotQA sample not found: {dataset} (--dataset)")
        _safety_eval(dataset, holdout, _config(config, overrides), as_json)
        return
    if holdout:
        raise ConfigError("--holdout is for `rayrag eval safety`")
    if dataset is None:
        raise ConfigError(
            "--dataset is required (a QA JSONL, or the PII set for `rayrag eval pii`)"
        )
    if not dataset.is_file():
        raise ConfigError(f"dataset not found: {dataset} (--dataset)")
    cfg = _config(config, overrides)
    if target == "pii":
        extra = [
            flag
            for flag, value in (
                ("--bundle", bundle),
                ("--model", model),
                ("--url", url),
                ("--retrieval-only", retrieval_only),
                ("--gate", gate),
                ("--canaries", canaries),
            )
            if value
        ]
        if extra:
            raise ConfigError(
                f"rayrag eval pii takes --dataset, --format, --limit; drop {', '.join(extra)}"
            )
        if fmt not in PII_FORMATS:
            raise ConfigError(
                f"unknown PII dataset format {fmt!r} "
                f"(--format); supported: {', '.join(PII_FORMATS)}"
            )
        _pii_eval(dataset, fmt, limit, cfg, as_json)
        return
    asker = resolve_principal(principal, groups, default="admin")
    if target == "fusion":
        from rayrag.evaluation.fusion_eval import calibrate_fusion

        extra = [
            flag
            for flag, value in (
                ("--model", model),
                ("--url", url),
                ("--gate", gate),
                ("--canaries", canaries),
                ("--limit", limit),
            )
            if value
        ]
        if extra or bundle is None:
            raise ConfigError(
                "rayrag eval fusion takes --bundle, --dataset (and --config, --set)"
                + (f"; drop {', '.join(extra)}" if extra else "")
            )
        result = calibrate_fusion(bundle, dataset, cfg, asker)
        if not as_json:
            _print_fusion_table(result)
        print(json.dumps(result))
        return
    if retrieval_only:
        from rayrag.evaluation.retrieval_eval import evaluate_retrieval

        if bundle is None:
            raise ConfigError("--retrieval-only needs --bundle")
        if gate is not None or url is not None:
            raise ConfigError("--gate and --url evaluate answers; drop --retrieval-only")
        result = evaluate_retrieval(bundle, dataset, cfg, mode or cfg.retrieval.mode, asker)
        if not as_json:
            _print_retrieval_table(result)
        print(json.dumps(result))
        return

    from rayrag.evaluation.answer_eval import evaluate_answers, load_canaries
    from rayrag.generator.prompt import pin_reader_prompt
    from rayrag.tracking.model_registry import model_prompt_tag, resolve_model

    if url is None:
        if bundle is None or (model is None and cfg.generator.backend == "moe"):
            raise ConfigError(
                "answer evaluation needs --bundle and --model (or --url, or --retrieval-only)"
            )
        if not (bundle / "manifest.json").is_file():
            raise ConfigError(f"no index bundle at {bundle} (--bundle)")
    elif model is not None:
        raise ConfigError("--url evaluates the server's model; drop --model")
    if url is None:  # in process: the prompt pinned to the model (or config) is the one read
        cfg, _ = pin_reader_prompt(cfg, model_prompt_tag(model or "", cfg.tracking))
    checkpoint = resolve_model(model, cfg.tracking) if model is not None else None
    planted = load_canaries(canaries) if canaries is not None else None
    result = evaluate_answers(
        dataset,
        cfg,
        bundle=bundle,
        model=checkpoint,
        url=url,
        principal=asker,
        canaries=planted,
        gate=gate,
        limit=limit,
        mode=mode,
        progress=_progress,
    )
    if not as_json:
        print_answer_table(result)
    print(json.dumps(result))
    if result.get("gate") and not result["gate"]["passed"]:
        raise typer.Exit(1)
