"""The retrieval bench's pieces at toy sizes: data, recall arithmetic, output shape (no timings)."""

from __future__ import annotations

import numpy as np

from rayrag.bench import retrieval


def test_recall_at_k_counts_shared_ids_and_ignores_padding():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, -1], [5, 6, 7, 8]])
    assert retrieval.recall_at_k(found, truth) == (2 / 4 + 4 / 4) / 2
    assert retrieval.recall_at_k(np.full((1, 2), -1), np.array([[-1, -1]])) == 0.0


def test_synthetic_vectors_are_unit_clustered_and_reproducible():
    a = retrieval.synthetic_vectors(600, seed=1, n_topics=6, chunk=250)
    assert a.shape == (600, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(
        a, retrieval.synthetic_vectors(600, seed=1, n_topics=6, chunk=250)
    )
    # Clustered, unlike uniform unit vectors whose nearest neighbour in 384-d sits near 0.
    sims = a[:50] @ a[50:].T
    assert np.median(sims.max(axis=1)) > 0.5


def test_bench_size_and_acl_report_the_documented_fields():
    result = retrieval.bench_size(
        n=3000, n_queries=40, n_flat_queries=20, n_calibration=20, rounds=1
    )
    index, queries = result.pop("_index"), result.pop("_queries")
    assert result["ann_factory"] == "IVF64,Flat" and index.ntotal == 3000
    assert result["nprobe"] in (*retrieval.NPROBE_LADDER, 64)
    assert 0.0 <= result["recall_at_10"] <= 1.0 and result["ann_vs_flat_qps"] > 0
    acl = retrieval.bench_acl(index, queries, rounds=1, single_queries=3)
    assert acl["filtered_full_rows"] and acl["filtered_all_allowed"] and acl["ratio"] > 0
    assert retrieval._label(1_000_000) == "1m" and retrieval._label(100_000) == "100k"


def test_bm25_bench_reports_masked_hits_only():
    texts = retrieval.synthetic_texts(500, seed=2)
    assert len(texts) == 500 and all(len(t.split()) == 60 for t in texts)
    assert texts == retrieval.synthetic_texts(500, seed=2)
    result = retrieval.bench_bm25(2000, n_queries=10, rounds=1)
    assert result["filtered_all_allowed"] and result["ratio"] > 0 and result["passages"] == 2000
    assert set(result["qps"]) == {"unfiltered", "filtered"}
