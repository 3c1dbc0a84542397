"""`rayrag data`: import public datasets, write the generated demo corpus and PII set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rayrag.errors import ConfigError

data_app = typer.Typer(
    no_args_is_help=True, help="Import public datasets and write the demo corpus."
)


@data_app.command("import")
def data_import(
    kind: Annotated[str, typer.Argument(help="hotpotqa | musique | presidio")],
    src: Annotated[Path, typer.Argument(help="Source file or directory in the public format.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for corpus.jsonl and qa.jsonl.")],
    corpus: Annotated[
        Path | None, typer.Option("--corpus", help="MuSiQue corpus file ({title, text} list).")
    ] = None,
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
    print(
        json.dumps({"documents": result.documents, "questions": result.questions, "out": str(out)})
    )


@data_app.command("demo")
def data_demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the demo corpus.")],
    seed: Annotated[int, typer.Option(help="Generator seed (same seed, same bytes).")] = 0,
) -> None:
    """Write the bundled, generated demo corpus (corpus.jsonl, qa.jsonl)."""
    from rayrag.data.demo_corpus import generate_demo_corpus

    corpus = generate_demo_corpus(out, seed=seed)
    print(
        json.dumps({"documents": corpus.documents, "questions": corpus.questions, "out": str(out)})
    )


@data_app.command("pii")
def data_pii(
    out: Annotated[
        Path, typer.Option("--out", help="JSON file to write (presidio-research format).")
    ],
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
