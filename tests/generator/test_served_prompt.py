"""The reader's prompt comes from MLflow's prompt registry at the pinned version, as rendered
there: an edit registered as a new version and pinned changes what the reader builds."""

from __future__ import annotations

import pytest

from rayrag.config import RAGConfig
from rayrag.errors import ConfigError
from rayrag.generator.prompt import (
    ANSWER_CUE,
    BUILTIN_TEMPLATE,
    CONTEXT_HEADER,
    PROMPT_TEMPLATE,
    QUESTION_FORMAT,
    ReaderTemplate,
    build_prompt,
    pin_reader_prompt,
    reader_template,
    served_prompt_label,
)
from rayrag.generator.reader import Reader
from rayrag.tracking.model_registry import ModelRegistry, model_prompt_tag
from rayrag.tracking.tracker import Tracker
from rayrag.types import Evidence
from tests.generator.test_reader import FACTS, passages, tiny_tokenizer, write_checkpoint

EDITED = PROMPT_TEMPLATE.replace("context:", "sources:").replace("answer:", "reply:")
QUESTION = "Who acquired Brightwater Labs?"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tok):
    return write_checkpoint(tmp_path_factory.mktemp("served-prompt") / "ckpt", tok)


def _config(store, *overrides: str) -> RAGConfig:
    return RAGConfig().with_overrides(
        [f"tracking.tracking_uri=sqlite:///{store}", "decoding.max_new_tokens=4", *overrides]
    )


def _text(reader: Reader) -> str:
    prompt = reader.build(QUESTION, Evidence(passages=passages(2), facts=FACTS))
    return reader.tokenizer.decode(prompt.ids, skip_special=False)


def test_the_built_in_template_parses_to_the_segments_trained_checkpoints_read(tok):
    assert BUILTIN_TEMPLATE == ReaderTemplate.parse(PROMPT_TEMPLATE, "rayrag-reader/1")
    assert BUILTIN_TEMPLATE.context_header == CONTEXT_HEADER
    assert BUILTIN_TEMPLATE.answer_cue == ANSWER_CUE
    asked = BUILTIN_TEMPLATE.question_prefix + QUESTION + BUILTIN_TEMPLATE.question_suffix
    assert asked == QUESTION_FORMAT.format(question=QUESTION)
    # the default and an explicit built-in template lay out the same ids
    plain = build_prompt(QUESTION, passages(2), FACTS, tok, 200)
    explicit = build_prompt(QUESTION, passages(2), FACTS, tok, 200, template=BUILTIN_TEMPLATE)
    assert plain.ids == explicit.ids


@pytest.mark.parametrize(
    "template",
    [
        PROMPT_TEMPLATE.replace("{question}", ""),
        PROMPT_TEMPLATE.replace("{passages}", ""),
        PROMPT_TEMPLATE.replace("<sep>", "", 1),
        PROMPT_TEMPLATE + "{question}",
        "Answer {{question}} from {{passages}}",
    ],
)
def test_a_template_without_the_readers_placeholders_is_a_one_line_error(template):
    with pytest.raises(ConfigError, match="prompt rayrag-reader/7 is not a reader template") as e:
        ReaderTemplate.parse(template, "rayrag-reader/7")
    assert "\n" not in str(e.value)


def test_tracking_off_serves_the_built_in_template_unregistered(checkpoint):
    config = RAGConfig().with_overrides(["tracking.enabled=false", "decoding.max_new_tokens=4"])
    assert pin_reader_prompt(config) == (config, None)
    reader = Reader(checkpoint, config, device="cpu")
    reader.warm_up()
    assert reader.template == BUILTIN_TEMPLATE
    assert served_prompt_label(config) == "rayrag-reader/unregistered"


def test_an_edit_registered_and_pinned_changes_what_is_served(tmp_path, checkpoint):
    store = tmp_path / "mlflow.db"
    unpinned = _config(store)
    first, text = pin_reader_prompt(unpinned)  # registers the built-in template on first use
    assert first.tracking.prompt_version == 1 and text == PROMPT_TEMPLATE
    before = Reader(checkpoint, first, device="cpu")
    assert "context:" in _text(before) and "sources:" not in _text(before)

    assert Tracker(unpinned.tracking).register_prompt(EDITED) == 2  # the edit, in MLflow
    pinned, text = pin_reader_prompt(_config(store, "tracking.prompt_version=2"))
    assert pinned.tracking.prompt_version == 2 and text == EDITED
    assert served_prompt_label(pinned) == "rayrag-reader/2"
    # a fresh reader reads the pin itself (ask, eval) or takes the text loaded once (serve)
    for reader in (
        Reader(checkpoint, pinned, device="cpu"),
        Reader(checkpoint, pinned, device="cpu", template=text),
    ):
        built = _text(reader)
        assert "sources:" in built and "reply:" in built and "context:" not in built
        assert built.index("sources:") < built.index(QUESTION) < built.index("reply:")
    # the edit left version 1 alone: the unedited reader still reads the built-in layout
    assert reader_template(first) == BUILTIN_TEMPLATE


def test_the_served_model_versions_prompt_tag_pins_the_prompt(tmp_path, checkpoint):
    store = tmp_path / "mlflow.db"
    config = _config(store)
    tracker = Tracker(config.tracking)
    tracker.register_prompt(PROMPT_TEMPLATE)
    tracker.register_prompt(EDITED)
    ModelRegistry(tracker).register(checkpoint, tags={"prompt_version": "rayrag-reader/2"})
    tag = model_prompt_tag("models:/rayrag-generator@champion", config.tracking)
    assert tag == "rayrag-reader/2"
    pinned, text = pin_reader_prompt(config, tag)
    assert pinned.tracking.prompt_version == 2 and text == EDITED
    # the config's own pin wins over the model's tag
    own, _ = pin_reader_prompt(_config(store, "tracking.prompt_version=1"), tag)
    assert own.tracking.prompt_version == 1
    assert model_prompt_tag(checkpoint, config.tracking) == ""  # a local path names no version


def test_a_pinned_version_that_is_no_reader_template_fails_at_start_up(tmp_path, checkpoint):
    store = tmp_path / "mlflow.db"
    config = _config(store)
    Tracker(config.tracking).register_prompt("Answer {{question}} from {{passages}}")
    bad = _config(store, "tracking.prompt_version=1")
    with pytest.raises(ConfigError, match="prompt rayrag-reader/1 is not a reader template"):
        pin_reader_prompt(bad)
    with pytest.raises(ConfigError, match="prompt rayrag-reader/1 is not a reader template"):
        Reader(checkpoint, bad, device="cpu").warm_up()
