"""scripts/gpu_check.sh and rayrag.bench.gpu_check: the no-GPU exit, the doc block, the table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import pytest
import torch

from rayrag.bench.gpu_check import BEGIN, END, format_block, main, replace_block, row
from rayrag.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


NO_GPU = (
    not torch.cuda.is_available()
    and faiss.get_num_gpus() == 0
    and shutil.which("nvidia-smi") is None
)


@pytest.mark.skipif(not NO_GPU, reason="a GPU is visible: scripts/gpu_check.sh measures instead")
def test_script_without_a_gpu_says_so_exits_0_and_leaves_the_doc_alone():
    doc = REPO / "docs" / "PERFORMANCE.md"
    before = doc.read_bytes()
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "gpu_check: no NVIDIA GPU visible (nvidia-smi absent or sees none): nothing to measure; "
        "the CPU paths are covered by make test"
    ]
    assert doc.read_bytes() == before
    assert (REPO / "scripts" / "gpu_check.sh").stat().st_mode & 0o111  # executable


@pytest.mark.skipif(not NO_GPU, reason="a GPU is visible")
def test_module_without_a_gpu_prints_one_line_and_writes_nothing(tmp_path, capsys):
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text(f"x\n{BEGIN}\nold\n{END}\n")
    assert main(["--write", str(doc), "--json"]) == 0
    assert capsys.readouterr().out == (
        "gpu_check: no NVIDIA GPU visible (torch.cuda=False, faiss GPUs=0): "
        "nothing to measure; the CPU paths are covered by make test\n"
    )
    assert doc.read_text() == f"x\n{BEGIN}\nold\n{END}\n"


def test_the_shipped_doc_has_exactly_one_block_saying_not_yet_measured():
    text = (REPO / "docs" / "PERFORMANCE.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    block = text[text.index(BEGIN) : text.index(END)]
    # placeholder, or real figures
    assert "Not yet measured on a GPU" in block or "| what |" in block


def test_replace_block_replaces_only_the_marked_block():
    text = f"# Title\n\nbefore\n{BEGIN}\nold line 1\nold line 2\n{END}\nafter\n"
    new = replace_block(text, "new figures\n")
    assert new == f"# Title\n\nbefore\n{BEGIN}\nnew figures\n{END}\nafter\n"
    assert replace_block(new, "new figures") == new  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "no markers at all\n",
        f"{BEGIN}\nonly the start\n",
        f"{END}\nreversed\n{BEGIN}\n",
        f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n",
    ],
)
def test_replace_block_fails_clearly_without_one_ordered_pair_of_markers(text):
    with pytest.raises(ConfigError, match=r"gpu_check:begin.*gpu_check:end.*\(--write\)"):
        replace_block(text, "x")


def _synthetic() -> dict:
    rows = [
        row(
            "gpu_vs_cpu_flat_search_b1",
            "Flat 100,000 search, batch 1",
            "ms/query (median)",
            0.25,
            5.0,
            lower_is_better=True,
        ),
        row(
            "gpu_vs_cpu_flat_search_b256",
            "Flat 100,000 search, batch 256",
            "queries/s",
            90000.0,
            3000.0,
        ),
        row(
            "recall_gpu_vs_cpu_flat",
            "Flat 100,000 top-10 overlap, GPU vs CPU",
            "fraction",
            0.999,
            1.0,
            speedup=False,
        ),
    ]
    return {
        "environment": {
            "gpu": "NVIDIA H200",
            "gpus": "1",
            "driver": "570.1",
            "cuda": "12.8",
            "torch": "2.13.0",
            "faiss": "1.15.1",
            "date": "2026-11-29",
        },
        "rows": rows,
        "moe": {
            "autocast_bf16": {
                "router_logits_dtype": "bfloat16",
                "output_dtype": "float32",
                "dispatch": "grouped_mm",
            }
        },
    }


def test_rows_compute_speedups_the_right_way_round():
    rows = _synthetic()["rows"]
    assert rows[0]["speedup"] == 20.0  # a time: CPU / GPU
    assert rows[1]["speedup"] == 30.0  # a rate: GPU / CPU
    assert rows[2]["speedup"] is None
    json.dumps(rows)  # plain JSON


def test_format_block_is_a_markdown_table_with_the_environment():
    block = format_block(_synthetic())
    lines = block.splitlines()
    assert lines[0].startswith(
        "Measured 2026-11-29 on NVIDIA H200 (driver 570.1, CUDA 12.8, torch 2.13.0, faiss 1.15.1)"
    )
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 3 and all(line.count("|") == 6 for line in table)
    assert "| Flat 100,000 search, batch 1 | ms/query (median) | 0.25 | 5 | 20x |" in table
    assert table[-1].endswith("| 0.999 | 1 | — |")
    assert "router's logits came back bfloat16" in block
    doc = replace_block(f"a\n{BEGIN}\n{END}\nb\n", block)
    assert doc.startswith(f"a\n{BEGIN}\nMeasured") and doc.endswith(f"{END}\nb\n")


def test_write_doc_is_atomic_and_keeps_the_rest(tmp_path):
    from rayrag.bench.gpu_check import write_doc

    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text(f"intro\n{BEGIN}\nold\n{END}\noutro\n")
    write_doc(doc, _synthetic())
    text = doc.read_text()
    assert text.startswith(f"intro\n{BEGIN}\nMeasured") and text.endswith(f"{END}\noutro\n")
    assert [p.name for p in tmp_path.iterdir()] == ["PERFORMANCE.md"]  # no temp file left
    broken = tmp_path / "broken.md"
    broken.write_text("no block\n")
    with pytest.raises(ConfigError):
        write_doc(broken, _synthetic())
    assert broken.read_text() == "no block\n"


def test_module_runs_as_a_script():
    done = subprocess.run(
        [sys.executable, "-m", "rayrag.bench.gpu_check", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0 and "--write" in done.stdout
