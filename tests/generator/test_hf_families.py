"""HF MoE families (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE) in our MoETransformer.

Each family's checkpoint is written by transformers' own `save_pretrained` from a tiny model
whose every parameter is drawn at random (HF's init leaves biases at 0 and norm weights at 1,
which would hide a bias or norm that is never loaded). Our `load_checkpoint` must give HF's
logits (max abs diff <= 1e-4 in float32) and HF's greedy tokens, and each family's own part
(routing, bias, QK-norm, clip, shared expert) must matter: switching it off moves the logits
far past the tolerance, so a loader that dropped it would fail here.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from rayrag.config import GeneratorConfig, LoraConfig
from rayrag.errors import ModelError
from rayrag.generator.checkpoint import load_checkpoint, save_checkpoint
from rayrag.generator.generate import generate
from rayrag.generator.model import MoETransformer

transformers = pytest.importorskip("transformers")

VOCAB = 300
TOL = 1e-4
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    pad_token_id=None,
    bos_token_id=None,
    eos_token_id=None,
)
# family -> (HF config class, HF model class, what this family's test checkpoint sets)
FAMILIES = {
    "mixtral": (
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(num_hidden_layers=2, intermediate_size=96, num_local_experts=8, num_experts_per_tok=2),
    ),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        dict(
            num_hidden_layers=3,
            intermediate_size=128,  # the dense width: unused when every layer is MoE
            moe_intermediate_size=48,
            shared_expert_intermediate_size=80,
            num_experts=6,
            num_experts_per_tok=2,
            norm_topk_prob=False,
            qkv_bias=True,
        ),
    ),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        dict(
            num_hidden_layers=2,
            intermediate_size=128,
            moe_intermediate_size=48,
            num_experts=8,
            num_experts_per_tok=3,
            norm_topk_prob=True,  # as Qwen3-30B-A3B's config.json has it
            head_dim=24,  # 4 heads x 24 = 96 != hidden 64
            attention_bias=True,
        ),
    ),
    "olmoe": (
        "OlmoeConfig",
        "OlmoeForCausalLM",
        dict(
            num_hidden_layers=2,
            intermediate_size=48,
            num_experts=4,
            num_experts_per_tok=2,
            norm_topk_prob=False,
            clip_qkv=1.5,  # clamps some of q, k, v: the random weights make them ~N(0, 1)
            tie_word_embeddings=True,
        ),
    ),
}
NAMES = list(FAMILIES)
PROMPTS = [[5, 17, 42, 9, 88, 3, 61], [120, 7], [33, 150, 2, 19, 250]]
IDS = torch.randint(0, VOCAB, (3, 12), generator=torch.Generator().manual_seed(0))
MASK = torch.ones_like(IDS)
MASK[1, :4] = 0  # a left-padded row


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matmuls: on a shared 2-core box, intra-op thread handoff costs 10x the math.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def hf_model(family: str, **overrides):
    config_cls, model_cls, settings = FAMILIES[family]
    config = getattr(transformers, config_cls)(**{**COMMON, **settings, **overrides})
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).eval()
    randomise(model)
    return model


@torch.no_grad()
def randomise(model, seed: int = 0) -> None:
    """Every parameter at random, at a scale that keeps activations O(1): norm weights
    1 + N(0, 0.2), biases N(0, 0.2), matrices N(0, 1 / fan_in) (routers included, so the
    routing is decided, not near-uniform)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        noise = torch.randn(p.shape, generator=gen)
        if name.endswith("norm.weight"):
            p.copy_(1 + 0.2 * noise)
        elif name.endswith("bias"):
            p.copy_(0.2 * noise)
        else:
            p.copy_(noise / math.sqrt(p.shape[-1]))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (HF model, the directory its save_pretrained wrote), built on first use."""
    built: dict[str, tuple] = {}

    def get(name: str):
        if name not in built:
            model = hf_model(name)
            path = tmp_path_factory.mktemp(name) / "hf"
            model.save_pretrained(path)
            built[name] = (model, path)
        return built[name]

    return get


@pytest.fixture(params=NAMES)
def family(request, checkpoints):
    """(family, HF model, the directory its save_pretrained wrote), for each family."""
    return (request.param, *checkpoints(request.param))


def logits(model, ids=IDS, mask=MASK) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits.float()


def max_diff(a: torch.Tensor, b: torch.Tensor, mask=MASK) -> float:
    keep = mask.bool()  # a padded position's output is nobody's business
    return (a[keep] - b[keep]).abs().max().item()


def file_keys(path) -> set[str]:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return set(f.keys())


# -- loading: logits and greedy tokens ------------------------------------------------------


def test_save_pretrained_writes_the_names_we_map(family):
    """The 5.x files split experts per expert; spot-check the names each family's mapping
    relies on, straight from the file HF wrote."""
    name, _, path = family
    keys = file_keys(path)
    layer0 = "model.layers.0."
    if name == "mixtral":
        expected = {"block_sparse_moe.gate.weight", "block_sparse_moe.experts.7.w3.weight"}
    else:
        expected = {"mlp.gate.weight", "mlp.experts.0.gate_proj.weight"}
    expected |= {
        "qwen2_moe": {
            "mlp.shared_expert.up_proj.weight",
            "mlp.shared_expert_gate.weight",
            "self_attn.q_proj.bias",
        },
        "qwen3_moe": {"self_attn.q_norm.weight", "self_attn.o_proj.bias"},
        "olmoe": {"self_attn.k_norm.weight"},
    }.get(name, set())
    assert {layer0 + k for k in expected} <= keys
    assert ("lm_head.weight" in keys) is (name != "olmoe")  # olmoe's head is tied


def test_logits_equal_hf(family):
    name, hf, path = family
    model = load_checkpoint(path)
    assert model.config.hf_family == name and not model.training
    diff = max_diff(logits(model), logits(hf))
    print(f"\n{name}: max |logits - HF logits| = {diff:.3g} (padded batch, float32)")
    assert diff <= TOL


def test_family_options_are_read(family):
    name, hf, path = family
    cfg = load_checkpoint(path).config
    expected = {
        "mixtral": dict(router_renormalize=True, attention_bias="none", qk_norm="none"),
        "qwen2_moe": dict(
            router_renormalize=False,
            attention_bias="qkv",
            shared_expert_dim=80,
            shared_expert_gate=True,
            ffn_dim=48,
            rms_norm_eps=1e-6,
        ),
        "qwen3_moe": dict(
            router_renormalize=True, attention_bias="all", qk_norm="head", head_dim=24
        ),
        "olmoe": dict(router_renormalize=False, qk_norm="full", clip_qkv=1.5, tie_embeddings=True),
    }[name]
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert cfg.rope_theta == hf.config.rope_parameters["rope_theta"]
    assert cfg.n_experts == hf.config.num_experts  # each family's attribute_map resolves it
    assert cfg.experts_per_token == hf.config.num_experts_per_tok
    assert cfg.n_layers == hf.config.num_hidden_layers
    # dropless in training too (LoRA on the base): no expert is ever over capacity
    layer = next(m for m in load_checkpoint(path).modules() if hasattr(m, "capacity"))
    assert all(layer.capacity(tokens) >= tokens for tokens in (1, 7, 18, 4096))


def test_greedy_tokens_equal_hf_generate(family):
    """Ours: one left-padded batch through the KV cache; HF: each prompt on its own."""
    name, hf, path = family
    model = load_checkpoint(path)
    ours = [g.tokens for g in generate(model, PROMPTS, max_new_tokens=10, eos_id=None, pad_id=0)]
    settings = transformers.GenerationConfig(
        do_sample=False, max_new_tokens=10, min_new_tokens=10, eos_token_id=None, pad_token_id=0
    )
    theirs = []
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), generation_config=settings)
        theirs.append(out[0, len(prompt) :].tolist())
    print(f"\n{name}: greedy tokens equal HF's: {ours == theirs} ({ours[0]})")
    assert ours == theirs


# Each family's own part, switched off in our loaded model: the logits must move far past TOL.
def _no_renormalize(model):
    for layer in model.model.layers:
        layer.block_sparse_moe.gate.renormalize = not layer.block_sparse_moe.gate.renormalize


def _zero_biases(model):
    for layer in model.model.layers:
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            bias = getattr(layer.self_attn, proj).bias
            if bias is not None:
                bias.data.zero_()


def _no_qk_norm(model):
    for layer in model.model.layers:
        layer.self_attn.qk_norm = "none"


def _no_shared_gate(model):
    for layer in model.model.layers:
        layer.block_sparse_moe.shared_expert_gate = None


def _no_clip(model):
    for layer in model.model.layers:
        layer.self_attn.clip_qkv = None


PARTS = [
    ("mixtral", _no_renormalize),
    ("qwen2_moe", _no_renormalize),
    ("qwen2_moe", _zero_biases),
    ("qwen2_moe", _no_shared_gate),
    ("qwen3_moe", _no_renormalize),
    ("qwen3_moe", _zero_biases),
    ("qwen3_moe", _no_qk_norm),
    ("olmoe", _no_renormalize),
    ("olmoe", _no_qk_norm),
    ("olmoe", _no_clip),
]


@pytest.mark.parametrize(("name", "switch_off"), PARTS, ids=[f"{n}-{f.__name__}" for n, f in PARTS])
def test_each_family_part_matters(checkpoints, name, switch_off):
    hf, path = checkpoints(name)
    model = load_checkpoint(path)
    switch_off(model)
    assert max_diff(logits(model), logits(hf)) > 100 * TOL


# -- the layer options on their own ------------------------------------------------------


@pytest.mark.parametrize("renormalize", [True, False])
def test_router_weights_with_and_without_renormalising(renormalize):
    from rayrag.generator.moe import Router

    torch.manual_seed(3)
    router = Router(16, n_experts=6, top_k=2, renormalize=renormalize)
    x = torch.randn(50, 16)
    weights, indices, logits = router(x)
    probs = logits.softmax(-1)  # (T, E)
    chosen = probs.gather(1, indices)  # (T, k): the full softmax's probabilities of the top k
    if renormalize:  # = softmax over the k chosen logits (Mixtral)
        torch.testing.assert_close(weights, logits.gather(1, indices).softmax(-1))
    else:  # the full softmax's own numbers: they sum to less than 1 (Qwen2-MoE, OLMoE)
        torch.testing.assert_close(weights, chosen)
        assert (weights.sum(-1) < 1 - 1e-3).all()


def test_gated_shared_expert_all_dispatch_paths_agree():
    """Sorted dispatch, the textbook loop and the one-token path with renormalize=False and a
    gated shared expert; the gate is sigmoid(w . x) times the shared expert's output."""
    from rayrag.generator.moe import MoELayer, naive_moe_forward

    torch.manual_seed(4)
    layer = MoELayer(
        16,
        24,
        n_experts=6,
        top_k=2,
        shared_expert_dim=8,
        renormalize=False,
        shared_expert_gate=True,
    ).eval()
    x = torch.randn(2, 9, 16)
    with torch.no_grad():
        y, _ = layer(x)
        torch.testing.assert_close(y, naive_moe_forward(layer, x), atol=1e-6, rtol=1e-5)
        flat = x.reshape(-1, 16)
        gate = torch.sigmoid(flat @ layer.shared_expert_gate.weight.t())  # (T, 1)
        torch.testing.assert_close(layer.shared(flat), gate * layer.shared_expert(flat))
        one = x[:1, :1]
        assert layer._direct(one.reshape(-1, 16))
        y_one, _ = layer(one)
        torch.testing.assert_close(y_one, naive_moe_forward(layer, one), atol=1e-6, rtol=1e-5)
    with pytest.raises(Exception, match="shared_expert_gate needs a shared expert"):
        MoELayer(16, 24, n_experts=6, top_k=2, shared_expert_gate=True)


