"""Shared fixtures: offline environment, demo-only secrets, a tiny Ray, the demo corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Test-only secrets; production reads them from its secret store.
os.environ.setdefault("RAYRAG_HMAC_KEY", "test-only-hmac-key-0123456789")
os.environ.setdefault("RAYRAG_ENCRYPTION_KEY", "test-key-0123456789abcdef0123456"[:32])

REPO = Path(__file__).resolve().parents[1]
# Small subsets of the public data sets, shipped with the tests (tests/fixtures/README.md).
FIXTURES = REPO / "tests" / "fixtures"


def pytest_collection_modifyitems(config, items):
    """Tests marked `serve_local_mode` run last: Serve's local testing mode runs the ingress's
    FastAPI app in this process and leaves uvicorn state on it that Ray can no longer pickle,
    so any real `serve.run` of the app (in any module) must come before them."""
    items.sort(key=lambda item: item.get_closest_marker("serve_local_mode") is not None)


@pytest.fixture(scope="session")
def fixture_data() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"test data not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session, with explicit CPUs (logical CPUs can lie)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    from rayrag.data.demo_corpus import generate_demo_corpus

    return generate_demo_corpus(tmp_path_factory.mktemp("demo-data"), seed=0)
