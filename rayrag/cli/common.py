"""What every `rayrag` command module shares: option types, config loading, principals.

Kept apart from `rayrag.cli.main` so every command module can import it without importing
the assembled app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rayrag.config import configs_dir
from rayrag.errors import ConfigError

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="YAML config (path or a name in rayrag/configs/)."),
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override: section.key=value (repeatable).")
]


def _config(config: str | None, overrides: list[str] | None):
    from rayrag.config import resolve_config

    return resolve_config(config, overrides or [])


PRINCIPALS_FILE = configs_dir() / "access" / "principals.yaml"
ModeOpt = Annotated[
    str | None,
    typer.Option("--mode", help="dense | bm25 | graph | hybrid (default: retrieval.mode)."),
]
PrincipalOpt = Annotated[
    str | None,
    typer.Option("--principal", help="A principal named in rayrag/configs/access/principals.yaml."),
]
GroupsOpt = Annotated[
    str | None,
    typer.Option("--groups", help="Comma-separated ACL groups (instead of --principal)."),
]


def load_principals(path: Path = PRINCIPALS_FILE) -> dict[str, frozenset[str]]:
    """{name: groups} from a YAML mapping of principal name -> list of ACL groups."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"principals file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise ConfigError(f"principals file is not valid YAML: {path}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"principals file must map names to group lists: {path}")
    principals: dict[str, frozenset[str]] = {}
    for name, groups in loaded.items():
        if (
            not isinstance(groups, list)
            or not groups
            or not all(isinstance(g, str) and g for g in groups)
        ):
            raise ConfigError(f"principal {name!r} must list at least one group in {path}")
        principals[str(name)] = frozenset(groups)
    return principals


def resolve_principal(name: str | None, groups: str | None, default: str = "anonymous"):
    """--principal NAME or --groups a,b (not both); neither = `default` from the file."""
    from rayrag.types import Principal

    if name is not None and groups is not None:
        raise ConfigError("pass --principal or --groups, not both")
    if groups is not None:
        group_set = frozenset(g.strip() for g in groups.split(",") if g.strip())
        if not group_set:
            raise ConfigError("--groups must name at least one group")
        return Principal("cli", group_set)
    known = load_principals()
    name = default if name is None else name
    if name not in known:
        raise ConfigError(
            f"unknown principal {name!r} (--principal); known: {', '.join(sorted(known))}"
        )
    return Principal(name, known[name])