# -- saving ---------------------------------------------------------------------------------


def test_our_checkpoint_is_the_family_format_and_hf_loads_it(family, tmp_path):
    """save_checkpoint writes the family's own config and tensor names (the set HF writes),
    HF's class loads it with its logits unchanged, and it loads back here exactly."""
    name, hf, path = family
    model = load_checkpoint(path)
    save_checkpoint(model, tmp_path / "ours")
    raw = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert raw["model_type"] == name and raw["architectures"] == hf.config.architectures
    assert file_keys(tmp_path / "ours") == file_keys(path)
    back = getattr(transformers, FAMILIES[name][1]).from_pretrained(tmp_path / "ours").eval()
    assert max_diff(logits(back), logits(hf)) <= TOL
    again = load_checkpoint(tmp_path / "ours")
    assert again.config == model.config
    assert torch.equal(logits(again), logits(model))


def test_a_family_that_cannot_express_the_model_is_refused(tmp_path):
    config = GeneratorConfig(
        vocab_size=VOCAB,
        d_model=32,
        n_layers=1,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=48,
        n_experts=4,
        max_seq_len=32,
        adaptive_softmax_cutoffs=(),
        qk_norm="head",  # Mixtral (the default hf_family) has no QK-norm
    )
    with pytest.raises(ModelError) as info:
        save_checkpoint(MoETransformer(config), tmp_path / "ckpt")
    message = str(info.value)
    assert "\n" not in message and "qk_norm='head'" in message and "mixtral" in message
    assert not (tmp_path / "ckpt").exists()
    # The same model as the family that has it is written, and loads in HF as Qwen3-MoE.
    qwen3 = MoETransformer(config.model_copy(update={"hf_family": "qwen3_moe"})).eval()
    save_checkpoint(qwen3, tmp_path / "ckpt")
    hf = transformers.Qwen3MoeForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    ids = IDS[:, :8] % VOCAB
    assert max_diff(logits(qwen3, ids, None), logits(hf, ids, None), torch.ones_like(ids)) <= TOL


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "edit", "key", "value"),
    [
        ("qwen2_moe", {"decoder_sparse_step": 2}, "decoder_sparse_step", "2"),
        ("qwen3_moe", {"mlp_only_layers": [1]}, "mlp_only_layers", "[1]"),
        (
            "olmoe",
            {"rope_parameters": {"rope_type": "linear", "factor": 2.0}},
            "rope_type",
            "linear",
        ),
        ("mixtral", {"hidden_act": "gelu"}, "hidden_act", "gelu"),
        ("olmoe", {"head_dim": 24}, "head_dim", "24"),
        ("mixtral", {"model_type": "deepseek_v3"}, "model_type", "deepseek_v3"),
    ],
)
def test_unsupported_features_are_one_line_errors_naming_key_and_value(
    checkpoints, tmp_path, name, edit, key, value
):
    _, path = checkpoints(name)
    raw = json.loads((path / "config.json").read_text())
    raw.update(edit)
    (tmp_path / "model.safetensors").symlink_to(path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError) as info:
        load_checkpoint(tmp_path)
    message = str(info.value)
    print(f"\n{message}")
    assert "\n" not in message and key in message and value in message


