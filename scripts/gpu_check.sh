#!/usr/bin/env bash
# Prove rayrag's GPU paths on an NVIDIA machine in a few minutes: measure GPU vs CPU
# (FAISS search and build, MoE layer, expert shards) into docs/PERFORMANCE.md, then run the
# gpu-marked tests, which must all run (a skip there means a GPU path went unchecked).
# Without a GPU it says so in one line and exits 0: `make test` covers the CPU paths.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU visible (nvidia-smi absent or sees none): nothing to measure; the CPU paths are covered by make test"
    exit 0
fi
nvidia-smi -L

"$PYTHON" -m rayrag.bench.gpu_check --write docs/PERFORMANCE.md --json

report="$(mktemp)"
trap 'rm -f "$report"' EXIT
set +e
"$PYTHON" -m pytest -q -m gpu -rs tests 2>&1 | tee "$report"
status=${PIPESTATUS[0]}
set -e
if [[ $status -ne 0 ]]; then
    echo "gpu_check: gpu-marked tests failed (pytest exit $status)" >&2
    exit "$status"
fi
if grep -Eq '[0-9]+ skipped' "$report"; then
    echo "gpu_check: gpu-marked tests were skipped on a GPU machine: a GPU path went unchecked" >&2
    exit 1
fi
echo "gpu_check: GPU paths measured and tested"
