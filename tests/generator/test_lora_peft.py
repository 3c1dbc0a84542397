"""Adapters in PEFT's format: ours load in PEFT, PEFT's load here, vLLM's loader would take them.

The base is a tiny random Mixtral that transformers writes (tests/generator/test_pretrained.py),
so PEFT adapts the real `MixtralForCausalLM` and our `MoETransformer` reads the same weights.
Equal logits (float32) are the proof that keys, shapes, scaling and module paths agree.
"""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch
from safetensors import safe_open

from rayrag.config import LoraConfig
from rayrag.errors import ModelError
from rayrag.generator.checkpoint import load_checkpoint
from rayrag.generator.lora import (
    apply_lora,
    load_adapters,
    lora_state_dict,
    peft_adapter_config,
    read_adapter_config,
    save_adapters,
)
from tests.generator.test_pretrained import _write_checkpoint

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
TOLERANCE = 1e-4  # float32, two implementations of the same Mixtral


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("mixtral")
    _write_checkpoint(path)
    return path


def ids(vocab: int) -> torch.Tensor:
    return torch.randint(3, vocab, (2, 12), generator=torch.Generator().manual_seed(0))


def hf_model(base):
    return transformers.MixtralForCausalLM.from_pretrained(base, dtype=torch.float32).eval()