def test_qwen_sliding_window_caps_the_context_only_when_switched_on(checkpoints, tmp_path):
    _, path = checkpoints("qwen2_moe")
    raw = json.loads((path / "config.json").read_text())
    (tmp_path / "model.safetensors").symlink_to(path / "model.safetensors")
    for use, expected in ((False, 128), (True, 16)):
        raw.update(use_sliding_window=use, sliding_window=16)
        (tmp_path / "config.json").write_text(json.dumps(raw))
        assert load_checkpoint(tmp_path).config.max_seq_len == expected


# -- LoRA on a family model -----------------------------------------------------------------


def test_lora_on_a_family_model_starts_equal_and_merges(checkpoints):
    """Qwen2-MoE: adapters on biased projections and on experts beside a shared expert."""
    from rayrag.generator.lora import apply_lora, merge_lora

    _, path = checkpoints("qwen2_moe")
    model = load_checkpoint(path)
    before = logits(model)
    apply_lora(model, LoraConfig(rank=4, targets=("q_proj", "v_proj"), experts=True))
    assert torch.equal(logits(model), before)  # B = 0: the adapted model is the base
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "lora_B" in key:  # zero at the start; now the adapters do something
                p.normal_(0, 0.05)
    adapted = logits(model)
    assert max_diff(adapted, before) > 100 * TOL
    merge_lora(model)
    assert max_diff(logits(model), adapted) <= TOL


