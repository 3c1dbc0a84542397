"""LoRA: starts equal to the base, merge == unmerged, only adapters train, save/load round trip."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from rayrag.config import LoraConfig
from rayrag.errors import ConfigError, ModelError
from rayrag.generator.lora import (
    LoRALinear,
    LoRASwiGLUExperts,
    apply_lora,
    load_adapters,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_lora,
    read_adapter_config,
    save_adapters,
    unmerge_lora,
)
from rayrag.generator.moe import MoELayer, SwiGLUExperts, grouped_mm_runs, naive_moe_forward

D = 16


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Toy-sized matmuls: on a shared 2-core box, OpenMP threads spin-waiting on each other
    # cost 10x the arithmetic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(D, D, bias=False)
        self.k_proj = nn.Linear(D, D, bias=False)
        self.v_proj = nn.Linear(D, D, bias=True)
        self.o_proj = nn.Linear(D, D, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q_proj(x) @ self.k_proj(x).transpose(-2, -1) / D**0.5  # (B, S, S)
        return self.o_proj(scores.softmax(-1) @ self.v_proj(x))


class Block(nn.Module):
    def __init__(self, dispatch: str) -> None:
        super().__init__()
        self.self_attn = Attention()
        self.block_sparse_moe = MoELayer(
            d_model=D, ffn_dim=24, n_experts=4, top_k=2, dispatch=dispatch
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(x)
        return x + self.block_sparse_moe(x)[0]


class Toy(nn.Module):
    """Mixtral's module names in miniature: layers.{i}.self_attn.{q,k,v,o}_proj, experts."""

    def __init__(self, seed: int = 0, dispatch: str = "loop") -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.layers = nn.ModuleList([Block(dispatch), Block(dispatch)])
        self.eval()  # eval = dropless MoE: outputs are a pure function of the weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


LORA_TYPES = (LoRALinear, LoRASwiGLUExperts)
ATTN = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj"))
ALL = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj"), experts=True)


def inputs(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 5, D, generator=torch.Generator().manual_seed(seed))