def perturb(model, seed: int = 0) -> None:
    """B starts at zero (the adapted model equals the base): give every factor real values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


def adapted_here(base, config: LoraConfig, seed: int = 0):
    model = load_checkpoint(base, dtype=torch.float32)
    apply_lora(model, config)
    perturb(model, seed)
    return model.eval()


def test_our_adapters_load_in_peft_with_the_same_logits(base, tmp_path):
    config = LoraConfig(rank=4, alpha=8.0, dropout=0.05, targets=ATTENTION)
    ours = adapted_here(base, config)
    out = save_adapters(ours, tmp_path / "adapters", config, base_model=base)
    saved = json.loads((out / "adapter_config.json").read_text())
    print("\nadapter_config.json as saved:\n" + json.dumps(saved, indent=2, sort_keys=True))
    assert saved["peft_type"] == "LORA" and saved["task_type"] == "CAUSAL_LM"
    assert (saved["r"], saved["lora_alpha"], saved["lora_dropout"]) == (4, 8, 0.05)
    assert saved["target_modules"] == list(ATTENTION) and saved["bias"] == "none"
    assert saved["base_model_name_or_path"] == str(base) and "rayrag" not in saved

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = peft.PeftModel.from_pretrained(hf_model(base), str(out)).eval()
    noisy = [
        str(w.message) for w in caught if re.search(r"missing|unexpected", str(w.message), re.I)
    ]
    assert noisy == []
    check = loaded.load_adapter(str(out), adapter_name="again")  # the load result, key by key
    assert check.missing_keys == [] and check.unexpected_keys == []
    loaded.set_adapter("default")

    x = ids(ours.config.vocab_size)
    with torch.no_grad():
        want = ours(x).logits
        got = loaded(input_ids=x).logits
        plain = hf_model(base)(input_ids=x).logits
    diff, moved = max_diff(got, want), max_diff(plain, want)
    print(f"ours -> PEFT: max |logit diff| {diff:.2e} (adapters move logits by {moved:.2e})")
    assert diff <= TOLERANCE and moved > 100 * TOLERANCE


def test_adapters_peft_saved_load_here_with_the_same_logits(base, tmp_path):
    peft_config = peft.LoraConfig(
        r=4,
        lora_alpha=16,
        lora_dropout=0.1,
        target_modules=["q_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    theirs = peft.get_peft_model(hf_model(base), peft_config)
    perturb(theirs, seed=1)
    theirs.save_pretrained(str(tmp_path / "peft"))
    theirs.eval()

    ours = load_checkpoint(base, dtype=torch.float32)
    names = load_adapters(ours, tmp_path / "peft")
    assert sorted(names) == sorted(
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj", "o_proj")
    )
    read = read_adapter_config(tmp_path / "peft")  # targets in PEFT's (set) order
    assert read.model_copy(update={"targets": tuple(sorted(read.targets))}) == LoraConfig(
        rank=4, alpha=16.0, dropout=0.1, targets=("o_proj", "q_proj", "v_proj")
    )
    x = ids(ours.config.vocab_size)
    with torch.no_grad():
        want = theirs(input_ids=x).logits
        got = ours.eval()(x).logits
    diff = max_diff(got, want)
    print(f"\nPEFT -> ours: max |logit diff| {diff:.2e}")
    assert diff <= TOLERANCE and max_diff(got, load_checkpoint(base)(x).logits) > 100 * TOLERANCE

    # The schema PEFT writes is the one we write: same keys, same values where both decide.
    written = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    ours_config = peft_adapter_config(read_adapter_config(tmp_path / "peft"))
    assert sorted(ours_config) == sorted(written)
    differ = {k for k in written if ours_config[k] != written[k]}
    assert differ <= {"target_modules", "base_model_name_or_path", "peft_version"}, differ
    assert sorted(written["target_modules"]) == sorted(ours_config["target_modules"])
    # Re-saved here, the tensors keep PEFT's names and values.
    save_adapters(ours, tmp_path / "again", read_adapter_config(tmp_path / "peft"))
    with (
        safe_open(str(tmp_path / "peft" / "adapter_model.safetensors"), "pt") as a,
        safe_open(str(tmp_path / "again" / "adapter_model.safetensors"), "pt") as b,
    ):
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


# What vLLM's LoRA loader requires of an adapter directory (vllm/lora/peft_helper.py and
# vllm/lora/lora_model.py): adapter_config.json with the required fields r, lora_alpha and
# target_modules, modules_to_save null, no DoRA, bias "none" (adapter biases need
# --enable-lora-bias); adapter_model.safetensors whose every key parses as
# `base_model.model.<module>.lora_A|lora_B.weight` and names a module the model adapts,
# else "expected target modules in ... but received ..." (ValueError). vLLM's Mixtral adapts
# q/k/v_proj (packed into qkv_proj) and o_proj; expert weights only with FusedMoE LoRA.
VLLM_MIXTRAL_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj"}


def vllm_problems(directory) -> list[str]:
    config = json.loads((directory / "adapter_config.json").read_text())
    problems = [f"missing {k}" for k in ("r", "lora_alpha", "target_modules") if k not in config]
    if config.get("modules_to_save"):
        problems.append("modules_to_save")
    if config.get("use_dora"):
        problems.append("use_dora")
    if config.get("bias", "none") != "none":
        problems.append(f"bias {config['bias']}")
    weights = directory / "adapter_model.safetensors"
    if not weights.is_file():
        return [*problems, "no adapter_model.safetensors"]
    with safe_open(str(weights), "pt") as handle:
        for key in handle.keys():
            m = re.fullmatch(r"base_model\.model\.(.+)\.(lora_A|lora_B)\.weight", key)
            if m is None:
                problems.append(f"unsupported LoRA weight {key}")
                continue
            if m[1].rsplit(".", 1)[-1] not in VLLM_MIXTRAL_MODULES:
                problems.append(f"unexpected module {m[1]}")
                continue
            shape = handle.get_slice(key).get_shape()
            rank_dim = shape[0] if m[2] == "lora_A" else shape[1]
            if rank_dim != config["r"]:
                problems.append(f"{key}: rank {rank_dim} != r {config['r']}")
    return problems


def test_the_directory_has_what_vllm_requires(base, tmp_path):
    config = LoraConfig(rank=4, alpha=8.0, targets=ATTENTION)
    out = save_adapters(adapted_here(base, config), tmp_path / "adapters", config)
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert vllm_problems(out) == []


def test_expert_adapters_load_in_peft_but_not_in_vllm_without_moe_lora(base, tmp_path):
    """Per-expert layout under Mixtral's names: PEFT 0.21 maps it onto transformers 5's fused
    experts itself; vLLM's Mixtral (before FusedMoE LoRA) refuses expert weights."""
    config = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj"), experts=True)
    ours = adapted_here(base, config)
    out = save_adapters(ours, tmp_path / "experts", config)
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["target_modules"] == ["q_proj", "v_proj", "w1", "w3", "w2"]
    assert sorted(saved) == sorted(peft_adapter_config(LoraConfig()))  # PEFT's keys, no others
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    assert "base_model.model.model.layers.1.block_sparse_moe.experts.3.w2.lora_B.weight" in keys
    fresh = load_checkpoint(base, dtype=torch.float32)
    load_adapters(fresh, out)
    assert lora_state_dict(fresh)["model.layers.0.block_sparse_moe.experts.lora_A.w1"].shape == (
        4,
        4,
        32,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = peft.PeftModel.from_pretrained(hf_model(base), str(out)).eval()
    assert not [w for w in caught if re.search(r"missing|unexpected", str(w.message), re.I)]
    x = ids(ours.config.vocab_size)
    with torch.no_grad():
        want = ours(x).logits
        assert torch.equal(fresh.eval()(x).logits, want)
        diff = max_diff(loaded(input_ids=x).logits, want)
    print(f"\nours (attention + experts) -> PEFT: max |logit diff| {diff:.2e}")
    assert diff <= TOLERANCE
    assert any("unexpected module" in p and "experts" in p for p in vllm_problems(out))


def test_peft_options_we_do_not_implement_are_refused(base, tmp_path):
    config = LoraConfig(rank=4, alpha=8.0, targets=("q_proj",))
    out = save_adapters(adapted_here(base, config), tmp_path / "a", config)
    raw = json.loads((out / "adapter_config.json").read_text())
    for key, value in (("use_rslora", True), ("layer_replication", [[0, 1]])):
        (out / "adapter_config.json").write_text(json.dumps({**raw, key: value}))
        with pytest.raises(ModelError, match=f"does not implement: {key}="):
            load_adapters(load_checkpoint(base), out)