# -- a shard's experts, read on their own -------------------------------------------------


class _Recording:
    """safe_open, recording every tensor asked for (and the rows of every slice)."""

    def __init__(self, real, reads: list):
        self.real, self.reads = real, reads

    def __call__(self, *args, **kwargs):
        handle, reads = self.real(*args, **kwargs), self.reads

        class Handle:
            def keys(self):
                return handle.keys()

            def get_tensor(self, key):
                reads.append(key)
                return handle.get_tensor(key)

            def get_slice(self, key):
                part = handle.get_slice(key)

                class Slice:
                    def __getitem__(self, rows):
                        reads.append((key, rows.start, rows.stop))
                        return part[rows]

                return Slice()

        return Handle()


@pytest.mark.parametrize("name", NAMES)
def test_load_experts_reads_only_its_own_experts(checkpoints, name, monkeypatch):
    import rayrag.generator.checkpoint as checkpoint

    _, path = checkpoints(name)
    full = load_checkpoint(path)
    reads: list = []
    monkeypatch.setattr(checkpoint, "safe_open", _Recording(checkpoint.safe_open, reads))
    config, layers = checkpoint.load_experts(path, 1, 3)
    assert config == full.config and len(layers) == config.n_layers
    for layer, experts in zip(full.model.layers, layers, strict=True):
        for w in ("w1", "w3", "w2"):
            assert torch.equal(getattr(experts, w), getattr(layer.block_sparse_moe.experts, w)[1:3])
    # Exactly experts 1 and 2 of each projection of each layer, nothing else (no attention,
    # embeddings, router or shared expert).
    assert len(reads) == len(set(reads)) == config.n_layers * 3 * 2
    assert {int(key.split(".experts.")[1].split(".")[0]) for key in reads} == {1, 2}


