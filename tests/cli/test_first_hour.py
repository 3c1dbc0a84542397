"""A newcomer's first hour: the demo's environment file, `--version`,
`rayrag serve` without its secrets."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from rayrag import __version__
from rayrag.config import resolve_config
from rayrag.serve.auth import KeyStore
from rayrag.serve.demo_env import demo_api_key, ensure_demo_secrets, write_demo_env
from tests.cli.test_cli import _one_line_error


def test_the_demo_env_holds_what_the_next_steps_need_and_only_its_owner_reads_it(
    tmp_path, monkeypatch
):
    config = resolve_config("demo")
    for name in ("RAYRAG_HMAC_KEY", "RAYRAG_ENCRYPTION_KEY"):
        monkeypatch.delenv(name, raising=False)
    ensure_demo_secrets(config)  # what `rayrag demo` runs with when the caller set nothing
    path = write_demo_env(tmp_path, config, "sqlite:////tmp/demo/mlflow.db")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sourced = subprocess.run(
        ["bash", "-c", f"set -e; source {path}; env"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
        check=True,
    ).stdout
    env = dict(line.split("=", 1) for line in sourced.splitlines() if "=" in line)
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:////tmp/demo/mlflow.db"
    assert env["RAYRAG_HMAC_KEY"] == os.environ["RAYRAG_HMAC_KEY"]
    assert env["RAYRAG_ENCRYPTION_KEY"] == os.environ["RAYRAG_ENCRYPTION_KEY"]
    keys = KeyStore.from_config(config.serve, environ=env)
    # the key clients send is one serve accepts
    caller = keys.authenticate(f"Bearer {env['RAYRAG_API_KEY']}")
    assert caller.role == "user" and "public" in caller.principal.groups
    # A second demo keeps the key (a running client's $RAYRAG_API_KEY stays valid).
    assert write_demo_env(tmp_path, config, "sqlite:////tmp/demo/mlflow.db") == path
    assert demo_api_key(path) == env["RAYRAG_API_KEY"]
    assert not list(tmp_path.glob(".demo.env.*"))  # nothing half written left behind


def test_secrets_the_caller_set_are_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYRAG_HMAC_KEY", "a-real-production-key-0123456789")
    path = write_demo_env(tmp_path, resolve_config("demo"), "sqlite:///x.db")
    assert (
        "a-real-production-key" not in path.read_text()
        and "RAYRAG_HMAC_KEY: set in your environment" in path.read_text()
    )


def _rayrag(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rayrag.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_version(tmp_path):
    proc = _rayrag("--version", env=dict(os.environ), cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"rayrag {__version__}"


def test_serve_without_its_secrets_is_one_line_before_ray_starts(tmp_path):
    bundle, model = tmp_path / "bundle", tmp_path / "model"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    model.mkdir()
    (model / "config.json").write_text("{}")
    env = {
        k: v for k, v in os.environ.items() if k not in ("RAYRAG_HMAC_KEY", "RAYRAG_ENCRYPTION_KEY")
    }
    proc = _rayrag("serve", "--bundle", str(bundle), "--model", str(model), env=env, cwd=tmp_path)
    _one_line_error(proc, "RAYRAG_HMAC_KEY")
