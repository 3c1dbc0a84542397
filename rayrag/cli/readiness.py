"""`rayrag readiness`: the sixteen-check deployment checklist, each a live probe
(governance/readiness/probes.py).

    RAYRAG_READINESS_ADMIN_KEY=... RAYRAG_READINESS_USER_KEY=... \\
        rayrag readiness --url http://127.0.0.1:8000 --qa data/qa.jsonl --metrics-url http://127.0.0.1:8080/metrics
    rayrag readiness --local --json              # starts the `make demo` graph in this process

`--url` probes a running service with an admin key and a public-only user key, both read
from the environment (never from flags, never printed). `--local` starts the serve graph
itself with Ray Serve on the demo bundle and model (or --bundle/--model/--config), with
freshly generated admin and public keys in a temporary keys file, a temporary event log and
escalation queue (byte-scanned for the canaries afterwards), and Ray's Prometheus endpoint
found from the cluster. With the demo layout (`.rayrag/demo/{bundle,model,data,mlflow.db}`)
the QA set and the MLflow store default to the demo's, so the gate and the registry checks
see what `make demo` recorded.

The restricted canary (`--canary-doc`, `--canary-question`, `--canary-phrase`) defaults to
the demo corpus's HR record `hr-000`; on another corpus name a document only privileged
groups may read, a question that retrieves it, and a phrase of its text not in the question.

Progress goes to stderr; without --json a table goes to stdout first; the last stdout line
is `{"passed": n, "total": 16, "checks": [{"name", "area", "passed", "evidence"}]}`. The
markdown report is an artifact of a run in the `<prefix>-readiness` MLflow experiment; the
JSON one is also saved under `serve.readiness_reports` for the admin API and the web page.
Exit codes: 0 all passed, 1 a check failed, 2 a user error (one line).
Registered in `rayrag.cli.main` as `app.command("readiness")(readiness_command)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from rayrag.cli.common import ConfigOpt, SetOpt, _config, load_principals
from rayrag.errors import ConfigError, DataError

ADMIN_KEY_ENV, USER_KEY_ENV = "RAYRAG_READINESS_ADMIN_KEY", "RAYRAG_READINESS_USER_KEY"
APP_NAME = "rayrag-readiness"
READY_TIMEOUT_S = 300


@dataclass
class Service:
    """What the probes need to reach a service (the keys are secrets: never print them)."""

    url: str
    admin_key: str
    user_key: str
    metrics_url: str | None = None
    log_files: list[Path] = field(default_factory=list)
    qa: Path | None = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _metrics_url() -> str | None:
    """Ray's Prometheus endpoint on this node
    (`ray.init(_metrics_export_port=...)` or Ray's pick)."""
    import ray

    for node in ray.nodes():
        if node.get("Alive") and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None


@contextlib.contextmanager
def local_service(
    config_name: str | None, overrides: list[str], bundle: Path | None, model: Path | None
) -> Iterator[tuple[Service, object]]:
    """The serve graph in this process on a free loopback port: (Service, the config it serves).

    Fresh keys (an admin with every group in rayrag/configs/access/principals.yaml, a `public`
    user), a temporary event log and escalation queue. Ray is started here unless it already runs;
    Serve and a Ray started here are shut down on exit."""
    import httpx
    import yaml

    from rayrag.serve.app import build_app, resolve
    from rayrag.serve.auth import generate_key, key_entry
    from rayrag.serve.demo_env import ensure_demo_secrets

    args = {
        "config": config_name or "demo",
        "set": ",".join(overrides),
        "bundle": str(bundle) if bundle else None,
        "model": str(model) if model else None,
    }
    config, bundle_path, model_path = resolve(args)  # one clear line when the demo is missing
    demo_dir = bundle_path.parent
    extra = []
    if (
        not config.tracking.tracking_uri
        and not os.environ.get("MLFLOW_TRACKING_URI")
        and (demo_dir / "mlflow.db").is_file()
    ):  # the store `make demo` registered and evaluated in
        extra.append(f"tracking.tracking_uri=sqlite:///{demo_dir / 'mlflow.db'}")
    ensure_demo_secrets(config)  # only sets the demo-only keys where the environment has none
    groups = sorted({g for gs in load_principals().values() for g in gs} | {"public"})
    admin_key, user_key = generate_key(), generate_key()
    with tempfile.TemporaryDirectory(prefix="rayrag-readiness-") as tmp:
        root = Path(tmp)
        keys_file = root / "api_keys.yaml"
        keys_file.write_text(
            yaml.safe_dump(
                [
                    key_entry(admin_key, "readiness-admin", groups, "readiness", "admin"),
                    key_entry(user_key, "readiness-user", ["public"], "readiness", "user"),
                ]
            ),
            encoding="utf-8",
        )
        events, escalations = root / "events.jsonl", root / "escalations.jsonl"
        config = config.with_overrides(
            [
                *extra,
                f"serve.keys_file={keys_file}",
                f"serve.event_log={events}",
                f"serve.escalation_queue={escalations}",
            ]
        )
        config_path = root / "serve.yaml"
        config_path.write_text(config.to_yaml(), encoding="utf-8")

        import ray
        from ray import serve

        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(
                num_cpus=max(2, os.cpu_count() or 2),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                _metrics_export_port=_free_port(),
            )
        port = _free_port()
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(
                build_app(
                    {
                        "config": str(config_path),
                        "bundle": str(bundle_path),
                        "model": str(model_path),
                    }
                ),
                name=APP_NAME,
                route_prefix="/",
            )
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + READY_TIMEOUT_S
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=30).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise DataError(
                        f"the serve graph did not become ready within {READY_TIMEOUT_S} s"
                    )
                time.sleep(1)
            qa = demo_dir / "data" / "qa.jsonl"
            yield (
                Service(
                    url,
                    admin_key,
                    user_key,
                    _metrics_url(),
                    [events, escalations],
                    qa if qa.is_file() else None,
                ),
                config,
            )
        finally:
            with contextlib.suppress(Exception):
                serve.delete(APP_NAME)
            serve.shutdown()
            if started_ray:
                ray.shutdown()