def test_load_experts_slices_the_fused_layout(checkpoints, tmp_path, monkeypatch):
    """HF 5.x's in-memory layout, written as is: experts.gate_up_proj (E, 2F, d) and
    experts.down_proj (E, d, F); a shard reads rows lo..hi-1 of each, nothing more."""
    import shutil

    from safetensors.torch import save_file

    import rayrag.generator.checkpoint as checkpoint

    hf, path = checkpoints("qwen3_moe")
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    assert state["model.layers.0.mlp.experts.gate_up_proj"].shape == (8, 96, 64)
    save_file(state, tmp_path / "model.safetensors")
    shutil.copy(path / "config.json", tmp_path / "config.json")
    full = load_checkpoint(tmp_path)
    reads: list = []
    monkeypatch.setattr(checkpoint, "safe_open", _Recording(checkpoint.safe_open, reads))
    _, layers = checkpoint.load_experts(tmp_path, 5, 8)
    assert layers[1].w3.shape == (3, 48, 64)
    for layer, experts in zip(full.model.layers, layers, strict=True):
        for w in ("w1", "w3", "w2"):
            assert torch.equal(getattr(experts, w), getattr(layer.block_sparse_moe.experts, w)[5:])
    assert sorted(reads) == sorted(
        (f"model.layers.{i}.mlp.experts.{name}", 5, 8)
        for i in range(2)
        for name in ("gate_up_proj", "down_proj")
    )


@pytest.mark.parametrize("name", ["qwen2_moe", "olmoe"])  # a shared expert; a tied head
def test_the_driver_loads_everything_but_the_routed_experts(checkpoints, name, monkeypatch):
    """load_checkpoint(experts=False): no routed expert tensor read, none allocated; with the
    full model's experts plugged in as expert_fn it is the full model, bit for bit."""
    import rayrag.generator.checkpoint as checkpoint

    _, path = checkpoints(name)
    full = load_checkpoint(path)
    reads: list = []
    monkeypatch.setattr(checkpoint, "safe_open", _Recording(checkpoint.safe_open, reads))
    driver = checkpoint.load_checkpoint(path, experts=False)
    assert reads and not [key for key in reads if ".experts." in key]
    assert driver.config == full.config and not driver.training
    if name == "olmoe":
        assert driver.lm_head.weight is driver.model.embed_tokens.weight
    for mine, theirs in zip(driver.model.layers, full.model.layers, strict=True):
        assert mine.block_sparse_moe.experts.w1.numel() == 0
        mine.block_sparse_moe.expert_fn = theirs.block_sparse_moe.experts.forward_sorted
    assert all(p.device.type == "cpu" for p in driver.parameters())
    assert torch.equal(logits(driver), logits(full))


def test_load_experts_refuses_a_range_outside_the_experts(checkpoints):
    from rayrag.generator.checkpoint import load_experts

    _, path = checkpoints("olmoe")
    with pytest.raises(ModelError, match=r"experts \[2, 9\) are not within the 4 experts"):
        load_experts(path, 2, 9)


# -- expert parallelism over a family checkpoint --------------------------------------------


@pytest.mark.slow
def test_sharded_generator_equals_the_local_model(family, ray_local):
    from rayrag.generator.sharded import ShardedGenerator

    name, _, path = family
    local = load_checkpoint(path)
    generator = ShardedGenerator(path, num_shards=2, transport="actor", dtype="float32")
    try:
        moe = generator.model.model.layers[0].block_sparse_moe
        assert moe.experts.w1.numel() == 0  # the routed experts live on the shards
        if name == "qwen2_moe":  # the shared expert and its gate stay with the layer
            assert moe.shared_expert.w1.weight.numel() and moe.shared_expert_gate is not None
        diff = max_diff(logits(generator.model), logits(local))
        print(f"\n{name}: max |sharded - local| = {diff:.3g}")
        assert diff <= TOL and all(load > 0 for load in generator.shard_load)
        got = generate(generator.model, PROMPTS, max_new_tokens=6, eos_id=None, pad_id=0)
        want = generate(local, PROMPTS, max_new_tokens=6, eos_id=None, pad_id=0)
        assert [g.tokens for g in got] == [g.tokens for g in want]
    finally:
        generator.shutdown()
