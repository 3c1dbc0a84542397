"""Dense retrieval over FAISS with access control enforced inside the search.

`VectorIndex` chooses the FAISS structure by corpus size (exact `Flat` below
`index.exact_threshold`, `HNSW{m},Flat` above) unless `index.factory` names one, keeps the
caller's int64 ids (chunk row ids) through `IndexIDMap2` (IVF keeps ids natively), and moves
to GPU through the faiss GPU API when one is present (large indexes headed there get IVF or
CAGRA instead of HNSW: `vector_gpu.py`). The CPU index stays the source of truth (what
`save()` writes); the GPU holds a clone.

Access control follows FAISS's filtered search: the principal's allowed ids become an
`IDSelector` passed in the search parameters, so disallowed vectors are skipped while the
k best allowed ones are collected (no post-filter recall loss). The selector is a bitmap
over the id range when ids are dense (chunk row ids are): building it is cheap even at 1M
ids, where sorting and hashing them into an `IDSelectorBatch` is not (measured:
docs/DECISIONS.md), and that cost is paid on every request. Sparse id ranges fall back to
`IDSelectorBatch`.

Where an approximate index under-fills a row (HNSW's beam or IVF's probed lists held fewer
than k allowed vectors) that row is re-run exhaustively over the allowed subset. Every
returned id is then checked against the allowed set again, and any id outside it raises
`AccessDenied` (fail closed: a selector that let something through is a bug, and a partial
answer would hide it).

Search-time knobs come from the config at every search, so a loaded index follows the
config it is opened with rather than whatever was saved: `hnsw_ef_search` (HNSW beam) and
`nprobe` (IVF lists probed; None = ceil(sqrt(nlist))).

Results are always (nq, k) arrays, best first; missing results are padded at the end of the
row with id -1 and score -inf, so callers read a row up to its first -1.

    >>> index = VectorIndex(IndexConfig(), dim=384).build(vectors)  # ids = row numbers
    >>> scores, ids = index.search(query_vectors, k=5, allowed_ids=np.array([3, 7, 42]))
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import faiss
import numpy as np

from rayrag.atomic import atomic_path
from rayrag.config import IndexConfig
from rayrag.errors import AccessDenied, BundleError, ConfigError
from rayrag.index.vector_gpu import CAGRA, build_cagra, choose_factory, gpu_flat

logger = logging.getLogger(__name__)

PAD_ID = -1
PAD_SCORE = np.float32(-np.inf)
_GPU_MAX_K = 2048  # faiss GPU k-selection limit; larger k searches on CPU
_BITMAP_MIN_IDS = 1 << 20  # below this id range a bitmap (128 KiB) is always fine
_BITMAP_IDS_PER_ALLOWED = 64  # sparser than this, a hash set beats a mostly empty bitmap


class AllowedIds:
    """A principal's allowed ids as a FAISS selector plus a vectorised membership test.

    >>> allowed = AllowedIds(np.array([3, 7, 42]))
    >>> allowed.count, allowed.contains(np.array([[7, 8]])).tolist()
    (3, [[True, False]])
    """

    def __init__(self, allowed_ids: np.ndarray) -> None:
        ids = np.asarray(allowed_ids, dtype=np.int64).ravel()
        ids = ids[ids >= 0]  # stored ids are >= 0, so negatives can match nothing
        self._mask: np.ndarray | None = None
        self._sorted: np.ndarray | None = None
        top = int(ids.max()) + 1 if len(ids) else 0
        if top <= max(_BITMAP_MIN_IDS, _BITMAP_IDS_PER_ALLOWED * len(ids)):
            mask = np.zeros(top, dtype=bool)
            mask[ids] = True
            self._mask = mask
            self.count = int(mask.sum())
            # faiss reads bit (id & 7) of byte (id >> 3): little bit order; it keeps a
            # reference to the array, so the bitmap lives as long as the selector.
            self.selector: faiss.IDSelector = faiss.IDSelectorBitmap(
                np.packbits(mask, bitorder="little")
            )
        else:
            self._sorted = np.unique(ids)
            self.count = len(self._sorted)
            self.selector = faiss.IDSelectorBatch(self._sorted)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean array shaped like `ids`: which are allowed (padding -1 never is)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._mask is not None:
            inside = (ids >= 0) & (ids < len(self._mask))
            return inside & self._mask[np.where(inside, ids, 0)]
        return np.isin(ids, self._sorted)


class VectorIndex:
    """Inner-product (cosine, on normalised vectors) index with ids and ACL filtering."""

    def __init__(self, config: IndexConfig | None = None, dim: int = 384) -> None:
        if dim <= 0:
            raise ConfigError(f"vector dim must be > 0, got {dim} (embedding.dim)")
        self.config = config or IndexConfig()
        self.dim = dim
        self._index: faiss.Index | None = None  # CPU copy: the source of truth, what save() writes
        self._gpu_index: faiss.Index | None = None
        self._gpu_resources: object | None = None
        self._factory = ""

    # ------------------------------------------------------------------ build
    def build(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> VectorIndex:
        """Create the index for `vectors` (ids default to row numbers) and add them."""
        vectors = self._as_matrix(vectors, "vectors")
        n = len(vectors)
        ids = np.arange(n, dtype=np.int64) if ids is None else self._as_ids(ids, n)
        factory = self._bound_nlist(choose_factory(n, self.config, faiss.get_num_gpus()), n)
        if factory == CAGRA:
            return self._build_cagra(vectors, ids)
        try:
            base = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ConfigError(
                f"invalid FAISS factory string {factory!r} (index.factory): {_first_line(exc)}"
            ) from None
        hnsw = _hnsw_of(base)
        if hnsw is not None:
            hnsw.hnsw.efConstruction = self.config.hnsw_ef_construction
        ivf = faiss.try_extract_index_ivf(base)
        # IVF stores ids itself and renumbers nothing on removal, so IndexIDMap2 (which
        # assumes removal compacts internal ids) must not wrap it. Everything else gets one.
        index = (
            base
            if ivf is not None or isinstance(base, faiss.IndexIDMap)
            else faiss.IndexIDMap2(base)
        )
        if not index.is_trained:
            if n == 0:
                raise ConfigError(
                    f"FAISS index {factory!r} needs training vectors, got 0 (index.factory)"
                )
            if ivf is not None and self._gpu_wanted():
                # k-means assignment is the cost of IVF training (measured: docs/DECISIONS.md);
                # a GPU flat index does it. faiss clusters through this if set.
                # (a local keeps it alive: the faiss field does not own what it points to)
                clustering = gpu_flat(self._resources(), self.dim)
                ivf.clustering_index = clustering
            try:
                index.train(vectors)
            except RuntimeError as exc:
                raise ConfigError(
                    f"cannot train FAISS index {factory!r} on {n} "
                    f"vectors (index.factory): {_first_line(exc)}"
                ) from None
            finally:
                if ivf is not None:
                    ivf.clustering_index = None  # not saved; do not keep the GPU pointer
        self._index, self._factory = index, factory
        self._apply_search_knobs()
        if n:
            index.add_with_ids(vectors, ids)
        self._sync_gpu()
        logger.info("built FAISS %s over %d vectors (dim %d)", factory, n, self.dim)
        return self

    def _build_cagra(self, vectors: np.ndarray, ids: np.ndarray) -> VectorIndex:
        self._index, self._factory = (
            build_cagra(self._resources(), self.dim, self.config, vectors, ids),
            CAGRA,
        )
        self._apply_search_knobs()
        self._sync_gpu()
        logger.info("built CAGRA over %d vectors (dim %d) on GPU", len(vectors), self.dim)
        return self

    @staticmethod
    def _bound_nlist(factory: str, n: int) -> str:
        # k-means wants >= 39 points per centroid (faiss warns below that, fails below 1).
        match = re.search(r"IVF(\d+)", factory)
        if match is None or n == 0:
            return factory
        nlist = int(match.group(1))
        bounded = max(1, min(nlist, n // 39))
        if bounded != nlist:
            logger.info("IVF nlist %d bounded to %d for %d vectors", nlist, bounded, n)
        return factory[: match.start(1)] + str(bounded) + factory[match.end(1) :]

    # --------------------------------------------------------------- mutation
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add vectors under new ids (incremental ingest). Ids must not be present yet."""
        index = self._require()
        vectors = self._as_matrix(vectors, "vectors")
        ids = self._as_ids(ids, len(vectors))
        if isinstance(index, faiss.IndexIDMap):
            # IndexIDMap2 keeps one vector per id; a duplicate would corrupt reconstruct().
            clash = np.isin(ids, faiss.vector_to_array(index.id_map))
            if clash.any():
                raise ValueError(
                    f"{int(clash.sum())} ids are already in the index; remove_ids them first"
                )
        if len(vectors):
            index.add_with_ids(vectors, ids)
            self._sync_gpu()

    def remove_ids(self, ids: np.ndarray) -> int:
        """Remove vectors by id; returns how many were removed.

        Flat and IVF remove in place. HNSW cannot delete graph nodes, so the remaining
        vectors are reconstructed from the index's own flat storage and the graph rebuilt
        in place (O(n log n); fine for batched incremental ingest, not per-document loops).
        """
        index = self._require()
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        if len(ids) == 0 or index.ntotal == 0:
            return 0
        selector = faiss.IDSelectorBatch(ids)
        try:
            removed = int(index.remove_ids(selector))
        except RuntimeError:
            removed = self._rebuild_without(ids)
        if removed:
            self._sync_gpu()
        return removed

    def _rebuild_without(self, ids: np.ndarray) -> int:
        index = self._index
        if not isinstance(index, faiss.IndexIDMap):
            raise BundleError(
                f"FAISS index {self._factory!r} supports no removal; rebuild it from the corpus"
            )
        all_ids = faiss.vector_to_array(index.id_map)
        keep = ~np.isin(all_ids, ids)
        removed = int((~keep).sum())
        if removed == 0:
            return 0
        inner = faiss.downcast_index(index.index)
        try:
            vectors = inner.reconstruct_n(0, inner.ntotal)
        except RuntimeError:
            raise BundleError(
                f"FAISS index {self._factory!r} cannot reconstruct "
                "vectors for removal; rebuild it from the corpus"
            ) from None
        index.reset()  # keeps training (e.g. PQ codebooks); drops graph and ids
        if keep.any():
            index.add_with_ids(np.ascontiguousarray(vectors[keep]), all_ids[keep])
        return removed

    # ----------------------------------------------------------------- search
    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | AllowedIds | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids), each (nq, k), restricted to `allowed_ids` when given.

        `allowed_ids=None` means no restriction; an empty array means nothing is allowed.
        Pass an `AllowedIds` built once per principal to skip rebuilding the selector on
        every query (a fixed cost of ~n/8 bytes per call).
        """
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k} (retrieval.top_k)")
        index = self._require()
        queries = np.asarray(queries)
        queries = self._as_matrix(queries[None, :] if queries.ndim == 1 else queries, "queries")
        nq = len(queries)
        if allowed_ids is None:
            if self._gpu_index is not None and k <= _GPU_MAX_K:
                # GPU indexes take their knobs (nprobe) from the clone, not SearchParameters.
                return _pad(*self._gpu_index.search(queries, k))
            return _pad(*index.search(queries, k, params=self._params(k, None)))
        allowed = allowed_ids if isinstance(allowed_ids, AllowedIds) else AllowedIds(allowed_ids)
        if allowed.count == 0 or index.ntotal == 0 or nq == 0:
            return _empty(nq, k)
        # Filtered search runs on the CPU copy: classic faiss GPU indexes (this wheel's) ignore
        # an IDSelector in SearchParameters (faiss issues #3114, #3924; only cuVS builds honour
        # it), and a silently ignored selector would leak.
        selector = allowed.selector
        scores, ids = index.search(queries, k, params=self._params(k, selector))
        expected = min(k, allowed.count)
        short = np.flatnonzero((ids >= 0).sum(axis=1) < expected)
        if len(short) and not self._is_exact():
            scores[short], ids[short] = self._exhaustive(queries[short], k, selector)
        return self._fail_closed(scores, ids, allowed)

    def _params(self, k: int, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
        # HNSW and IVF reject plain SearchParameters, so build the type the core expects.
        core = self._core()
        if _hnsw_of(core) is not None:
            return faiss.SearchParametersHNSW(
                sel=selector, efSearch=max(self.config.hnsw_ef_search, k)
            )
        ivf = faiss.try_extract_index_ivf(core)
        if ivf is not None:
            ivf_params = faiss.SearchParametersIVF(sel=selector, nprobe=self._nprobe(ivf))
            if isinstance(core, faiss.IndexPreTransform):
                return faiss.SearchParametersPreTransform(index_params=ivf_params)
            return ivf_params
        return faiss.SearchParameters(sel=selector)

    def _exhaustive(
        self, queries: np.ndarray, k: int, selector: faiss.IDSelector
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the allowed subset, for rows an approximate index under-filled."""
        index = self._index
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:  # probing every list makes IVF-Flat exact
            params = faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nlist)
            if isinstance(index, faiss.IndexPreTransform):
                params = faiss.SearchParametersPreTransform(index_params=params)
            return index.search(queries, k, params=params)
        hnsw = _hnsw_of(self._core())
        if hnsw is not None and isinstance(index, faiss.IndexIDMap):
            # HNSW keeps its vectors in a flat storage index with the same internal ids;
            # scan it with the selector translated from external to internal ids.
            storage = faiss.downcast_index(hnsw.storage)
            translated = faiss.IDSelectorTranslated(index.id_map, selector)
            scores, internal = storage.search(
                queries, k, params=faiss.SearchParameters(sel=translated)
            )
            id_map = faiss.vector_to_array(index.id_map)
            return scores, np.where(internal >= 0, id_map[np.maximum(internal, 0)], PAD_ID)
        return index.search(queries, k, params=self._params(k, selector))

    def _nprobe(self, ivf: faiss.IndexIVF) -> int:
        """IVF lists to probe: the config's, else ceil(sqrt(nlist)), never more than nlist."""
        wanted = self.config.nprobe or math.ceil(math.sqrt(ivf.nlist))
        return max(1, min(wanted, ivf.nlist))

    def _apply_search_knobs(self) -> None:
        # Written onto the index itself too, not only into SearchParameters: the GPU clone
        # copies its nprobe from the CPU index, and plain search() calls read these fields.
        core = self._core()
        hnsw = _hnsw_of(core)
        if hnsw is not None:
            hnsw.hnsw.efSearch = self.config.hnsw_ef_search
        ivf = faiss.try_extract_index_ivf(core)
        if ivf is not None:
            ivf.nprobe = self._nprobe(ivf)

    def _fail_closed(
        self, scores: np.ndarray, ids: np.ndarray, allowed: AllowedIds
    ) -> tuple[np.ndarray, np.ndarray]:
        """Second line of defence: any returned id outside `allowed` raises AccessDenied.

        The message carries counts only; the ids themselves stay out of logs and errors.
        """
        returned = ids >= 0
        leaked = int((returned & ~allowed.contains(ids)).sum())
        if leaked:
            logger.error(
                "search returned %d results outside allowed_ids across %d queries", leaked, len(ids)
            )
            raise AccessDenied(
                f"vector search returned {leaked} results outside the principal's allowed ids "
                f"across {len(ids)} queries; refusing them all (fail closed)"
            )
        return _pad(scores, ids)

    # ------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write the CPU index atomically: a temp file in the same folder, then rename."""
        index = self._require()
        with atomic_path(path) as tmp:
            faiss.write_index(index, str(tmp))

    @classmethod
    def load(
        cls, path: str | Path, config: IndexConfig | None = None, dim: int | None = None
    ) -> VectorIndex:
        """Read an index written by `save`; `dim`, when given, must match the file's."""
        path = Path(path)
        if not path.is_file():
            raise BundleError(f"vector index not found: {path}")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise BundleError(
                f"vector index is corrupt or unreadable: {path} ({_first_line(exc)})"
            ) from None
        if dim is not None and index.d != dim:
            raise BundleError(
                f"vector index {path} has dim {index.d}, expected {dim} (embedding.dim)"
            )
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise BundleError(f"vector index {path} is not an inner-product index")
        vector_index = cls(config, dim=index.d)
        vector_index._index, vector_index._factory = index, _describe(index)
        vector_index._apply_search_knobs()
        vector_index._sync_gpu()
        return vector_index

    # ------------------------------------------------------------------ state
    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def factory_string(self) -> str:
        """The FAISS factory string in use (nlist already bounded), for the manifest."""
        return self._factory

    @property
    def on_gpu(self) -> bool:
        return self._gpu_index is not None

    def cpu_view(self) -> VectorIndex:
        """This index's CPU copy (shared, not copied) without the GPU clone, for GPU-vs-CPU
        comparisons; read-only: a change through it would not reach this index's GPU clone."""
        view = VectorIndex(self.config.model_copy(update={"use_gpu": "never"}), dim=self.dim)
        view._index, view._factory = self._require(), self._factory
        return view

    def _require(self) -> faiss.Index:
        if self._index is None:
            raise BundleError("vector index is empty: call build() or load() first")
        return self._index

    def _core(self) -> faiss.Index:
        index = self._require()
        return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index

    def _is_exact(self) -> bool:
        return isinstance(self._core(), faiss.IndexFlat)

    def _gpu_wanted(self) -> bool:
        return self.config.use_gpu != "never" and faiss.get_num_gpus() > 0

    def _resources(self) -> object:
        if self._gpu_resources is None:
            self._gpu_resources = faiss.StandardGpuResources()
        return self._gpu_resources

    def _sync_gpu(self) -> None:
        """Refresh the GPU copy after a change; the CPU index stays the source of truth."""
        self._gpu_index = None
        mode, gpus = self.config.use_gpu, faiss.get_num_gpus()
        if mode == "never" or (mode == "auto" and gpus == 0):
            return
        if gpus == 0:
            raise ConfigError("index.use_gpu is 'always' but faiss sees no GPU (index.use_gpu)")
        try:
            self._gpu_index = faiss.index_cpu_to_gpu(self._resources(), 0, self._index)
        except (RuntimeError, AttributeError) as exc:
            # HNSW (among others) has no GPU implementation in faiss.
            if mode == "always":
                raise ConfigError(
                    f"FAISS index {self._factory!r} cannot run "
                    f"on GPU (index.use_gpu): {_first_line(exc)}"
                ) from None
            logger.info("FAISS %s stays on CPU: %s", self._factory, _first_line(exc))

    def _as_matrix(self, array: np.ndarray, name: str) -> np.ndarray:
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (n, {self.dim}), got {array.shape}")
        return np.ascontiguousarray(array, dtype=np.float32)

    @staticmethod
    def _as_ids(ids: np.ndarray, n: int) -> np.ndarray:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.shape != (n,):
            raise ValueError(f"ids must have shape ({n},), got {ids.shape}")
        if len(np.unique(ids)) != n:
            raise ValueError("ids must be unique")
        if n and ids.min() < 0:
            raise ValueError(f"ids must be >= 0 (-1 marks a missing result), got {int(ids.min())}")
        return ids