def _remote_service(url: str, metrics_url: str | None) -> Service:
    admin_key, user_key = os.environ.get(ADMIN_KEY_ENV, ""), os.environ.get(USER_KEY_ENV, "")
    missing = [
        name
        for name, value in ((ADMIN_KEY_ENV, admin_key), (USER_KEY_ENV, user_key))
        if not value.strip()
    ]
    if missing:
        raise ConfigError(
            f"--url needs an admin key and a public-only user key in the environment: set "
            f"{' and '.join(missing)}"
        )
    return Service(url.rstrip("/"), admin_key.strip(), user_key.strip(), metrics_url)


def save_report(report, folder: Path) -> Path:
    """`readiness-<UTC stamp>.json` in `folder` (serve.readiness_reports), written atomically:
    the serve graph's admins read the newest one (GET /v1/admin/readiness)."""
    from rayrag.atomic import atomic_text

    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    path = folder / f"readiness-{stamp}.json"
    body = {
        **report.to_json(),
        "ts": round(now, 3),
        "target": report.target,
        "run_id": report.run_id,
    }
    with atomic_text(path) as out:
        json.dump(body, out)
    return path


def print_table(report, out=None) -> None:
    out = out or sys.stdout
    for check in report.checks:
        print(
            (
                f"{'PASS' if check.passed else 'FAIL':<5} "
                f"{check.area:<11} {check.name:<27} {check.evidence}"
            ),
            file=out,
        )
    print(f"{report.passed}/{report.total} checks passed", file=out)


