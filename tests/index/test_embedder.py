"""Embedder with the real packaged all-MiniLM-L6-v2 (offline)."""

from __future__ import annotations

import numpy as np
import pytest

from rayrag.config import EmbeddingConfig
from rayrag.errors import ConfigError, DataError
from rayrag.index.embedder import Embedder


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


def _tiny_sentence_transformer(root, dim: int = 32):
    """A random 2-layer BERT with mean pooling, written as a sentence-transformers directory
    (the packaged MiniLM's tokenizer): a second embedder that exists offline."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rayrag.index.embedder import resolve_model

    source = resolve_model(EmbeddingConfig()).path
    tokenizer = AutoTokenizer.from_pretrained(source)
    bert_dir = root / "bert"
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=dim,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    word = models.Transformer(str(bert_dir), max_seq_length=64)
    model = SentenceTransformer(
        modules=[word, models.Pooling(dim, pooling_mode="mean")], device="cpu"
    )
    out = root / "tiny-embedder"
    model.save(str(out))
    return out


def test_embedding_model_selects_a_local_directory(tmp_path, embedder):
    path = _tiny_sentence_transformer(tmp_path)
    other = Embedder(EmbeddingConfig(model=str(path), dim=32, device="cpu"))
    vectors = other.encode(
        ["A cat is sleeping on the sofa.", "Quarterly tax filings are due in April."]
    )
    assert vectors.shape == (2, 32) and other.name == str(path)  # the model that ran, not a label
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="produces 32-d vectors"):
        Embedder(EmbeddingConfig(model=str(path), device="cpu")).warm_up()  # dim 384 configured


def test_packaged_model_by_either_name_and_unknown_names_fail_at_load(embedder):
    from rayrag.config import load_config

    hub_name = Embedder(
        EmbeddingConfig(model="sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    )
    assert hub_name.name == "all-MiniLM-L6-v2"
    for name in ("bge-large-en", "BAAI/bge-small-en-v1.5"):
        with pytest.raises(ConfigError, match=r"unknown embedder .*embedding.model") as info:
            load_config(None, [f"embedding.model={name}"])
        assert "\n" not in str(info.value)


def test_a_directory_that_is_not_a_model_is_a_config_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a sentence-transformers model directory"):
        Embedder(EmbeddingConfig(model=str(tmp_path / "empty"))).warm_up()
    with pytest.raises(ConfigError, match=r"directory not found.*embedding.model\)"):
        Embedder(EmbeddingConfig(model=str(tmp_path / "missing"))).warm_up()
