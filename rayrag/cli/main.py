"""The `rayrag` command line: thin typer wrappers over typed functions.

Every command turns a `RayRagError` into one line on stderr and exit code 2 (never a
traceback); long work shows progress on stderr; machine-readable results are one JSON
object on the last line of stdout.

    rayrag data demo --out data/
    rayrag ingest --corpus data/corpus.jsonl --out bundle/ --config configs/demo.yaml
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

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="rayrag: governed retrieval-augmented generation on Ray.")
data_app = typer.Typer(no_args_is_help=True, help="Import public datasets and write the demo corpus.")
app.add_typer(data_app, name="data")



def _offline_env() -> None:
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                       ("MLFLOW_DISABLE_TELEMETRY", "true"), ("RAY_USAGE_STATS_ENABLED", "0"),
                       ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)


@data_app.command("import")
def data_import(
    kind: Annotated[str, typer.Argument(help="hotpotqa | musique | presidio")],
    src: Annotated[Path, typer.Argument(help="Source file or directory in the public format.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for corpus.jsonl and qa.jsonl.")],
    corpus: Annotated[Path | None, typer.Option("--corpus", help="MuSiQue corpus file ({title, text} list).")] = None,
) -> None:
    """Convert a public dataset into corpus.jsonl + qa.jsonl."""
    from rayrag.data import importers

    if kind == "hotpotqa":
        result = importers.import_hotpotqa(src, out)
    elif kind == "musique":
        result = importers.import_musique(src, out, corpus=corpus)
    elif kind == "presidio":
        result = importers.import_presidio(src, out)
    else:
        raise ConfigError(f"unknown dataset kind {kind!r}; choose hotpotqa, musique or presidio")
    print(json.dumps({"documents": result.documents, "questions": result.questions, "out": str(out)}))


@data_app.command("demo")
def data_demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the demo corpus.")],
    seed: Annotated[int, typer.Option(help="Generator seed (same seed, same bytes).")] = 0,
) -> None:
    """Write the bundled, generated demo corpus (corpus.jsonl, qa.jsonl)."""
    from rayrag.data.demo_corpus import generate_demo_corpus

    corpus = generate_demo_corpus(out, seed=seed)
    print(json.dumps({"documents": corpus.documents, "questions": corpus.questions, "out": str(out)}))


@data_app.command("pii")
def data_pii(
    out: Annotated[Path, typer.Option("--out", help="JSON file to write (presidio-research format).")],
    seed: Annotated[int, typer.Option(help="Generator seed (same seed, same bytes).")] = 0,
    n: Annotated[int, typer.Option("--n", help="Sentences to write (>= 1).")] = 700,
) -> None:
    """Write a generated, labelled set of identifiers (cards, SSNs, IBANs, e-mail, phones, IPs,
    driver's licences) for `rayrag eval pii --dataset`."""
    from rayrag.atomic import atomic_text
    from rayrag.data.pii_set import generate_pii_set

    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    examples = generate_pii_set(n, seed=seed)
    with atomic_text(out) as handle:
        handle.write(json.dumps(examples, indent=1) + "\n")
    print(json.dumps({"examples": len(examples), "seed": seed, "out": str(out)}))


@app.command()
def ingest(
    corpus: Annotated[Path, typer.Option("--corpus", help="Corpus JSONL file or folder of .md/.txt.")],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory (replaced atomically).")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", help="Previous bundle: re-process only new or changed documents.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on the first bad row instead of quarantining.")] = False,
    delete_missing: Annotated[bool, typer.Option("--delete-missing", help="With --bundle: drop documents absent from --corpus.")] = False,
) -> None:
    """Ingest a corpus into a versioned index bundle (Ray Data)."""
    from rayrag.pipelines.ingest import ingest as run_ingest

    cfg = _config(config, overrides)
    if delete_missing and bundle is None:
        raise ConfigError("--delete-missing needs --bundle")
    result = run_ingest(corpus, out, cfg, previous=bundle, strict=strict or None,
                        delete_missing=delete_missing)
    print(json.dumps(result.summary()))


