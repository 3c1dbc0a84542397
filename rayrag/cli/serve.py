"""`rayrag serve`: the Ray Serve graph on serve.host:serve.port until Ctrl-C; `rayrag serve keygen`.

What a user would otherwise find out from a screen of replica tracebacks is checked before
Ray starts: the bundle, the model and the redaction secrets (one line, exit 2). Ctrl-C or
SIGTERM stops the graph and the local Ray instance this command started, with every
process of it, within seconds (`ray.shutdown()`; Serve's graceful drain is for clusters).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rayrag.cli.common import ConfigOpt, SetOpt
from rayrag.errors import ConfigError

serve_app = typer.Typer(
    help="Run the Ray Serve graph (`serve run rayrag.serve.app:app` with a config); "
    "`rayrag serve keygen` makes API keys."
)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def preflight(args: dict[str, Any]) -> tuple[Any, Path, Path]:
    """(config, bundle, model) when everything the graph needs is here, else a ConfigError."""
    from rayrag.governance.privacy.redaction import read_secrets
    from rayrag.serve.app import resolve
    from rayrag.serve.auth import KeyStore

    cfg, bundle_path, model_path = resolve(args)
    # e.g. "environment variable RAYRAG_HMAC_KEY must hold ..."
    read_secrets(cfg.governance.redaction)
    if not len(KeyStore.from_config(cfg.serve)):
        print(
            f"warning: no API keys (serve.keys_file, ${cfg.serve.keys_env}): every request will "
            "get 401; `source .rayrag/demo/demo.env` after `make demo` sets one",
            file=sys.stderr,
        )
    return cfg, bundle_path, model_path


def _generator_name(cfg: Any, model_path: Path) -> str:
    if cfg.generator.backend == "openai":
        return f"openai:{cfg.generator.openai.model}"
    return model_path.name


@serve_app.callback(invoke_without_command=True)
def serve_command(
    ctx: typer.Context,
    config: ConfigOpt = "demo",
    overrides: SetOpt = None,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="Index bundle (default: serve.bundle, .rayrag/demo/bundle)."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="Generator checkpoint (default: serve.model, .rayrag/demo/model)."
        ),
    ] = None,
) -> None:
    """Serve the graph on serve.host:serve.port until Ctrl-C (API keys:
    serve.keys_file or $RAYRAG_API_KEYS)."""
    if ctx.invoked_subcommand is not None:
        return
    import time

    args = {
        "config": config,
        "set": ",".join(overrides or []),
        "bundle": str(bundle) if bundle else None,
        "model": str(model) if model else None,
    }
    cfg, bundle_path, model_path = preflight(args)  # fail fast, before Ray starts
    # Ctrl-C and SIGTERM both clean up; set explicitly, since a process started in the background
    # by a non-interactive shell inherits SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    import ray
    from ray import serve

    from rayrag.serve.app import build_app

    try:
        ray.init(include_dashboard=False, configure_logging=False)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _interrupt)  # again: ray.init installs its own
        serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
        serve.run(build_app(args), name="rayrag", route_prefix="/")
        print(
            f"rayrag serving {bundle_path.name} with {_generator_name(cfg, model_path)} on "
            f"http://{cfg.serve.host}:{cfg.serve.port} (POST /v1/ask, /v1/chat/completions; GET "
            "/healthz, /readyz, /docs); Ctrl-C stops",
            file=sys.stderr,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        ray.shutdown()  # this command's local Ray: GCS, raylet, agents, every replica


@serve_app.command("keygen")
def serve_keygen(
    principal: Annotated[
        str, typer.Option("--principal", help="Who the key acts as (logged only hashed).")
    ],
    groups: Annotated[
        str, typer.Option("--groups", help="Comma-separated ACL groups, e.g. public,hr.")
    ] = "public",
    team: Annotated[str, typer.Option("--team", help="Team tag for usage and cost.")] = "default",
    role: Annotated[str, typer.Option("--role", help="user | admin")] = "user",
    keys_file: Annotated[
        Path | None, typer.Option("--keys-file", help="Append the hashed entry to this YAML file.")
    ] = None,
) -> None:
    """Make an API key: the key once on stdout, only its sha256 in the keys file."""
    import yaml

    from rayrag.atomic import atomic_path
    from rayrag.serve.auth import KeyStore, generate_key, key_entry

    key = generate_key()
    # type: ignore[arg-type]
    entry = key_entry(
        key, principal, [g.strip() for g in groups.split(",") if g.strip()], team, role
    )
    if keys_file is None:
        print(yaml.safe_dump([entry], sort_keys=False), file=sys.stderr, end="")
    else:
        existing = (
            yaml.safe_load(keys_file.read_text(encoding="utf-8")) if keys_file.is_file() else []
        )
        if not isinstance(existing, list):
            raise ConfigError(f"{keys_file}: expected a YAML list of key entries")
        with atomic_path(
            keys_file
        ) as tmp:  # replaced only if the new file loads (valid, no duplicate)
            tmp.write_text(yaml.safe_dump([*existing, entry], sort_keys=False), encoding="utf-8")
            KeyStore.from_file(tmp)
        print(f"added key {entry['sha256'][:8]} for {principal} to {keys_file}", file=sys.stderr)
    print(key)
