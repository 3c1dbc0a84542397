"""`rayrag tune` user errors: one line on stderr, exit 2, before any Ray or training starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def rayrag(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rayrag.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_missing_space_file(tmp_path):
    one_line_error(
        rayrag("tune", "--space", str(tmp_path / "nope.yaml"), cwd=tmp_path),
        "search space file not found",
    )


def test_unknown_knob_key(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("knobs: {depth: {key: retrieval.depth, values: [2]}}\n")
    one_line_error(
        rayrag("tune", "--space", str(space), cwd=tmp_path), "unknown config key 'retrieval.depth'"
    )


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ([], "no alias champion; train one first"),  # an empty registry
        (["--base", "missing-model-dir"], "base generator not found"),
    ],
)
def test_no_base_generator(tmp_path, demo_corpus, extra, needle):
    args = [
        "tune",
        "--space",
        str(REPO / "rayrag" / "configs" / "tune.yaml"),
        "--smoke",
        "--corpus",
        str(demo_corpus.corpus_path),
        "--set",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "--out",
        str(tmp_path / "sweep"),
        *extra,
    ]
    one_line_error(rayrag(*args, cwd=tmp_path), needle)
    assert not (tmp_path / "sweep").exists()  # nothing half-written