def readiness_command(
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help=f"A running service (keys in ${ADMIN_KEY_ENV}, ${USER_KEY_ENV})."
        ),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local", help="Start the serve graph here (demo bundle and model by default)."
        ),
    ] = False,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="--local: index bundle (default .rayrag/demo/bundle)."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="--local: generator checkpoint (default .rayrag/demo/model)."),
    ] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    qa: Annotated[
        Path | None,
        typer.Option(
            "--qa",
            help=(
                "QA JSONL the champion was evaluated on (the "
                "gate's dataset; --local default: the demo's)."
            ),
        ),
    ] = None,
    qa_limit: Annotated[
        int,
        typer.Option(
            "--qa-limit",
            help=(
                "Questions the gate evaluates (0 = all: the "
                "champion's baseline must be on the same questions)."
            ),
        ),
    ] = 0,
    metrics_url: Annotated[
        str | None,
        typer.Option(
            "--metrics-url",
            help="Ray's Prometheus endpoint, http://HOST:PORT/metrics (--local: found).",
        ),
    ] = None,
    canary_doc: Annotated[
        str | None,
        typer.Option("--canary-doc", help="A restricted document id (default: the demo's hr-000)."),
    ] = None,
    canary_question: Annotated[
        str | None,
        typer.Option(
            "--canary-question",
            help="A question that retrieves --canary-doc for an all-groups principal.",
        ),
    ] = None,
    canary_phrase: Annotated[
        str | None,
        typer.Option(
            "--canary-phrase",
            help="A phrase of --canary-doc's text that the question does not contain.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON line on stdout.")] = False,
) -> None:
    """Run the deployment checklist (privacy, quality, safety, operations):
    16 live probes with evidence."""
    from rayrag.governance.readiness.probes import ReadinessProbe
    from rayrag.governance.readiness.report import log_report
    from rayrag.governance.readiness.session import Canary

    if (url is None) == (not local):
        raise ConfigError(
            "pass --url URL (a running service) or --local (start the demo graph here), not both"
        )
    if qa_limit < 0:
        raise ConfigError(f"--qa-limit must be >= 0, got {qa_limit}")
    if qa is not None and not qa.is_file():
        raise ConfigError(f"QA dataset not found: {qa} (--qa)")
    defaults = Canary()
    canary = Canary(
        canary_doc or defaults.doc_id,
        canary_question or defaults.question,
        canary_phrase or defaults.phrase,
    )
    if canary.phrase in canary.question:
        raise ConfigError(
            "--canary-phrase must not occur in --canary-question (an echo would look like a leak)"
        )

    def progress(check) -> None:
        print(
            f"[readiness] {'pass' if check.passed else 'FAIL'} {check.area}/{check.name}",
            file=sys.stderr,
        )

    with contextlib.ExitStack() as stack:
        if local:
            service, cfg = stack.enter_context(
                local_service(config, overrides or [], bundle, model)
            )
        else:
            if bundle is not None or model is not None:
                raise ConfigError("--bundle/--model start a graph: they go with --local, not --url")
            cfg = _config(config, overrides)
            service = _remote_service(url, metrics_url)
        probe = ReadinessProbe(
            service.url,
            service.admin_key,
            service.user_key,
            config=cfg,
            canary=canary,
            qa_dataset=qa or service.qa,
            qa_limit=qa_limit or None,
            metrics_url=metrics_url or service.metrics_url,
            log_files=service.log_files,
        )
        report = probe.run(progress=progress)
        report.target = "local" if local else service.url
    run_id = log_report(report, cfg) if cfg.tracking.enabled else None
    if run_id:
        print(
            (
                f"[readiness] report logged to MLflow run {run_id} "
                f"({cfg.tracking.experiment_prefix}-readiness)"
            ),
            file=sys.stderr,
        )
    saved = save_report(report, Path(cfg.serve.readiness_reports))
    print(f"[readiness] report saved to {saved}", file=sys.stderr)
    if not as_json:
        print_table(report)
    print(json.dumps(report.to_json()))
    if not report.ok:
        raise typer.Exit(1)
