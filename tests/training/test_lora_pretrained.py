"""LoRA on a pretrained base: reader examples in its chat format, adapters PEFT loads.

The base is a tiny random Mixtral that transformers writes, with its own BPE tokenizer,
Mistral-like chat template and generation_config (tests/generator/test_pretrained.py); the
bundle and QA file are tests/training/test_train_data.py's hand-made ones (no Ray, no spaCy).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch

from rayrag.config import load_config
from rayrag.data.readers import read_qa
from rayrag.errors import DataError
from rayrag.generator.checkpoint import load_checkpoint
from rayrag.generator.lora import load_adapters
from rayrag.generator.pretrained import PretrainedTokenizer
from rayrag.training.data import TrainDataBuilder
from rayrag.training.trainer import base_vocab_size
from tests.generator.test_pretrained import _write_checkpoint
from tests.training.test_train_data import make_tiny_bundle

# generator.vocab_size (64) is below the base's 400 tokens: only the base's own config counts.
SETTINGS = [
    "generator.vocab_size=64",
    "train.reader_steps=4",
    "train.batch_size=2",
    "train.seq_len=384",
    "train.warmup_steps=1",
    "train.eval_every=2",
    "train.checkpoint_every=100",
    "train.val_fraction=0.25",
    "train.context_passages=2",
    "train.num_threads=1",
    "train.lora_lr=0.01",
    "tracking.enabled=false",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora-pretrained")
    base = root / "mixtral"
    _write_checkpoint(base)
    bundle, qa = make_tiny_bundle(root)
    return root, base, bundle, qa


def test_reader_examples_are_in_the_bases_chat_format(setup):
    _, base, bundle, qa = setup
    tok = PretrainedTokenizer.load(base)
    builder = TrainDataBuilder(load_config(None, SETTINGS))
    data = builder.run(bundle, qa, tokenizer=tok, vocab_size=base_vocab_size(base))
    assert data.token_order is None and len(data.lm.train_inputs) == 0  # no LM phase
    assert data.reader.source == "qa" and data.reader.train
    answers = {a for pair in read_qa(qa) for a in pair.answers}
    for ids, labels in data.reader.train + data.reader.val:
        n = labels.index(next(x for x in labels if x != -100))
        assert tok.decode(ids[:n], skip_special=False).startswith("<s>[INST] Answer the question")
        assert ids[n - 1] == tok.encode(" [/INST]")[-1]  # the generation prompt's end
        assert labels[n:] == ids[n:] and labels[-1] == tok.eos_id == 2
        assert tok.decode(ids[n:]).strip() in answers
    with pytest.raises(DataError, match="more than the base's vocab_size 300"):
        builder.run(bundle, qa, tokenizer=tok, vocab_size=300)


def _rayrag(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rayrag.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"},
        timeout=600,
    )


def test_rayrag_train_lora_on_a_pretrained_checkpoint_gives_adapters_peft_loads(setup):
    peft = pytest.importorskip("peft")
    from transformers import MixtralForCausalLM

    root, base, bundle, qa = setup
    out = root / "adapters"
    sets = [arg for s in SETTINGS for arg in ("--set", s)]
    proc = _rayrag(
        "train",
        *("--bundle", str(bundle), "--qa", str(qa), "--out", str(out)),
        *("--base", str(base), "--lora-rank", "4", *sets),
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    reader = result["phases"]["reader"]
    print(f"\nrayrag train --lora-rank 4 on a pretrained Mixtral: {json.dumps(reader)}")
    assert result["mode"] == "lora" and set(result["phases"]) == {"reader"}
    assert all(math.isfinite(reader[k]) for k in ("train_loss", "val_loss", "val_loss_start"))
    assert result["lora_rank"] == 4 and result["reader_source"] == "qa"
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "training.json",
    ]
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str(base.resolve()) and saved["r"] == 4

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hf = MixtralForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
        loaded = peft.PeftModel.from_pretrained(hf, str(out)).eval()
    assert not [w for w in caught if re.search(r"missing|unexpected", str(w.message), re.I)]
    ours = load_checkpoint(base, dtype=torch.float32)
    load_adapters(ours, out)
    x = torch.randint(3, 400, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = loaded(input_ids=x).logits, ours.eval()(x).logits
        plain = load_checkpoint(base, dtype=torch.float32)(x).logits
    assert float((got - want).abs().max()) <= 1e-4
    assert float((want - plain).abs().max()) > 0  # training moved the adapters off zero

    # merged into a plain checkpoint (what tune registers), it keeps the base's chat format:
    # the tokenizer files come along and the Reader reads it as a pretrained model
    from rayrag.generator.checkpoint import PRETRAINED_TOKENIZER_FILES
    from rayrag.generator.lora import export_merged
    from rayrag.generator.pretrained import is_pretrained

    merged = export_merged(base, out, root / "merged")
    copied = {p.name for p in merged.iterdir()} & set(PRETRAINED_TOKENIZER_FILES)
    assert copied == {p.name for p in base.iterdir()} & set(PRETRAINED_TOKENIZER_FILES)
    assert {"tokenizer_config.json", "generation_config.json"} <= copied
    assert is_pretrained(merged) and PretrainedTokenizer.load(merged).stop_ids == (
        PretrainedTokenizer.load(base).stop_ids
    )
    with torch.no_grad():
        again = load_checkpoint(merged, dtype=torch.float32).eval()(x).logits
        hf_merged = MixtralForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
        assert float((again - want).abs().max()) <= 1e-4
        assert float((hf_merged(input_ids=x).logits - want).abs().max()) <= 1e-4
