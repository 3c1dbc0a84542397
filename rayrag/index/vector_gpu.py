"""The GPU side of `VectorIndex`: which structure a large index gets when it will live on a GPU,
and the two GPU builds (IVF's k-means assignment, CAGRA).

faiss has no GPU HNSW, so an index headed for a GPU gets `index.gpu_large_index` instead of
HNSW at or above `exact_threshold`: `IVF{4 sqrt(n)},Flat`, whose k-means assignment runs on a
GPU flat index, or a CAGRA graph (Ootomo et al. 2024, "CAGRA: Highly Parallel Graph
Construction and Approximate Nearest Neighbor Search for GPUs") built by `GpuIndexCagra` and
copied into a CPU `IndexHNSWCagra`. The CPU index stays the source of truth either way.

    >>> choose_factory(1_000_000, IndexConfig(), gpus=1)
    'IVF4000,Flat'
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from rayrag.config import IndexConfig
from rayrag.errors import ConfigError

CAGRA = "CAGRA"  # not a factory string: built through GpuIndexCagra by `build_cagra`


def ivf_nlist(n: int) -> int:
    """IVF lists for n vectors: ~4 sqrt(n), the faiss guidelines' low end (1M -> 4000)."""
    return max(1, round(4 * math.sqrt(n)))


def choose_factory(n: int, config: IndexConfig, gpus: int) -> str:
    """The FAISS structure for n vectors: `index.factory` if set, exact `Flat` below
    `exact_threshold`, else `HNSW{m},Flat`, unless the index will go to one of `gpus` GPUs
    (`use_gpu` not 'never'), where faiss has no HNSW: then `index.gpu_large_index` decides.

    >>> (
    ...     choose_factory(1_000_000, IndexConfig(), gpus=1),
    ...     choose_factory(1_000_000, IndexConfig(), gpus=0),
    ... )
    ('IVF4000,Flat', 'HNSW32,Flat')
    """
    if config.factory:
        return config.factory
    if n < config.exact_threshold:
        return "Flat"
    if gpus > 0 and config.use_gpu != "never":
        if config.gpu_large_index == "ivf":
            return f"IVF{ivf_nlist(n)},Flat"
        if config.gpu_large_index == "cagra":
            if not hasattr(faiss, "GpuIndexCagra"):
                raise ConfigError(
                    "index.gpu_large_index is 'cagra' but this faiss build has no GpuIndexCagra "
                    "(a cuVS build has it); use 'ivf' (index.gpu_large_index)"
                )
            return CAGRA
    return f"HNSW{config.hnsw_m},Flat"


def gpu_flat(resources: object, dim: int) -> faiss.Index:
    """An inner-product flat index on GPU 0: what IVF training clusters through there."""
    return faiss.index_cpu_to_gpu(resources, 0, faiss.IndexFlat(dim, faiss.METRIC_INNER_PRODUCT))


def build_cagra(
    resources: object, dim: int, config: IndexConfig, vectors: np.ndarray, ids: np.ndarray
) -> faiss.Index:
    """A CAGRA graph built on the GPU, copied into a CPU `IndexHNSWCagra` with upper levels
    added (`base_level_only=False`), so the CPU copy searches, saves, grows and rebuilds like
    any HNSW, under an `IndexIDMap2` holding the caller's ids; `VectorIndex._sync_gpu` clones
    it back to a `GpuIndexCagra` for search."""
    gpu_config = faiss.GpuIndexCagraConfig()
    gpu_config.graph_degree = 2 * config.hnsw_m  # HNSW's base level holds 2 M links
    gpu_config.intermediate_graph_degree = 4 * config.hnsw_m
    gpu = faiss.GpuIndexCagra(resources, dim, faiss.METRIC_INNER_PRODUCT, gpu_config)
    gpu.train(vectors)  # builds the graph over these vectors (internal ids 0..n-1)
    graph = faiss.IndexHNSWCagra()
    graph.base_level_only = False
    graph.hnsw.efConstruction = config.hnsw_ef_construction
    gpu.copyTo(graph)
    del gpu
    index = faiss.IndexIDMap2(graph)
    faiss.copy_array_to_vector(ids, index.id_map)  # row i of `vectors` is internal id i
    index.ntotal = graph.ntotal
    index.construct_rev_map()
    return index