@app.command()
def train(
    bundle: Annotated[Path, typer.Option("--bundle", help="Index bundle whose chunks (and graph) are the training data.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory (adapters with --lora-rank); resumable state in OUT/_resume.")],
    qa: Annotated[Path | None, typer.Option("--qa", help="QA JSONL for reader fine-tuning; default: questions generated from the graph.")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/_resume at the saved step.")] = False,
    workers: Annotated[int | None, typer.Option("--workers", help="Data-parallel Ray Train workers (default: train.workers).")] = None,
    base: Annotated[Path | None, typer.Option("--base", help="Base checkpoint to fine-tune LoRA adapters on.")] = None,
    lora_rank: Annotated[int | None, typer.Option("--lora-rank", help="LoRA rank (needs --base): train adapters only.")] = None,
    dense: Annotated[bool, typer.Option("--dense", help="Train the dense twin of the configured MoE (one FFN as wide as the k active experts): the `rayrag compare` baseline.")] = False,
    curve_qa: Annotated[Path | None, typer.Option("--curve-qa", help="QA JSONL whose exact match (overall and per hops) is measured at every reader validation: the learning curve in MLflow (read, never trained on).")] = None,
    curve_limit: Annotated[int | None, typer.Option("--curve-limit", help="Score only the first N questions of --curve-qa.")] = None,
) -> None:
    """Train the generator: LM on the chunks, then reader fine-tuning (or LoRA adapters).
    A full training is registered in MLflow's model registry (the first version is champion)."""
    from rayrag.pipelines.train import train as run_train

    cfg = _config(config, overrides)
    if dense:
        from rayrag.evaluation.compare import dense_baseline_overrides

        # Its own registered model: a baseline is never a version the champion could roll to.
        cfg = cfg.with_overrides([*dense_baseline_overrides(cfg), f"tracking.model_name={cfg.tracking.model_name}-dense"])
    if lora_rank is not None and base is None:
        raise ConfigError("--lora-rank needs --base (the checkpoint whose adapters are trained)")
    if base is not None and lora_rank is None:
        raise ConfigError("--base needs --lora-rank")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    result = run_train(cfg, out, bundle=bundle, qa=qa, resume=resume, base=base, lora_rank=lora_rank,
                       workers=workers, curve_qa=curve_qa, curve_limit=curve_limit)
    print(json.dumps(result.to_json()))


def _print_evidence(evidence) -> None:
    if not evidence.passages:
        print("no passages")
    for rank, p in enumerate(evidence.passages, 1):
        print(f"{rank:>2}. [{p.score:.4f}] {p.title or p.doc_id}  doc={p.doc_id} chunk={p.chunk_id}")
        snippet = " ".join(p.text.split())
        print(f"    {snippet[:200]}{'...' if len(snippet) > 200 else ''}")
    if evidence.facts:
        print("facts:")
    for f in evidence.facts:
        print(f"  - ({f.subject}) -[{f.relation}]-> ({f.object})  conf={f.confidence:.2f}  "
              f"docs={','.join(f.doc_ids)} chunks={','.join(f.chunk_ids)}")


def _print_answer(result) -> None:
    answer = result.answer
    print(answer.text or "(empty answer)")
    if result.truncated_chunk_ids or result.facts_dropped:
        print(f"note: context truncated to fit the model's window: dropped {len(result.truncated_chunk_ids)} "
              f"lowest-ranked passage(s) ({', '.join(result.truncated_chunk_ids) or '-'}) and "
              f"{result.facts_dropped} fact(s)")
    print("citations:" if answer.citations else "citations: none (no passage fits or none retrieved)")
    mentioned = set(result.cited_markers)
    for marker, p in enumerate(answer.citations, 1):
        flag = "*" if marker in mentioned else " "
        print(f" {flag}[{marker}] {p.title or p.doc_id}  doc={p.doc_id} chunk={p.chunk_id} score={p.score:.4f}")
    if answer.facts:
        print("facts:")
    for f in answer.facts:
        print(f"  - ({f.subject}) -[{f.relation}]-> ({f.object})  conf={f.confidence:.2f}  "
              f"docs={','.join(f.doc_ids)} chunks={','.join(f.chunk_ids)}")
    usage = result.usage()
    print(f"model {answer.model_version}  config {answer.config_hash[:12]}  tokens: prompt "
          f"{usage['prompt_tokens']}, completion {usage['completion_tokens']} ({result.finish_reason})")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Index bundle directory.")],
    model: Annotated[str | None, typer.Option("--model", help="Generator checkpoint (from `rayrag train`) or models:/NAME@ALIAS; required unless --retrieval-only.")] = None,
    retrieval_only: Annotated[bool, typer.Option("--retrieval-only", help="Return evidence without generating.")] = False,
    mode: ModeOpt = None,
    principal: PrincipalOpt = None,
    groups: GroupsOpt = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Passages to return.")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Answer a question from a bundle with a trained generator, citing the passages it read."""
    from dataclasses import asdict

    from rayrag.errors import DataError
    from rayrag.retrieval.hybrid import HybridRetriever

    if not retrieval_only and model is None:
        raise ConfigError("--model CKPT is required to generate an answer (or pass --retrieval-only)")
    if not retrieval_only and not question.strip():
        raise DataError("question is empty")
    cfg = _config(config, overrides)
    asker = resolve_principal(principal, groups)
    safety_cfg = cfg.governance.input_safety
    if safety_cfg.enabled and safety_cfg.check_questions:
        from rayrag.governance.safety.input_safety import REFUSAL_TEXT, input_safety

        verdict = input_safety(safety_cfg).check(question)
        if verdict.flagged:  # refused as the Serve ingress refuses: nothing retrieved or generated
            if as_json:
                print(json.dumps({"principal": asker.name, "mode": mode or cfg.retrieval.mode, "refused": True,
                                  "answer": REFUSAL_TEXT, "finish_reason": "content_filter", "citations": [],
                                  "passages": [], "facts": [],
                                  "safety": {"question_flagged": True, "categories": list(verdict.categories),
                                             "flagged_chunks": 0}}))
            else:
                print(REFUSAL_TEXT)
            return
    reader = None
    if not retrieval_only:
        from rayrag.generator.reader import Reader
        from rayrag.tracking.model_registry import resolve_model

        reader = Reader(resolve_model(model, cfg.tracking), cfg)
        reader.warm_up()  # a bad checkpoint fails before retrieval loads the bundle
    evidence = HybridRetriever(bundle, cfg).retrieve(question, asker, mode=mode, top_k=top_k)
    safety = {"question_flagged": False, "categories": [], "flagged_chunks": evidence.flagged_chunks}
    if reader is None:
        if as_json:
            print(json.dumps({"principal": asker.name, "mode": mode or cfg.retrieval.mode, "refused": False,
                              "passages": [asdict(p) for p in evidence.passages],
                              "facts": [asdict(f) for f in evidence.facts], "safety": safety}))
            return
        _print_evidence(evidence)
        if evidence.flagged_chunks:
            print(f"input safety: {evidence.flagged_chunks} retrieved chunk(s) withheld")
        return
    from rayrag.generator.reader import result_to_json

    result = reader.answer(question, evidence)
    if as_json:
        print(json.dumps({"principal": asker.name, "mode": mode or cfg.retrieval.mode, "refused": False,
                          **result_to_json(result), "safety": safety}))
        return
    _print_answer(result)


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="redaction | ingest | retrieval | kg | moe | softmax | decode | moe-quality | ep | serve | scale")],
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes (CI).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Last stdout line is one JSON object.")] = False,
) -> None:
    """Run a benchmark: competitors side by side in one process; ratios, not times."""
    from rayrag.bench import run_bench

    result = run_bench(name, quick=quick)
    if not as_json:
        for key, value in result.get("ratios", {}).items():
            print(f"{key}: {value:.2f}" if isinstance(value, (int, float)) else f"{key}: {value}")
    print(json.dumps(result))


