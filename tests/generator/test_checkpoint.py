"""Checkpoints: HF Mixtral parity (split and fused expert layouts), round trips, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rayrag.config import GeneratorConfig
from rayrag.errors import ConfigError, ModelError
from rayrag.generator.checkpoint import load_checkpoint, save_checkpoint
from rayrag.generator.model import MoETransformer

transformers = pytest.importorskip("transformers")

VOCAB = 128


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matmuls: on a shared 2-core box, intra-op thread handoff costs 10x the math.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def hf_model(tie: bool = False):
    torch.manual_seed(0)
    config = transformers.MixtralConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
    )
    return transformers.MixtralForCausalLM(config).eval()


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """(HF model, the directory its save_pretrained wrote)."""
    model = hf_model()
    path = tmp_path_factory.mktemp("hf") / "mixtral"
    model.save_pretrained(path)
    return model, path


def tiny_model(head: str) -> MoETransformer:
    torch.manual_seed(1)
    cutoffs = (32, 80) if head == "adaptive" else ()
    config = GeneratorConfig(
        vocab_size=VOCAB,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=96,
        n_experts=4,
        experts_per_token=2,
        max_seq_len=64,
        adaptive_softmax_cutoffs=cutoffs,
        tie_embeddings=head == "full_tied",
    )
    order = torch.randperm(VOCAB) if head == "adaptive" else None
    return MoETransformer(config, token_order=order).eval()


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.randint(0, VOCAB, (3, 12), generator=torch.Generator().manual_seed(0))


def test_hf_save_pretrained_loads_with_same_logits(hf_checkpoint):
    hf, path = hf_checkpoint
    model = load_checkpoint(path)
    assert not model.training and not model.is_adaptive
    assert model.config.rope_theta == hf.config.rope_parameters["rope_theta"]
    assert model.config.n_kv_heads == 2 and model.config.ffn_dim == 96
    torch.testing.assert_close(logits(model, IDS), logits(hf, IDS), atol=1e-4, rtol=0)


def test_hf_tied_embeddings_load(tmp_path):
    hf = hf_model(tie=True)
    hf.save_pretrained(tmp_path)
    model = load_checkpoint(tmp_path)
    assert model.head.weight is model.model.embed_tokens.weight
    torch.testing.assert_close(logits(model, IDS), logits(hf, IDS), atol=1e-4, rtol=0)


def test_sharded_hf_checkpoint_loads(hf_checkpoint, tmp_path):
    hf, _ = hf_checkpoint
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    torch.testing.assert_close(
        logits(load_checkpoint(tmp_path), IDS), logits(hf, IDS), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("transposed", [False, True])
def test_hf_fused_expert_layout_loads(hf_checkpoint, tmp_path, transposed):
    """HF 5.x holds experts fused in memory: mlp.experts.gate_up_proj (E, 2F, d) = [w1; w3]
    and down_proj (E, d, F); a checkpoint written from that state dict must load too."""
    hf, path = hf_checkpoint
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    assert state["model.layers.0.mlp.experts.gate_up_proj"].shape == (4, 192, 64)
    if transposed:  # (E, in, out) orientation is recognised by shape
        state = {
            k: v.transpose(1, 2).contiguous() if k.endswith(("gate_up_proj", "down_proj")) else v
            for k, v in state.items()
        }
    save_file(state, tmp_path / "model.safetensors")
    shutil.copy(path / "config.json", tmp_path / "config.json")
    torch.testing.assert_close(
        logits(load_checkpoint(tmp_path), IDS), logits(hf, IDS), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("head", ["full_tied", "full_untied", "adaptive"])
def test_round_trip_gives_identical_logits(tmp_path, head):
    model = tiny_model(head)
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.config
    torch.testing.assert_close(logits(loaded, IDS), logits(model, IDS), atol=0, rtol=0)
    if head == "adaptive":
        assert torch.equal(loaded.head.token_of_rank, model.head.token_of_rank)


def test_saved_file_uses_mixtral_keys(tmp_path):
    model = tiny_model("adaptive")
    save_checkpoint(model, tmp_path / "ckpt")
    with safe_open(tmp_path / "ckpt" / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert f.get_slice("model.layers.1.block_sparse_moe.experts.3.w1.weight").get_shape() == [
            96,
            64,
        ]
        assert f.get_slice("model.layers.1.block_sparse_moe.experts.3.w2.weight").get_shape() == [
            64,
            96,
        ]
    assert "model.layers.0.block_sparse_moe.gate.weight" in keys
    assert "rayrag.adaptive_head.head.weight" in keys and "lm_head.weight" not in keys
    assert not any(k.endswith("experts.w1") for k in keys)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == "mixtral" and config["architectures"] == ["MixtralForCausalLM"]
    assert config["num_local_experts"] == 4 and config["head_dim"] == 16
    assert config["rayrag"]["generator"]["adaptive_softmax_cutoffs"] == [32, 80]
    assert config["rayrag"]["token_order"] == model.head.token_of_rank.tolist()


@pytest.mark.parametrize("head", ["full_tied", "full_untied"])
def test_our_full_head_checkpoint_loads_in_hf(tmp_path, head):
    model = tiny_model(head)
    save_checkpoint(model, tmp_path / "ckpt")
    hf = transformers.MixtralForCausalLM.from_pretrained(tmp_path / "ckpt").eval()  # a local dir
    torch.testing.assert_close(logits(hf, IDS), logits(model, IDS), atol=1e-4, rtol=0)


def test_save_replaces_atomically_and_copies_tokenizer(tmp_path):
    (tmp_path / "tok.json").write_text('{"model": "bpe"}')
    target = tmp_path / "ckpt"
    save_checkpoint(tiny_model("full_tied"), target)
    second = tiny_model("full_untied")
    save_checkpoint(second, target, tokenizer_path=tmp_path / "tok.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "tok.json"]  # no temp dirs left
    assert (target / "tokenizer.json").read_text() == '{"model": "bpe"}'
    assert not load_checkpoint(target).config.tie_embeddings
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="refusing"):
        save_checkpoint(second, tmp_path / "other")
    with pytest.raises(ConfigError, match="tokenizer"):
        save_checkpoint(second, tmp_path / "new", tokenizer_path=tmp_path / "missing.json")


def test_bfloat16_checkpoint_keeps_its_dtype(tmp_path):
    save_checkpoint(tiny_model("full_untied").to(torch.bfloat16), tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert (
        load_checkpoint(tmp_path / "ckpt", dtype=torch.float32).model.norm.weight.dtype
        == torch.float32
    )


# -- clear errors ----------------------------------------------------------------------------


@pytest.fixture
def ours(tmp_path):
    return save_checkpoint(tiny_model("full_untied"), tmp_path / "ckpt")


def rewrite_weights(path, edit):
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors")


def rewrite_config(path, edit):
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def test_missing_directory_and_files(tmp_path, ours):
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")
    (ours / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="model.safetensors not found"):
        load_checkpoint(ours)
    (ours / "config.json").unlink()
    with pytest.raises(ModelError, match="config.json not found"):
        load_checkpoint(ours)


def test_non_mixtral_and_invalid_configs(ours):
    rewrite_config(ours, lambda c: c.update(model_type="llama"))
    with pytest.raises(ModelError, match="model_type must be 'mixtral'.*llama"):
        load_checkpoint(ours)
    rewrite_config(
        ours,
        lambda c: c.update(model_type="mixtral", rayrag=None, num_attention_heads=5, head_dim=None),
    )
    with pytest.raises(ConfigError, match="divisible"):
        load_checkpoint(ours)
    rewrite_config(ours, lambda c: c.pop("num_local_experts"))
    with pytest.raises(ModelError, match="num_local_experts"):
        load_checkpoint(ours)
    (ours / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        load_checkpoint(ours)


def test_missing_and_unexpected_keys_are_named(ours):
    rewrite_weights(ours, lambda t: t.pop("model.layers.1.self_attn.k_proj.weight"))
    with pytest.raises(ModelError, match=r"1 missing.*model\.layers\.1\.self_attn\.k_proj\.weight"):
        load_checkpoint(ours)
    rewrite_weights(
        ours,
        lambda t: t.update(
            {
                "model.layers.1.self_attn.k_proj.weight": torch.zeros(32, 64),
                "model.layers.0.self_attn.q_proj.bias": torch.zeros(64),
            }
        ),
    )
    with pytest.raises(ModelError, match=r"1 unexpected.*q_proj\.bias"):
        load_checkpoint(ours)


def test_missing_expert_and_wrong_shapes(ours):
    rewrite_weights(ours, lambda t: t.pop("model.layers.0.block_sparse_moe.experts.2.w3.weight"))
    with pytest.raises(ModelError, match=r"experts\.\*\.w3\.weight.*missing \[2\]"):
        load_checkpoint(ours)
    rewrite_weights(
        ours,
        lambda t: t.update(
            {
                "model.layers.0.block_sparse_moe.experts.2.w3.weight": torch.zeros(96, 64),
                "model.norm.weight": torch.zeros(65),
            }
        ),
    )
    with pytest.raises(
        ModelError, match=r"wrong shape.*model\.norm\.weight: file \(65,\) vs model \(64,\)"
    ):
        load_checkpoint(ours)


def test_corrupt_weights_file(ours):
    (ours / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelError, match="cannot read safetensors"):
        load_checkpoint(ours)


def test_refuses_a_model_with_lora_adapters(tmp_path):
    from rayrag.config import GeneratorConfig, LoraConfig
    from rayrag.generator.lora import apply_lora
    from rayrag.generator.model import MoETransformer

    model = MoETransformer(
        GeneratorConfig(
            vocab_size=64,
            d_model=32,
            n_layers=1,
            n_heads=2,
            n_kv_heads=1,
            ffn_dim=32,
            n_experts=2,
            experts_per_token=1,
            adaptive_softmax_cutoffs=(),
        )
    )
    apply_lora(model, LoraConfig(rank=2))
    with pytest.raises(ModelError, match="LoRA adapter tensors"):
        save_checkpoint(model, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
