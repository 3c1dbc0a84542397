"""Embedder with the real packaged all-MiniLM-L6-v2 (offline)."""

from __future__ import annotations

import numpy as np
import pytest

from rayrag.config import EmbeddingConfig
from rayrag.errors import ConfigError, DataError
from rayrag.pipelines.embed import Embedder


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    embedder = Embedder(EmbeddingConfig(device="cpu", batch_size=4))
    embedder.warm_up()
    return embedder


def test_encode_shape_dtype_and_unit_norm(embedder):
    texts = [f"sentence number {i} about rivers and mountains" for i in range(6)]  # > batch_size
    vectors = embedder.encode(texts)
    assert vectors.shape == (6, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_similar_sentences_are_closer_than_unrelated(embedder):
    cat, kitten, tax = embedder.encode(
        [
            "A cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "Quarterly tax filings are due in April.",
        ]
    )
    assert cat @ kitten > cat @ tax + 0.3


def test_encode_is_deterministic_per_text(embedder):
    one = embedder.encode(["The Eiffel Tower is in Paris."])
    batched = embedder.encode(["The Eiffel Tower is in Paris.", "Something else entirely."])
    np.testing.assert_allclose(one[0], batched[0], atol=1e-5)


def test_ray_data_batch_call_adds_embedding_column(embedder):
    batch = {
        "text": np.array(["alpha beta", "gamma delta", "epsilon"], dtype=object),
        "chunk_id": np.array(["a", "b", "c"]),
    }
    out = embedder(batch)
    assert set(out) == {"text", "chunk_id", "embedding"}
    assert out["embedding"].shape == (3, 384) and out["embedding"].dtype == np.float32
    np.testing.assert_array_equal(out["chunk_id"], batch["chunk_id"])
    with pytest.raises(DataError, match="'text'"):
        embedder({"body": np.array(["x"])})


def test_ray_data_accepts_the_embedding_column_as_a_tensor(embedder):
    # Converts the UDF's output as map_batches does, without starting Ray.
    from ray.data.block import BlockAccessor

    block = BlockAccessor.batch_to_block(embedder({"text": np.array(["one", "two"], dtype=object)}))
    assert "tensor" in str(block.schema.field("embedding").type).lower()
    back = BlockAccessor.for_block(block).to_batch_format("numpy")["embedding"]
    assert back.shape == (2, 384)


def test_tokenizer_name_and_idempotent_warm_up(embedder):
    model = embedder._model
    embedder.warm_up()
    assert embedder._model is model
    assert embedder.name == "all-MiniLM-L6-v2"
    assert embedder.tokenizer.is_fast
    assert embedder.tokenizer("hello world", add_special_tokens=False)["input_ids"] == [7592, 2088]
    assert embedder.max_seq_length == 256


def test_wrong_dim_and_missing_path_are_config_errors():
    with pytest.raises(ConfigError, match="embedding.dim"):
        Embedder(EmbeddingConfig(dim=512, device="cpu")).warm_up()
    with pytest.raises(ConfigError, match="embedding.model_path"):
        Embedder(EmbeddingConfig(model_path="/nonexistent/model")).warm_up()