def _hnsw_of(index: faiss.Index) -> faiss.IndexHNSW | None:
    index = faiss.downcast_index(index)
    return index if isinstance(index, faiss.IndexHNSW) else None


def _pad(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move valid results left (stable, so order is kept) and pad with -1 / -inf."""
    valid = ids >= 0
    order = np.argsort(~valid, axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1)
    scores = np.take_along_axis(scores.astype(np.float32, copy=False), order, axis=1)
    valid = ids >= 0
    return np.where(valid, scores, PAD_SCORE), np.where(valid, ids, PAD_ID).astype(np.int64)


def _empty(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), PAD_SCORE, dtype=np.float32), np.full((nq, k), PAD_ID, dtype=np.int64)


def _describe(index: faiss.Index) -> str:
    """A factory string for a loaded index (the file holds structure, not the string)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):
        return _describe(index.index)
    if isinstance(index, faiss.IndexFlat):
        return "Flat"
    if isinstance(index, faiss.IndexHNSWCagra):
        return CAGRA
    hnsw = _hnsw_of(index)
    if hnsw is not None and isinstance(hnsw, faiss.IndexHNSWFlat):
        return f"HNSW{hnsw.hnsw.nb_neighbors(1)},Flat"
    if isinstance(index, faiss.IndexIVFFlat):
        return f"IVF{index.nlist},Flat"
    return type(index).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
