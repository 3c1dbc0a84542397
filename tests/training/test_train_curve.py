"""The exact-match learning curve (train_curve.py): scoring per slice, the plot, bad input."""

from __future__ import annotations

import pytest

from rayrag.config import load_config
from rayrag.errors import DataError
from rayrag.generator.generate import generate
from rayrag.generator.tokenizer import train_tokenizer
from rayrag.training.curve import AnswerCurve
from tests.generator.test_model import tiny_model


def test_bad_limits_and_an_unprepared_curve_are_one_line_errors(tmp_path):
    config = load_config(None, [])
    with pytest.raises(DataError, match="curve limit must be > 0"):
        AnswerCurve(config, tmp_path, tmp_path / "qa.jsonl", limit=0)
    with pytest.raises(DataError, match="prepare"):
        AnswerCurve(config, tmp_path, tmp_path / "qa.jsonl")(tiny_model(), step=1)


def test_scores_exact_match_per_hops_slice_and_plots_the_history(tmp_path):
    config = load_config(None, ["decoding.max_new_tokens=3"])
    tokenizer = train_tokenizer(["Helix Dynamics acquired Brightwater Labs."] * 4, vocab_size=300)
    model = tiny_model(max_seq_len=64, vocab_size=300).eval()
    curve = AnswerCurve(config, tmp_path, tmp_path / "qa.jsonl")
    prompt = tokenizer.encode("Helix Dynamics acquired")
    curve.prompts = [prompt, prompt]
    curve._tokenizer, curve._eos, curve._pad, curve._stop = (
        tokenizer,
        tokenizer.eos_id,
        tokenizer.pad_id,
        [[tokenizer.sep_id]],
    )
    (generation,) = generate(
        model,
        [prompt],
        max_new_tokens=3,
        eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id,
        stop=[[tokenizer.sep_id]],
    )
    text = tokenizer.decode(generation.tokens).strip()
    # One row's gold is what the model says (when it says anything), the other's never is.
    curve.answers, curve.slices = [[text or "unreachable"], ["never said"]], ["1", "2"]
    point = curve(model, step=5)
    assert point["curve/em_hops_1"] == (1.0 if text else 0.0) and point["curve/em_hops_2"] == 0.0
    assert set(point) == {"curve/em", "curve/em_hops_1", "curve/em_hops_2"}
    assert curve.history == [(5, point)]
    assert curve.plot(tmp_path / "em.png").stat().st_size > 0
