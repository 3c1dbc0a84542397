"""A non-editable install carries everything rayrag reads at run time (package data)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_ships_configs_principals_dashboard_and_weights(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("rayrag-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "rayrag" / "configs").rglob("*")
        if p.is_file()
    }
    assert {
        "rayrag/configs/demo.yaml",
        "rayrag/configs/default.yaml",
        "rayrag/configs/tune.yaml",
        "rayrag/configs/access/principals.yaml",
        "rayrag/configs/grafana/rayrag-dashboard.json",
    } <= shipped
    assert shipped <= names, sorted(shipped - names)
    assert "rayrag/governance/safety/weights.npz" in names
