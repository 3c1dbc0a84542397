"""The sweep's bundle cache: keys, dedupe, reuse, concurrent builds as Ray tasks, failures."""

from __future__ import annotations

import json

import pytest

from rayrag.config import resolve_config
from rayrag.index.bundle import IndexBundle
from rayrag.tune.bundles import BundleCache, bundle_key, corpus_digest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Redaction off: Presidio's load per build would triple the test's time, and the cache
# does not care what the stages do.
FAST = ["tracking.enabled=false", "governance.redaction.enabled=false", "chunking.chunk_overlap=8"]


def _config(*overrides: str):
    return resolve_config("demo", [*FAST, *overrides])


@pytest.fixture(scope="module")
def corpus(demo_corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("tune-corpus") / "six.jsonl"
    lines = demo_corpus.corpus_path.read_text(encoding="utf-8").splitlines()[:6]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_keys_differ_by_chunk_size_and_corpus_but_not_by_threads(corpus, tmp_path):
    digest = corpus_digest(corpus)
    small, large = _config("chunking.chunk_size=32"), _config("chunking.chunk_size=128")
    assert bundle_key(small, digest) != bundle_key(large, digest)
    other = tmp_path / "other.jsonl"
    other.write_text(
        corpus.read_text(encoding="utf-8").replace("company", "firm"), encoding="utf-8"
    )
    assert corpus_digest(other) != digest
    assert bundle_key(small, corpus_digest(other)) != bundle_key(small, digest)
    assert bundle_key(
        small.with_overrides(["embedding.num_threads=1", "embedding.batch_size=8"]), digest
    ) == bundle_key(small, digest)


def test_prebuild_builds_each_distinct_bundle_once_then_reuses(ray_local, corpus, tmp_path):
    small, large = _config("chunking.chunk_size=32"), _config("chunking.chunk_size=128")
    cache = BundleCache(tmp_path / "bundles")
    messages: list[str] = []
    first = cache.prebuild(corpus, [small, large, small], progress=messages.append)
    keys = {bundle_key(c, corpus_digest(corpus)) for c in (small, large)}
    assert set(first.built) == keys and first.reused == [] and first.failed == {}
    assert all(cache.lookup(key) == first.paths[key] for key in keys)
    counts = {
        c.chunking.chunk_size: IndexBundle.load(
            cache.lookup(bundle_key(c, corpus_digest(corpus)))
        ).manifest["counts"]
        for c in (small, large)
    }
    # 30-65 word documents: one chunk each
    assert counts[128]["chunks"] == counts[128]["documents"] == 6
    assert counts[32]["chunks"] > counts[128]["chunks"]
    finished = [m for m in messages if "chunk_size=" in m]
    assert len(finished) == 2 and all(" chunks in " in m for m in finished)

    second = cache.prebuild(corpus, [large, small], progress=messages.append)
    assert second.built == [] and set(second.reused) == keys and second.paths == first.paths
    assert json.loads(json.dumps(second.to_json()))["counts"] == {
        "built": 0,
        "reused": 2,
        "failed": 0,
    }


def test_a_failing_build_is_reported_while_the_others_build(ray_local, corpus, tmp_path):
    # This one redacts: the workers find the redaction keys the driver's environment holds.
    good = _config("chunking.chunk_size=64", "governance.redaction.enabled=true")
    broken = _config("chunking.chunk_size=64", "embedding.model_path=/nonexistent/model")
    cache = BundleCache(tmp_path / "bundles")
    report = cache.prebuild(corpus, [good, broken], progress=lambda _: None)
    good_key, broken_key = (bundle_key(c, corpus_digest(corpus)) for c in (good, broken))
    assert report.built == [good_key] and cache.lookup(good_key) is not None
    assert cache.lookup(broken_key) is None
    assert IndexBundle.load(cache.lookup(good_key)).pii_report()["counts"]
    message = report.failed[broken_key]
    assert "embedding model directory not found" in message and "\n" not in message
    assert report.to_json()["counts"] == {"built": 1, "reused": 0, "failed": 1}