serve_app = typer.Typer(help="Run the Ray Serve graph (`serve run rayrag.serve.app:app` with a config); "
                        "`rayrag serve keygen` makes API keys.")
app.add_typer(serve_app, name="serve")


@serve_app.callback(invoke_without_command=True)
def serve_command(
    ctx: typer.Context,
    config: ConfigOpt = "demo",
    overrides: SetOpt = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", help="Index bundle (default: serve.bundle, .rayrag/demo/bundle).")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Generator checkpoint (default: serve.model, .rayrag/demo/model).")] = None,
) -> None:
    """Serve the graph on serve.host:serve.port until Ctrl-C (API keys: serve.keys_file or $RAYRAG_API_KEYS)."""
    if ctx.invoked_subcommand is not None:
        return
    import time

    import ray
    from ray import serve

    from rayrag.serve.app import build_app, resolve

    args = {"config": config, "set": ",".join(overrides or []),
            "bundle": str(bundle) if bundle else None, "model": str(model) if model else None}
    cfg, bundle_path, model_path = resolve(args)  # fail fast, before Ray starts
    ray.init(include_dashboard=False, configure_logging=False)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(build_app(args), name="rayrag", route_prefix="/")
    print(f"rayrag serving {bundle_path.name} with {model_path.name} on http://{cfg.serve.host}:{cfg.serve.port} "
          "(POST /v1/ask, /v1/chat/completions; GET /healthz, /readyz, /docs); Ctrl-C stops", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()


@serve_app.command("keygen")
def serve_keygen(
    principal: Annotated[str, typer.Option("--principal", help="Who the key acts as (logged only hashed).")],
    groups: Annotated[str, typer.Option("--groups", help="Comma-separated ACL groups, e.g. public,hr.")] = "public",
    team: Annotated[str, typer.Option("--team", help="Team tag for usage and cost.")] = "default",
    role: Annotated[str, typer.Option("--role", help="user | admin")] = "user",
    keys_file: Annotated[Path | None, typer.Option("--keys-file", help="Append the hashed entry to this YAML file.")] = None,
) -> None:
    """Make an API key: the key once on stdout, only its sha256 in the keys file."""
    import yaml

    from rayrag.atomic import atomic_path
    from rayrag.serve.auth import KeyStore, generate_key, key_entry

    key = generate_key()
    entry = key_entry(key, principal, [g.strip() for g in groups.split(",") if g.strip()], team, role)  # type: ignore[arg-type]
    if keys_file is None:
        print(yaml.safe_dump([entry], sort_keys=False), file=sys.stderr, end="")
    else:
        existing = yaml.safe_load(keys_file.read_text(encoding="utf-8")) if keys_file.is_file() else []
        if not isinstance(existing, list):
            raise ConfigError(f"{keys_file}: expected a YAML list of key entries")
        with atomic_path(keys_file) as tmp:  # replaced only if the new file loads (valid, no duplicate)
            tmp.write_text(yaml.safe_dump([*existing, entry], sort_keys=False), encoding="utf-8")
            KeyStore.from_file(tmp)
        print(f"added key {entry['sha256'][:8]} for {principal} to {keys_file}", file=sys.stderr)
    print(key)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Demo directory (data/, bundle/, mlflow.db).")] = Path(".rayrag/demo"),
    config: ConfigOpt = "demo",
    overrides: SetOpt = None,
    tune: Annotated[bool, typer.Option("--tune/--no-tune", help="End with the smoke tuning sweep (a few minutes).")] = True,
) -> None:
    """Generate the demo corpus, ingest, train, serve, answer, evaluate, and tune (smoke sweep)."""
    from rayrag.cli.demo import run_demo

    run_demo(out, _config(config, overrides), tune=tune)


def _register_commands() -> None:
    """Commands kept in their own modules (they import this one's option types)."""
    from rayrag.cli.compare import compare_command
    from rayrag.cli.eval import eval_command
    from rayrag.cli.governance import forget_command, purge_command
    from rayrag.cli.readiness import readiness_command
    from rayrag.cli.registry import registry_app
    from rayrag.cli.tune import tune_command

    app.command("eval")(eval_command)
    app.command("compare")(compare_command)
    app.command("tune")(tune_command)
    app.command("readiness")(readiness_command)
    app.command("purge")(purge_command)
    app.command("forget")(forget_command)
    app.add_typer(registry_app, name="registry")


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
