"""`rayrag purge` and `rayrag forget`: retention and erasure from the command line.

    rayrag purge                         delete every record older than its TTL
                                         (governance.retention)
    rayrag purge --older-than 30d        one TTL for every record type (also 12h, 1.5d)
    rayrag purge --dry-run --json        count only
    rayrag forget --doc-id D1 --doc-id D2 --bundle .rayrag/demo/bundle --json

The last stdout line is the report as one JSON object (`PurgeReport.to_json()`,
`ForgetReport.to_json()`). A bad duration, a missing bundle or an unknown document id is
one line on stderr and exit code 2, and nothing is written. The actor of an erasure is
$RAYRAG_OPERATOR, else the login name; only its hash reaches the audit log.
Registered in `rayrag.cli.main` by `_register_commands`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rayrag.cli.common import ConfigOpt, SetOpt, _config

JsonOpt = Annotated[bool, typer.Option("--json", help="Only the JSON report on stdout.")]


def purge_command(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="One TTL for every record type: 30d, 12h, 1.5d (default: governance.retention).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete events, escalations, audit records, MLflow runs and traces older than their TTL."""
    from rayrag.governance.privacy.retention import parse_duration, purge

    days = parse_duration(older_than) if older_than is not None else None  # before any work
    report = purge(_config(config, overrides), older_than_days=days, dry_run=dry_run).to_json()
    if not as_json:
        verb = "would delete" if dry_run else "deleted"
        for kind, n in report["purged"].items():
            typer.echo(
                (
                    f"{kind}: {verb} {n}, kept {report['kept'][kind]} "
                    f"(ttl {report['ttl_days'][kind]:g} d)"
                ),
                err=True,
            )
    typer.echo(json.dumps(report))


def forget_command(
    doc_ids: Annotated[
        list[str], typer.Option("--doc-id", help="A document to erase (repeatable).")
    ],
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="Index bundle (default: serve.bundle, else $RAYRAG_BUNDLE)."),
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Erase documents from a bundle (chunks, vectors, graph,
    reports) and the tune cache; audited."""
    import os

    from rayrag.cli.registry import operator
    from rayrag.errors import ConfigError
    from rayrag.governance.privacy.erasure import forget

    cfg = _config(config, overrides)
    path = bundle or cfg.serve.bundle or os.environ.get("RAYRAG_BUNDLE")
    if not path:
        raise ConfigError(
            "no bundle to erase from: pass --bundle (or set serve.bundle / $RAYRAG_BUNDLE)"
        )
    report = forget(Path(path), doc_ids, cfg, actor=operator()).to_json()
    if not as_json:
        typer.echo(
            f"forgot {len(report['doc_ids'])} documents: {report['chunks_removed']} chunks, "
            f"{report['edges_removed']} edges removed, {report['edges_updated']} updated; "
            f"bundle {report['previous_bundle_id']} -> {report['bundle_id']} "
            f"(audit {report['audit_id']})",
            err=True,
        )
    typer.echo(json.dumps(report))
