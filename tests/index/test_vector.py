"""VectorIndex against brute-force numpy: exactness, HNSW recall, ACL filtering, persistence."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from rayrag.config import IndexConfig
from rayrag.errors import AccessDenied, BundleError, ConfigError
from rayrag.index.vector import PAD_ID, AllowedIds, VectorIndex

DIM = 16


def unit_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(base: np.ndarray, base_ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ base.T  # (nq, n)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return base_ids[order]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return unit_vectors(1000, seed=0), unit_vectors(20, seed=1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def test_flat_equals_brute_force(data):
    base, queries = data
    ids = np.arange(1000, dtype=np.int64) * 7 + 3  # ids are not row numbers
    index = VectorIndex(IndexConfig(), dim=DIM).build(base, ids)
    assert index.factory_string == "Flat" and index.ntotal == 1000
    scores, found = index.search(queries, k=10)
    assert scores.shape == found.shape == (20, 10) and scores.dtype == np.float32
    np.testing.assert_array_equal(found, brute_force(base, ids, queries, 10))
    np.testing.assert_allclose(scores[:, 0], np.max(queries @ base.T, axis=1), rtol=1e-5)


def test_hnsw_above_threshold_has_high_recall(data):
    base, queries = data
    index = VectorIndex(IndexConfig(exact_threshold=100, hnsw_m=16), dim=DIM).build(base)
    assert index.factory_string == "HNSW16,Flat"
    _, found = index.search(queries, k=10)
    assert recall(found, brute_force(base, np.arange(1000), queries, 10)) >= 0.95


def test_ivf_factory_override_is_trained_and_bounded(data):
    base, queries = data
    index = VectorIndex(IndexConfig(factory="IVF4,Flat"), dim=DIM).build(base)
    assert index.factory_string == "IVF4,Flat"
    _, found = index.search(queries, k=5)
    assert (found >= 0).all()
    assert index.remove_ids(np.arange(0, 1000, 2)) == 500 and index.ntotal == 500
    _, after = index.search(queries, k=5, allowed_ids=np.arange(1000))
    assert (after >= 0).all() and (after % 2 == 1).all()
    small = VectorIndex(IndexConfig(factory="IVF64,Flat"), dim=DIM).build(base[:100])
    assert small.factory_string == "IVF2,Flat"  # 100 vectors support 2 lists of >= 39


@pytest.mark.parametrize(
    "config",
    [IndexConfig(), IndexConfig(exact_threshold=100, hnsw_m=16), IndexConfig(factory="IVF8,Flat")],
    ids=["flat", "hnsw", "ivf"],
)
def test_allowed_ids_filter_inside_search_without_recall_loss(data, config):
    base, queries = data
    index = VectorIndex(config, dim=DIM).build(base)
    rng = np.random.default_rng(2)
    for n_allowed in (3, 40, 400):
        allowed = rng.choice(1000, size=n_allowed, replace=False)
        scores, found = index.search(queries, k=10, allowed_ids=allowed)
        returned = found[found != PAD_ID]
        assert np.isin(returned, allowed).all()
        # Full rows whenever enough allowed vectors exist: filtering is not a post-filter.
        assert ((found != PAD_ID).sum(axis=1) == min(10, n_allowed)).all()
        truth = brute_force(base[allowed], allowed, queries, min(10, n_allowed))
        if index.factory_string == "Flat":  # exact
            np.testing.assert_array_equal(found[:, : truth.shape[1]], truth)
        elif index.factory_string.startswith("HNSW"):
            assert recall(found[:, : truth.shape[1]], truth) >= 0.9
        # IVF's recall is set by nprobe, filtered or not; full rows are what filtering owes.
        if n_allowed < 10:  # padding is at the end, id -1 and score -inf
            assert (found[:, n_allowed:] == PAD_ID).all() and np.isneginf(
                scores[:, n_allowed:]
            ).all()


def test_post_check_raises_on_forbidden_hit_with_counts_only(data, caplog):
    # The second line of defence, fed a result the selector should never have let through.
    index = VectorIndex(IndexConfig(), dim=DIM).build(data[0][:10])
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3, 0.2]], dtype=np.float32)
    ids = np.array([[5, 99, 7, -1], [7, 5, -1, -1]])
    with caplog.at_level("ERROR", logger="rayrag.index.vector"):
        with pytest.raises(AccessDenied, match="returned 1 results outside") as info:
            index._fail_closed(scores, ids, allowed=AllowedIds(np.array([5, 7])))
    assert "99" not in str(info.value) and "across 2 queries" in str(info.value)
    assert caplog.messages == ["search returned 1 results outside allowed_ids across 2 queries"]
    # Clean results pass through untouched (padding included).
    kept_scores, kept = index._fail_closed(
        scores[1:], ids[1:], allowed=AllowedIds(np.array([5, 7]))
    )
    np.testing.assert_array_equal(kept, [[7, 5, PAD_ID, PAD_ID]])
    np.testing.assert_allclose(kept_scores[0, :2], [0.5, 0.4])
    assert np.isneginf(kept_scores[0, 2:]).all()


def test_search_knobs_come_from_config_at_search_and_load(tmp_path, data):
    base, queries = data
    ivf = VectorIndex(IndexConfig(factory="IVF16,Flat"), dim=DIM).build(base)
    assert faiss.extract_index_ivf(ivf._index).nprobe == 4  # ceil(sqrt(16)) when unset
    path = tmp_path / "ivf.faiss"
    ivf.save(path)
    exact = VectorIndex.load(path, IndexConfig(factory="IVF16,Flat", nprobe=16), dim=DIM)
    assert exact._params(10, None).nprobe == 16
    # capped at nlist
    assert (
        VectorIndex.load(path, IndexConfig(nprobe=999), dim=DIM)._nprobe(
            faiss.extract_index_ivf(exact._index)
        )
        == 16
    )
    # Probing every list makes IVF-Flat exact, filtered or not.
    truth = brute_force(base, np.arange(1000), queries, 10)
    np.testing.assert_array_equal(exact.search(queries, 10)[1], truth)
    allowed = np.arange(0, 1000, 2)
    np.testing.assert_array_equal(
        exact.search(queries, 10, allowed)[1], brute_force(base[allowed], allowed, queries, 10)
    )
    hnsw = VectorIndex(IndexConfig(exact_threshold=100, hnsw_m=8, hnsw_ef_search=200), dim=DIM)
    hnsw.build(base)
    assert hnsw._params(10, None).efSearch == 200 and hnsw._params(500, None).efSearch == 500


@pytest.mark.parametrize("sparse", [False, True], ids=["bitmap", "hash-set"])
def test_allowed_ids_selector_forms_agree(data, sparse):
    # Dense ids get a bitmap selector, sparse ones a hash set; both filter identically.
    base, queries = data
    ids = np.arange(1000, dtype=np.int64) * (10**9 if sparse else 3)
    allowed_rows = np.random.default_rng(5).choice(1000, size=100, replace=False)
    allowed = AllowedIds(np.concatenate([ids[allowed_rows], ids[allowed_rows[:5]], [-4]]))
    assert allowed.count == 100 and (allowed._mask is None) == sparse
    assert allowed.contains(ids).sum() == 100 and not allowed.contains(np.array([-1, 1])).any()
    index = VectorIndex(IndexConfig(), dim=DIM).build(base, ids)
    _, found = index.search(queries, k=10, allowed_ids=ids[allowed_rows])
    truth = brute_force(base[allowed_rows], ids[allowed_rows], queries, 10)
    np.testing.assert_array_equal(found, truth)
    # A prebuilt selector (what DenseRetriever caches per group set) filters the same way.
    np.testing.assert_array_equal(index.search(queries, k=10, allowed_ids=allowed)[1], truth)


def test_empty_allowed_ids_returns_nothing(data):
    base, queries = data
    index = VectorIndex(IndexConfig(), dim=DIM).build(base)
    _, found = index.search(queries[:2], k=3, allowed_ids=np.array([], dtype=np.int64))
    assert (found == PAD_ID).all()


@pytest.mark.parametrize(
    "config", [IndexConfig(), IndexConfig(exact_threshold=10, hnsw_m=8)], ids=["flat", "hnsw"]
)
def test_remove_ids(data, config):
    base, queries = data
    index = VectorIndex(config, dim=DIM).build(base[:300])
    _, before = index.search(queries, k=5)
    gone = np.unique(before[:, 0])
    assert index.remove_ids(np.concatenate([gone, [10_000]])) == len(gone)
    assert index.ntotal == 300 - len(gone)
    _, after = index.search(queries, k=5)
    assert not np.isin(after, gone).any() and (after >= 0).all()
    keep = np.setdiff1d(np.arange(300), gone)
    assert recall(after, brute_force(base[keep], keep, queries, 5)) >= 0.95
    index.add(base[gone], gone)  # incremental re-add under the same ids
    assert index.ntotal == 300
    with pytest.raises(ValueError, match="already in the index"):
        index.add(base[:1], np.array([0]))


def test_save_load_round_trip(tmp_path, data):
    base, queries = data
    for config in (IndexConfig(), IndexConfig(exact_threshold=10, hnsw_m=8)):
        index = VectorIndex(config, dim=DIM).build(base[:200], np.arange(200) + 1000)
        path = tmp_path / "sub" / "vectors.faiss"
        index.save(path)
        loaded = VectorIndex.load(path, config, dim=DIM)
        assert loaded.ntotal == 200 and loaded.factory_string == index.factory_string
        for allowed in (None, np.arange(1000, 1050)):
            np.testing.assert_array_equal(
                loaded.search(queries, 5, allowed)[1], index.search(queries, 5, allowed)[1]
            )
    assert [p.name for p in path.parent.iterdir()] == ["vectors.faiss"]  # no temp file left


def test_load_missing_or_corrupt_is_one_line_error(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        VectorIndex.load(tmp_path / "nope.faiss")
    bad = tmp_path / "bad.faiss"
    bad.write_bytes(b"not a faiss index")
    with pytest.raises(BundleError, match="corrupt") as info:
        VectorIndex.load(bad)
    assert "\n" not in str(info.value)


def test_validation(data):
    base, queries = data
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        VectorIndex(IndexConfig(), dim=DIM).build(base[:, :8])
    index = VectorIndex(IndexConfig(), dim=DIM).build(base[:50])
    with pytest.raises(ValueError, match="k must be > 0, got 0"):
        index.search(queries, k=0)
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        index.search(queries[:, :4], k=1)
    assert index.search(queries[0], k=2)[1].shape == (1, 2)  # a single 1-D query is accepted
    with pytest.raises(ConfigError, match="index.factory"):
        VectorIndex(IndexConfig(factory="NotAnIndex"), dim=DIM).build(base)
    with pytest.raises(BundleError, match="build"):
        VectorIndex(IndexConfig(), dim=DIM).search(queries, k=1)


def test_use_gpu_always_without_gpu_is_config_error(data):
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="use_gpu"):
        VectorIndex(IndexConfig(use_gpu="always"), dim=DIM).build(data[0])


@pytest.mark.gpu
def test_gpu_flat_matches_cpu(data):
    if faiss.get_num_gpus() == 0:
        pytest.skip("faiss sees no GPU")
    base, queries = data
    gpu = VectorIndex(IndexConfig(use_gpu="always"), dim=DIM).build(base)
    cpu = VectorIndex(IndexConfig(use_gpu="never"), dim=DIM).build(base)
    assert gpu.on_gpu and not cpu.on_gpu
    np.testing.assert_array_equal(gpu.search(queries, 10)[1], cpu.search(queries, 10)[1])
    allowed = np.arange(0, 1000, 3)
    np.testing.assert_array_equal(
        gpu.search(queries, 10, allowed)[1], cpu.search(queries, 10, allowed)[1]
    )
    gpu.remove_ids(np.arange(10))
    assert gpu.on_gpu and gpu.ntotal == 990


# -- large indexes when a GPU is in use ------------------------------------------------------------


def test_choose_factory_by_size_and_where_the_index_lives():
    from rayrag.index.vector import choose_factory

    cfg = IndexConfig()
    assert choose_factory(49_999, cfg, gpus=1) == "Flat"
    assert choose_factory(1_000_000, cfg, gpus=0) == "HNSW32,Flat"  # CPU: HNSW as before
    assert choose_factory(1_000_000, cfg, gpus=1) == "IVF4000,Flat"  # faiss has no GPU HNSW
    assert choose_factory(60_000, cfg, gpus=1) == "IVF980,Flat"  # ~4 sqrt(n)
    assert choose_factory(1_000_000, IndexConfig(use_gpu="never"), gpus=1) == "HNSW32,Flat"
    assert (
        choose_factory(1_000_000, IndexConfig(gpu_large_index="hnsw_cpu"), gpus=1) == "HNSW32,Flat"
    )
    assert choose_factory(1_000_000, IndexConfig(factory="IVF64,Flat"), gpus=1) == "IVF64,Flat"
    cagra = IndexConfig(gpu_large_index="cagra")
    assert choose_factory(1_000_000, cagra, gpus=0) == "HNSW32,Flat"
    if hasattr(faiss, "GpuIndexCagra"):  # cuVS builds
        assert choose_factory(1_000_000, cagra, gpus=1) == "CAGRA"
    else:
        with pytest.raises(ConfigError, match=r"GpuIndexCagra.*\(index.gpu_large_index\)"):
            choose_factory(1_000_000, cagra, gpus=1)


def test_large_index_without_gpu_stays_hnsw_and_always_still_fails(data):
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    base, queries = data
    index = VectorIndex(IndexConfig(exact_threshold=500), dim=DIM).build(base)
    assert index.factory_string == "HNSW32,Flat" and not index.on_gpu
    with pytest.raises(ConfigError, match=r"^index.use_gpu is 'always'.*\(index.use_gpu\)$"):
        VectorIndex(IndexConfig(exact_threshold=500, use_gpu="always"), dim=DIM).build(base)


def test_cpu_view_shares_the_cpu_index_without_a_gpu_clone(data):
    base, queries = data
    index = VectorIndex(IndexConfig(factory="IVF16,Flat", nprobe=4), dim=DIM).build(base)
    view = index.cpu_view()
    assert not view.on_gpu and view.ntotal == index.ntotal and view.factory_string == "IVF16,Flat"
    assert view._index is index._index  # shared: the view copies nothing
    for got, want in zip(view.search(queries, 5), index.search(queries, 5), strict=True):
        np.testing.assert_array_equal(got, want)
    assert view.config.nprobe == 4 and view.config.use_gpu == "never"


def _gpu_large(seed: int, n: int = 60_000, dim: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors (topics, as embeddings are), base (n, dim) and 200 queries:
    uniform random vectors in 64-d have no neighbourhoods for IVF or a graph to find."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((256, dim)).astype(np.float32)
    x = centres[rng.integers(0, 256, n + 200)] + 0.35 * rng.standard_normal((n + 200, dim)).astype(
        np.float32
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


@pytest.mark.gpu
@pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="faiss sees no GPU")
def test_gpu_large_index_is_ivf_matches_its_cpu_copy_and_round_trips(tmp_path):
    base, queries = _gpu_large(seed=3)
    index = VectorIndex(IndexConfig(use_gpu="always"), dim=64).build(base)
    assert index.on_gpu and index.factory_string == "IVF980,Flat"
    gpu_ids = index.search(queries, 10)[1]
    cpu_ids = index.cpu_view().search(queries, 10)[1]
    assert recall(gpu_ids, cpu_ids) >= 0.99  # same lists probed; only float ties may differ
    assert recall(gpu_ids, brute_force(base, np.arange(len(base)), queries, 10)) >= 0.8
    allowed = np.arange(0, len(base), 7)
    filtered = index.search(queries, 10, allowed)[1]  # runs on the CPU copy (see search())
    assert np.isin(filtered, allowed).all()
    index.save(tmp_path / "ivf.faiss")
    loaded = VectorIndex.load(tmp_path / "ivf.faiss", IndexConfig(use_gpu="always"), dim=64)
    assert loaded.on_gpu and loaded.factory_string == "IVF980,Flat"
    np.testing.assert_array_equal(loaded.cpu_view().search(queries, 10)[1], cpu_ids)
    assert recall(loaded.search(queries, 10)[1], gpu_ids) >= 0.99


@pytest.mark.gpu
@pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="faiss sees no GPU")
def test_gpu_large_index_cagra_builds_on_gpu_or_names_the_flag(tmp_path):
    base, queries = _gpu_large(seed=4, n=20_000)
    config = IndexConfig(use_gpu="always", gpu_large_index="cagra", exact_threshold=10_000)
    if not hasattr(faiss, "GpuIndexCagra"):  # classic faiss-gpu wheels: one clear line
        with pytest.raises(ConfigError, match="index.gpu_large_index"):
            VectorIndex(config, dim=64).build(base)
        return
    ids = np.arange(len(base), dtype=np.int64) * 3 + 1
    index = VectorIndex(config, dim=64).build(base, ids)
    assert index.factory_string == "CAGRA" and index.ntotal == len(base)
    truth = brute_force(base, ids, queries, 10)
    assert recall(index.search(queries, 10)[1], truth) >= 0.8
    assert recall(index.cpu_view().search(queries, 10)[1], truth) >= 0.8  # the CPU HNSW copy
    index.save(tmp_path / "cagra.faiss")
    loaded = VectorIndex.load(tmp_path / "cagra.faiss", IndexConfig(use_gpu="never"), dim=64)
    assert loaded.factory_string == "CAGRA" and recall(loaded.search(queries, 10)[1], truth) >= 0.8
