"""`rayrag registry`: generator checkpoints as MLflow registered-model versions.

    rayrag registry list                       versions, aliases, digests, who promoted them
    rayrag registry register CKPT              a checkpoint as a new version (the first is champion)
    rayrag registry promote VERSION --why ...  champion -> VERSION (the old champion is remembered)
    rayrag registry challenger VERSION         mark VERSION as the challenger (A/B)
    rayrag registry rollback --why ...         champion -> the previous champion

Who did it comes from $RAYRAG_OPERATOR, else the login name; why is required for promote and
rollback. The serve graph and every command that takes --model also take
`models:/rayrag-generator@champion` (or `.../VERSION`).
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from rayrag.cli.common import ConfigOpt, SetOpt

registry_app = typer.Typer(
    no_args_is_help=True,
    help="Versions of the generator in MLflow's model registry: "
    "list, register, promote, challenger, rollback.",
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
WhyOpt = Annotated[
    str, typer.Option("--why", help="Reason, recorded on the version (ids and words, no data).")
]


def _registry(config: str | None, overrides: list[str] | None, *, create: bool = False) -> Any:
    """The registry; only `register` may create a new MLflow store (`require_store`)."""
    from rayrag.config import resolve_config
    from rayrag.errors import ConfigError
    from rayrag.tracking.model_registry import ModelRegistry
    from rayrag.tracking.tracker import Tracker, require_store

    cfg = resolve_config(config, overrides or [])
    if not cfg.tracking.enabled:
        raise ConfigError("the model registry needs MLflow: tracking.enabled is false")
    if not create:
        require_store(cfg.tracking)
    return ModelRegistry(Tracker(cfg.tracking))


def operator() -> str:
    """Who is acting: $RAYRAG_OPERATOR, else the login name."""
    try:
        return os.environ.get("RAYRAG_OPERATOR") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


def _row(info: Any) -> dict[str, Any]:
    return {
        "version": info.version,
        "aliases": list(info.aliases),
        "model_digest": info.model_digest,
        "created": info.created,
        "run_id": info.run_id,
        **{k: v for k, v in info.tags.items() if k.startswith(("promoted_", "rolled_back_"))},
    }


def _print(info: Any, as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps(_row(info)))
    else:
        aliases = ",".join(info.aliases) or "-"
        print(f"{verb} version {info.version} [{aliases}] {info.model_digest}")


@registry_app.command("list")
def registry_list(
    config: ConfigOpt = None, overrides: SetOpt = None, as_json: JsonOpt = False
) -> None:
    """Every version, newest first, with its aliases."""
    registry = _registry(config, overrides)
    rows = [_row(v) for v in registry.versions()]
    if as_json:
        print(json.dumps({"model": registry.name, "versions": rows}))
        return
    if not rows:
        print(
            f"{registry.name}: no versions yet (`rayrag train` or `rayrag registry register CKPT`)"
        )
        return
    print(f"{'version':>7}  {'aliases':<20} {'created':<25} digest")
    for row in rows:
        print(
            f"{row['version']:>7}  {','.join(row['aliases']) or '-':<20} "
            f"{row['created']:<25} {row['model_digest']}"
        )


@registry_app.command("register")
def registry_register(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint directory (config.json + safetensors).")
    ],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register an existing checkpoint as a new version (the first version becomes champion)."""
    registry = _registry(config, overrides, create=True)
    _print(registry.register(checkpoint, tags={"registered_by": operator()}), as_json, "registered")


@registry_app.command("promote")
def registry_promote(
    version: Annotated[int, typer.Argument(help="The version that becomes champion.")],
    why: WhyOpt,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make VERSION the champion; the current champion can be rolled back to."""
    registry = _registry(config, overrides)
    _print(registry.promote(version, who=operator(), why=why), as_json, "champion is now")


@registry_app.command("challenger")
def registry_challenger(
    version: Annotated[int, typer.Argument(help="The version to A/B against the champion.")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark VERSION as the challenger."""
    registry = _registry(config, overrides)
    _print(registry.set_challenger(version), as_json, "challenger is now")


@registry_app.command("rollback")
def registry_rollback(
    why: WhyOpt, config: ConfigOpt = None, overrides: SetOpt = None, as_json: JsonOpt = False
) -> None:
    """Move champion back to the previous champion (who, when and why are recorded)."""
    registry = _registry(config, overrides)
    _print(registry.rollback(who=operator(), why=why), as_json, "rolled back: champion is now")
