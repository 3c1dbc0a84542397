# rayrag — the commands a user runs. `make demo`, `make test`.
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
TORCH_PIN := torch==2.13.0
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo serve browser test test-fast bench lint clean

# Idempotent: the stamp is newer than pyproject.toml when nothing changed, so a second run is instant.
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel lies on disk; a looser pin pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/rayrag demo --out .rayrag/demo

# The serve graph on 127.0.0.1:8000 over the demo's bundle and model, with the environment
# `make demo` wrote (demo-only secrets, its MLflow store, an API key); Ctrl-C stops it.
serve: venv
	@test -f .rayrag/demo/demo.env || { echo "error: no .rayrag/demo/demo.env: run make demo first" >&2; exit 2; }
	. .rayrag/demo/demo.env && exec $(BIN)/rayrag serve --config demo

# The web page's browser test drives Debian's chromium with its chromedriver (Selenium).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }; \
	else echo "error: the browser test needs /usr/bin/chromium and /usr/bin/chromedriver: run 'sudo apt-get install chromium chromium-driver'" >&2; exit 2; fi

test: venv browser
	$(BIN)/python -m pytest -q --timeout=900 --durations=15 tests

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow" tests

# serve, scale: on the demo's bundle and model
BENCHES := redaction ingest retrieval kg moe softmax decode moe-quality ep ep-memory serve scale openai

# Every bench at its quick size; the full sizes (the figures that count) are `rayrag bench NAME --json`.
bench: demo
	for name in $(BENCHES); do $(BIN)/rayrag bench $$name --quick --json || exit 1; done

lint: venv
	$(BIN)/ruff check rayrag tests
	$(BIN)/ruff format --check rayrag tests

clean:
	rm -rf .rayrag build *.egg-info mlflow.db mlruns
