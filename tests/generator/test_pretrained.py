"""A pretrained checkpoint answers in its own tokenizer and chat format, stops at its own ids.

The checkpoint is a tiny random Mixtral that transformers writes here, with a BPE tokenizer
trained here (Mistral's special tokens at Mistral's ids) and a chat template that, like
Mistral's, refuses a system turn. transformers is the reference for the rendering and for
greedy decoding.
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from rayrag.config import resolve_config
from rayrag.errors import DataError, ModelError
from rayrag.generator.pretrained import (
    SYSTEM_PROMPT,
    PretrainedTokenizer,
    build_chat_prompt,
    build_chat_training_example,
    is_pretrained,
    user_turn,
)
from rayrag.generator.reader import Reader
from rayrag.types import Evidence, Fact, Passage

# Like Mistral's template: [INST] ... [/INST], user and assistant turns only.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported') }}"
    "{% endif %}{% endfor %}"
)
TEXTS = [
    "Helix Corp acquired Brightwater Labs in 2019. Brightwater Labs makes sensors.",
    "Answer the question from the numbered passages and facts. Cite every passage you use.",
    "Question: Who acquired Brightwater Labs? Passages: Facts: [1] [2] [3] [4] [INST] [/INST]",
    "Kingsmere Technologies is based in Hollowell. Granite Process Engine was built in 2011.",
]
PASSAGES = tuple(
    Passage(chunk_id=f"doc-{i}#0", doc_id=f"doc-{i}", text=text, score=1.0 - i / 10, title=f"T{i}")
    for i, text in enumerate(TEXTS[0::3] + TEXTS[0::3])
)
FACTS = (
    Fact(
        subject="Helix Corp",
        relation="acquired",
        object="Brightwater Labs",
        confidence=1.0,
        chunk_ids=("doc-0#0",),
        doc_ids=("doc-0",),
    ),
)


def _write_checkpoint(path, eos_extra: int | None = None, max_positions: int = 512):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        MixtralConfig,
        MixtralForCausalLM,
        PreTrainedTokenizerFast,
    )

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(TEXTS * 4, trainer)
    from tokenizers import decoders

    bpe.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = MixtralConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=max_positions,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    model = MixtralForCausalLM(config).eval()
    model.save_pretrained(path)
    eos = [2] if eos_extra is None else [2, eos_extra]
    GenerationConfig(bos_token_id=1, eos_token_id=eos, pad_token_id=2).save_pretrained(path)
    return model, tokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("mixtral")
    model, tokenizer = _write_checkpoint(path)
    return path, model, tokenizer


def _config(max_new_tokens: int = 6):
    return resolve_config(
        "demo",
        [
            "tracking.enabled=false",
            f"decoding.max_new_tokens={max_new_tokens}",
            "decoding.candidates=1",
            "decoding.dtype=float32",
        ],
    )


def test_a_transformers_checkpoint_is_told_apart_from_ours(checkpoint, tmp_path):
    path, _, _ = checkpoint
    assert is_pretrained(path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mixtral", "rayrag": {}}))
    assert not is_pretrained(tmp_path)


def test_the_prompt_is_the_chat_template_as_transformers_renders_it(checkpoint):
    path, _, hf_tokenizer = checkpoint
    tok = PretrainedTokenizer.load(path)
    prompt = build_chat_prompt("Who acquired Brightwater Labs?", PASSAGES[:2], FACTS, tok, 4096)
    # The template refuses a system turn: the instructions open the user turn instead.
    user = f"{SYSTEM_PROMPT}\n\n" + user_turn("Who acquired Brightwater Labs?", PASSAGES[:2], FACTS)
    expected = hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": user}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    assert prompt.ids == list(expected)
    text = hf_tokenizer.decode(prompt.ids)
    assert text.startswith("<s>[INST] Answer the question") and text.endswith(" [/INST]")
    assert "\n[1] T0: Helix Corp acquired" in text and "\n[2] T1: Kingsmere" in text
    assert "Facts:\nHelix Corp acquired Brightwater Labs" in text
    assert [c.marker for c in prompt.citations] == [1, 2] and prompt.truncated == []


def test_passages_are_dropped_lowest_ranked_first_to_fit_the_window(checkpoint):
    path, _, _ = checkpoint
    tok = PretrainedTokenizer.load(path)
    whole = build_chat_prompt("Who?", PASSAGES, FACTS, tok, 4096)
    one = build_chat_prompt("Who?", PASSAGES[:1], FACTS, tok, 4096)
    # A budget that holds the first passage and the fact but not the second passage.
    prompt = build_chat_prompt("Who?", PASSAGES, FACTS, tok, len(one.ids) + 1)
    assert len(prompt.ids) <= len(one.ids) + 1 < len(whole.ids)
    assert [c.passage.chunk_id for c in prompt.citations] == [PASSAGES[0].chunk_id]
    assert prompt.truncated == [p.chunk_id for p in PASSAGES[1:]]
    with pytest.raises(DataError, match="question does not fit"):
        build_chat_prompt("Who?", PASSAGES, FACTS, tok, 5)


def test_a_training_example_is_the_served_prompt_then_the_answer_and_its_stop_id(checkpoint):
    path, _, hf_tokenizer = checkpoint
    tok = PretrainedTokenizer.load(path)
    question = "Who acquired Brightwater Labs?"
    ids, labels = build_chat_training_example(
        question, PASSAGES[:2], FACTS, " Helix Corp ", tok, 4096
    )
    prompt = build_chat_prompt(question, PASSAGES[:2], FACTS, tok, 4096)
    n = len(prompt.ids)
    assert ids[:n] == prompt.ids and labels[:n] == [-100] * n
    assert (
        ids[n:] == labels[n:] == [*hf_tokenizer.encode("Helix Corp", add_special_tokens=False), 2]
    )
    # The prompt gives way to the answer (passages dropped), never the other way round.
    short, _ = build_chat_training_example(question, PASSAGES, FACTS, "Helix Corp", tok, n + 3)
    assert len(short) <= n + 3 and short[-1] == 2
    with pytest.raises(DataError, match="answer is empty"):
        build_chat_training_example(question, PASSAGES, FACTS, " ", tok, 4096)
    with pytest.raises(DataError, match=r"question does not fit .*answer takes"):
        build_chat_training_example(question, PASSAGES, FACTS, "Helix Corp", tok, 20)


def test_the_reader_decodes_greedily_as_transformers_does(checkpoint):
    path, model, hf_tokenizer = checkpoint
    reader = Reader(path, _config(max_new_tokens=6), device="cpu")
    evidence = Evidence(passages=PASSAGES[:2], facts=FACTS)
    result = reader.answer("Who acquired Brightwater Labs?", evidence)
    prompt = reader.build("Who acquired Brightwater Labs?", evidence)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt.ids]), do_sample=False, max_new_tokens=6, eos_token_id=[2]
        )
    expected = out[0, len(prompt.ids) :].tolist()
    assert result.prompt_tokens == len(prompt.ids)
    assert result.answer.text == hf_tokenizer.decode(expected, skip_special_tokens=True).strip()
    assert result.completion_tokens == len([t for t in expected if t != 2]) + (2 in expected)
    assert [p.chunk_id for p in result.answer.citations] == ["doc-0#0", "doc-1#0"]


def test_decoding_stops_at_every_id_generation_config_names(tmp_path):
    model, _ = _write_checkpoint(tmp_path / "probe")
    reader = Reader(tmp_path / "probe", _config(max_new_tokens=6), device="cpu")
    evidence = Evidence(passages=PASSAGES[:1], facts=())
    prompt = reader.build("Who acquired Brightwater Labs?", evidence)
    with torch.no_grad():
        free = model.generate(
            torch.tensor([prompt.ids]), do_sample=False, max_new_tokens=6, eos_token_id=[2]
        )[0, len(prompt.ids) :].tolist()
    stop = free[2]  # the third token the model picks becomes a stop id
    assert stop != 2 and stop not in free[:2]
    # Same weights and tokenizer; generation_config.json now names a second stop id.
    _write_checkpoint(tmp_path / "stops", eos_extra=stop)
    stopped = Reader(tmp_path / "stops", _config(max_new_tokens=6), device="cpu")
    result = stopped.answer("Who acquired Brightwater Labs?", evidence)
    # The first stop id is the eos; the others end the answer as stop sequences, uncounted.
    assert result.finish_reason == "stop" and result.completion_tokens == 2
    assert result.answer.text == stopped.tokenizer.decode(free[:2]).strip()
    assert stopped.tokenizer.stop_ids == (2, stop)


def test_a_pretrained_tokenizer_pickles_as_its_folder(checkpoint):
    path, _, _ = checkpoint
    tok = PretrainedTokenizer.load(path)
    again = pickle.loads(pickle.dumps(tok))
    assert again.encode("Helix Corp") == tok.encode("Helix Corp") and again.stop_ids == (2,)


def test_a_pretrained_checkpoint_without_its_tokenizer_is_one_line(checkpoint, tmp_path):
    path, _, _ = checkpoint
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    with pytest.raises(ModelError, match="needs its tokenizer") as error:
        Reader(tmp_path, _config()).warm_up()
    assert "\n" not in str(error.value)