def train_steps(model: nn.Module, steps: int = 5) -> None:
    mark_only_lora_trainable(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    x, target = inputs(2), inputs(3)
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(x) - target).square().mean()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("config", [ATTN, ALL], ids=["attention", "attention+experts"])
def test_adapted_model_starts_equal_to_the_base(config):
    base, model = Toy(), Toy()
    names = apply_lora(model, config)
    expected = [f"layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    if config.experts:
        expected += [f"layers.{i}.block_sparse_moe.experts" for i in range(2)]
    assert sorted(names) == sorted(expected)
    assert isinstance(model.layers[0].self_attn.q_proj, nn.Linear)
    assert isinstance(model.layers[0].block_sparse_moe.experts, SwiGLUExperts)
    with torch.no_grad():
        assert torch.equal(model(inputs()), base(inputs()))
    # Base keys unchanged (the checkpoint code sees Mixtral names); adapters are extra keys.
    base_keys, keys = set(base.state_dict()), set(model.state_dict())
    assert base_keys <= keys
    assert all("lora_" in k for k in keys - base_keys)
    assert set(lora_state_dict(model)) == keys - base_keys


def test_rank_zero_adds_nothing():
    model = Toy()
    assert apply_lora(model, LoraConfig(rank=0, experts=True)) == []
    assert not any(isinstance(m, (LoRALinear, LoRASwiGLUExperts)) for m in model.modules())


def test_only_adapters_train_and_base_weights_stay_frozen():
    model = Toy()
    apply_lora(model, ALL)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    mark_only_lora_trainable(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any("experts.lora_A.w1" in n for n in trainable)
    train_steps(model)
    for key, value in model.state_dict().items():
        if key in frozen:
            assert torch.equal(value, frozen[key]), key
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize(
    ("config", "dispatch"),
    [(ATTN, "loop"), (ALL, "loop"), (ALL, "auto")],
    ids=["attention", "attention+experts", "attention+experts-auto-dispatch"],
)
def test_merged_equals_unmerged_after_training(config, dispatch):
    base, model = Toy(dispatch=dispatch), Toy(dispatch=dispatch)
    apply_lora(model, config)
    train_steps(model)
    x = inputs()
    with torch.no_grad():
        unmerged = model(x)
        assert not torch.allclose(unmerged, base(x), atol=1e-4)  # training changed something
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        merge_lora(model)
        merge_lora(model)  # idempotent
        torch.testing.assert_close(model(x), unmerged, atol=1e-5, rtol=0)
        unmerge_lora(model)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, weights[key], atol=1e-6, rtol=0)
        torch.testing.assert_close(model(x), unmerged, atol=1e-5, rtol=0)


def test_adapted_experts_match_the_textbook_loop_once_merged():
    model = Toy()
    apply_lora(model, ALL)
    train_steps(model)
    layer = model.layers[0].block_sparse_moe
    x = inputs()
    with torch.no_grad():
        adapted = layer(x)[0]  # the low-rank path through the sorted dispatch
        layer.experts.merge()  # the textbook loop reads the stacked weights: compare it merged
        torch.testing.assert_close(naive_moe_forward(layer, x), adapted, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dispatch", ["loop", "grouped_mm"])
def test_adapted_expert_dispatch_equals_the_textbook_expert(dispatch):
    if dispatch == "grouped_mm" and not grouped_mm_runs(torch.device("cpu"), torch.float32, D, 4):
        pytest.skip("torch._grouped_mm does not run on this CPU build")
    torch.manual_seed(0)
    experts = LoRASwiGLUExperts(SwiGLUExperts(4, D, 24, dispatch), rank=4, alpha=8.0)
    with torch.no_grad():
        for b in experts.lora_B.values():
            b.normal_()
    counts = torch.tensor([3, 0, 5, 2])  # an empty expert and odd sizes
    x = torch.randn(10, D, requires_grad=True)
    y = experts.forward_sorted(x, counts)
    assert experts.last_dispatch == dispatch
    y.square().sum().backward()
    grads = [p.grad.clone() for p in (*experts.lora_A.values(), *experts.lora_B.values())]
    experts.zero_grad()
    x_ref = x.detach().clone().requires_grad_()
    ref = torch.cat(
        [experts.expert(e, rows) for e, rows in enumerate(x_ref.split([3, 0, 5, 2])) if len(rows)]
    )
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-4)
    for grad, p in zip(grads, (*experts.lora_A.values(), *experts.lora_B.values()), strict=True):
        torch.testing.assert_close(grad, p.grad, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        experts.merge()
        torch.testing.assert_close(experts.forward_sorted(x, counts), ref, atol=1e-5, rtol=1e-5)


def test_lora_dropout_acts_only_in_training():
    model = Toy()
    apply_lora(model, LoraConfig(rank=4, alpha=8.0, dropout=0.5, experts=True))
    train_steps(model, steps=1)
    x = inputs()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        model.layers[0].block_sparse_moe.capacity_factor = 10.0  # no drops: only dropout varies
        model.layers[1].block_sparse_moe.capacity_factor = 10.0
        assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("config", [ATTN, ALL], ids=["attention", "attention+experts"])
def test_save_load_round_trip_into_a_fresh_base(config, tmp_path):
    model = Toy()
    apply_lora(model, config)
    train_steps(model)
    out = save_adapters(model, tmp_path / "adapters", config)
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert read_adapter_config(out) == config

    fresh = Toy()  # same seed = same base weights
    names = load_adapters(fresh, out)
    assert sorted(names) == sorted(
        n for n, m in model.named_modules() if isinstance(m, (LoRALinear, LoRASwiGLUExperts))
    )
    x = inputs()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))

    prepared = Toy()  # a model that already has (untrained) adapters of the same shape
    apply_lora(prepared, config)
    load_adapters(prepared, out)
    with torch.no_grad():
        assert torch.equal(prepared(x), model(x))

    # replacing existing adapters is fine, and leaves no temp dirs
    save_adapters(model, out, config)
    assert [p.name for p in tmp_path.iterdir()] == ["adapters"]


def test_mismatched_adapters_are_a_clear_error(tmp_path):
    model = Toy()
    apply_lora(model, ATTN)
    save_adapters(model, tmp_path / "a", ATTN)

    wider = Toy()
    apply_lora(wider, LoraConfig(rank=8, alpha=8.0, targets=("q_proj", "v_proj")))
    with pytest.raises(ModelError, match=r"rank 8 vs saved 4"):
        load_adapters(wider, tmp_path / "a")

    other_targets = Toy()
    apply_lora(other_targets, LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "k_proj")))
    with pytest.raises(
        ModelError, match=r"targets \['k_proj', 'q_proj'\] vs saved \['q_proj', 'v_proj'\]"
    ):
        load_adapters(other_targets, tmp_path / "a")

    with_experts = Toy()
    apply_lora(with_experts, ALL)
    with pytest.raises(ModelError, match="experts True vs saved False"):
        load_adapters(with_experts, tmp_path / "a")

    with pytest.raises(ModelError, match="adapter config not found"):
        load_adapters(Toy(), tmp_path / "missing")

    meta = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    meta["r"] = 2  # config and tensors disagree: the shapes catch it
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="has shape"):
        load_adapters(Toy(), tmp_path / "a")

    meta["r"], meta["use_dora"] = 4, True  # a PEFT option LoRALinear does not implement
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="does not implement: use_dora=True"):
        load_adapters(Toy(), tmp_path / "a")

    (tmp_path / "a" / "adapter_model.safetensors").write_bytes(b"garbage")
    meta["use_dora"] = False
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="corrupt"):
        load_adapters(Toy(), tmp_path / "a")


@pytest.mark.parametrize("config", [ATTN, ALL], ids=["attention", "attention+experts"])
def test_adapters_in_the_older_rayrag_format_still_load(config, tmp_path):
    """format_version 1: our own config keys and our state-dict names (read, never written)."""
    model = Toy()
    apply_lora(model, config)
    train_steps(model)
    old = tmp_path / "old"
    old.mkdir()
    save_file(lora_state_dict(model), str(old / "adapter_model.safetensors"))
    meta = {
        "format_version": 1,
        "rank": config.rank,
        "alpha": config.alpha,
        "dropout": config.dropout,
        "targets": list(config.targets),
        "experts": config.experts,
        "adapted_modules": [n for n, m in model.named_modules() if isinstance(m, LORA_TYPES)],
    }
    (old / "adapter_config.json").write_text(json.dumps(meta))
    assert read_adapter_config(old) == config
    fresh = Toy()
    load_adapters(fresh, old)
    with torch.no_grad():
        assert torch.equal(fresh(inputs()), model(inputs()))
    meta["format_version"] = 7
    (old / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="format_version 7 is not supported"):
        load_adapters(Toy(), old)


def test_config_errors():
    untouched = Toy()
    with pytest.raises(ConfigError, match=r"lora.targets \['qproj'\] match no nn.Linear"):
        apply_lora(untouched, LoraConfig(rank=4, targets=("qproj", "v_proj")))
    assert not lora_state_dict(untouched)  # v_proj matched, but nothing was replaced
    model = Toy()
    apply_lora(model, ATTN)
    with pytest.raises(ConfigError, match="already has LoRA adapters"):
        apply_lora(model, ATTN)
    with pytest.raises(
        ConfigError,
        match=r"rank 4 vs config 8; targets \['q_proj', 'v_proj'\] vs config \['q_proj'\]",
    ):
        save_adapters(model, "unused", LoraConfig(rank=8, targets=("q_proj",)))
    with pytest.raises(ConfigError, match="no LoRA adapters"):
        save_adapters(Toy(), "unused", ATTN)


def test_lora_linear_math_matches_the_paper():
    base = nn.Linear(D, 8, bias=True)
    layer = LoRALinear(base, rank=2, alpha=6.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, D)
    expected = x @ base.weight.T + base.bias + 3.0 * (x @ layer.lora_A.T @ layer.lora_B.T)
    torch.testing.assert_close(layer(x), expected)
    assert not layer.weight.requires_grad and not layer.bias.requires_grad


def test_applies_to_the_real_transformer_by_mixtral_names():
    from rayrag.config import GeneratorConfig
    from rayrag.generator.model import MoETransformer

    config = GeneratorConfig(
        vocab_size=300,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=48,
        n_experts=4,
        adaptive_softmax_cutoffs=(),
    )
    torch.manual_seed(0)
    model = MoETransformer(config).eval()
    ids = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model(ids).logits
    names = apply_lora(model, ALL)
    assert (
        "model.layers.1.self_attn.v_proj" in names
        and "model.layers.0.block_sparse_moe.experts" in names
    )
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base)
