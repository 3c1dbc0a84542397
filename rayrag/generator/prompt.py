"""The reader prompt: question, ranked passages and KG facts laid out as token ids.

One template, the Fusion-in-Decoder/RETRO-style "context then question" layout with numbered
citation markers as in ALCE (Gao et al. 2023), so an answer can cite "[2]". The built-in
`PROMPT_TEMPLATE` is version 1 in MLflow's prompt registry; at serving the reader uses the
pinned version as the registry renders it (`pin_reader_prompt`, `ReaderTemplate`):

    <bos>context:
    [1] Brightwater Labs: Helix Corp acquired Brightwater Labs in 2019.
    [2] Another passage without a title.
    facts:
    Helix Corp acquired Brightwater Labs
    <sep>question: Who acquired Brightwater Labs?<sep>answer:

The answer follows as " " + answer + <eos> (see `build_training_example`). Each segment is
encoded on its own and the ids concatenated, so a segment's length is known before it is
added and training and serving tokenise the same prompt the same way. When the prompt is
too long, the lowest-ranked passage goes first, then the last fact; the question is never cut.

    >>> prompt = build_prompt(
    ...     question, evidence.passages, evidence.facts, tok, max_prompt_tokens=896
    ... )
    >>> prompt.ids[:1], [c.marker for c in prompt.citations], prompt.truncated
    ([1], [1, 2, 3], ['doc-7#4'])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rayrag.errors import ConfigError, DataError
from rayrag.generator.tokenizer import RayragTokenizer
from rayrag.types import Fact, Passage

PROMPT_TEMPLATE_VERSION = "reader-v1"
CONTEXT_HEADER = "context:"
PASSAGE_FORMAT = "\n[{marker}] {title}: {text}"
PASSAGE_FORMAT_UNTITLED = "\n[{marker}] {text}"
FACTS_HEADER = "\nfacts:"
FACT_FORMAT = "\n{subject} {relation} {object}"
QUESTION_FORMAT = "question: {question}"
ANSWER_CUE = "answer:"
ANSWER_PREFIX = " "  # answers start with a space: "answer: Helix Corp"; a prompt never ends in one

# The whole layout in one string, for humans and for MLflow's prompt registry. `{passages}`
# is PASSAGE_FORMAT per included passage, `{facts}` is FACTS_HEADER + FACT_FORMAT per fact
# (empty when none); the special tokens are single ids, not text.
PROMPT_TEMPLATE = (
    "<bos>"
    + CONTEXT_HEADER
    + "{passages}{facts}"
    + "<sep>"
    + QUESTION_FORMAT
    + "<sep>"
    + ANSWER_CUE
)


_TEMPLATE_RE = re.compile(
    r"<bos>(?P<context_header>.*?)\{passages\}\{facts\}<sep>(?P<question_prefix>.*?)"
    r"\{question\}(?P<question_suffix>.*?)<sep>(?P<answer_cue>.*)",
    re.DOTALL,
)
TEMPLATE_SHAPE = "<bos>HEADER{passages}{facts}<sep>...{question}...<sep>CUE"


@dataclass(frozen=True)
class ReaderTemplate:
    """The editable words of the reader prompt, parsed from a registered template.

    The shape is fixed (`<bos>`, `{passages}{facts}`, `<sep>`, `{question}`, `<sep>`, in that
    order: the model reads citations and stops by it); the words around the placeholders are
    what an edit in the prompt registry changes. The built-in template parses back to the
    exact segments `build_prompt` has always encoded, so trained checkpoints read the same ids.

        >>> ReaderTemplate.parse(PROMPT_TEMPLATE, "rayrag-reader/1").answer_cue
        'answer:'
    """

    context_header: str
    question_prefix: str
    question_suffix: str
    answer_cue: str

    @classmethod
    def parse(cls, template: str, label: str) -> ReaderTemplate:
        """The template's words, or a one-line ConfigError naming `label` (NAME/VERSION)."""
        found = _TEMPLATE_RE.fullmatch(template)
        if found is None:
            raise ConfigError(
                f"prompt {label} is not a reader template: it needs {TEMPLATE_SHAPE} "
                "(tracking.prompt_version)"
            )
        parts = found.groupdict()
        if any(tag in value for value in parts.values() for tag in ("<bos>", "<sep>", "{")):
            raise ConfigError(
                f"prompt {label} is not a reader template: one of each placeholder, "
                f"two <sep>, in the order {TEMPLATE_SHAPE} (tracking.prompt_version)"
            )
        return cls(**parts)


BUILTIN_TEMPLATE = ReaderTemplate.parse(PROMPT_TEMPLATE, "built-in")


def prompt_label(name: str, version: int | None) -> str:
    """How an answer names its prompt: `rayrag-reader/3` (the MLflow prompt-registry version the
    config pins), or `rayrag-reader/unregistered` when nothing is pinned (tracking off)."""
    return f"{name}/{version if version is not None else 'unregistered'}"


def served_prompt_label(config: Any) -> str:
    """The label of the prompt `config`'s generator backend actually sends: the registry's
    reader template for `moe`; for `openai`, the chat prompt's own name and content hash
    (`rayrag-openai-chat/1a2b3c4d`), since the registered template is not what leaves."""
    if config.generator.backend == "openai":
        from rayrag.generator.openai_backend import chat_prompt_label

        return chat_prompt_label()
    return prompt_label(config.tracking.prompt_name, config.tracking.prompt_version)


def _tagged_version(tag: str, name: str) -> int | None:
    """`rayrag-reader/2` -> 2 when it names this prompt; None for anything else."""
    tagged_name, _, number = (tag or "").rpartition("/")
    return int(number) if tagged_name == name and number.isdigit() and int(number) > 0 else None


def pin_reader_prompt(config: Any, model_prompt_tag: str = "") -> tuple[Any, str | None]:
    """(config with `tracking.prompt_version` pinned, that version's template text).

    The version is the config's pin, else the served model version's `prompt_version` tag
    (`model_prompt_tag`), else the built-in template's version (registered on first use).
    The text is loaded here, once, and checked to be a reader template (ConfigError naming
    the version), so every stage serves exactly what the registry renders and no replica
    has to reach MLflow. Tracking off: the config unchanged and None (the built-in template).
    """
    tracking = config.tracking
    if not tracking.enabled:
        return config, None
    from rayrag.tracking.tracker import Tracker

    tracker = Tracker(tracking)
    version = (
        tracking.prompt_version
        or _tagged_version(model_prompt_tag, tracking.prompt_name)
        or tracker.register_prompt(PROMPT_TEMPLATE)
    )
    text = tracker.load_prompt(version)
    ReaderTemplate.parse(text, prompt_label(tracking.prompt_name, version))
    return config.with_overrides([f"tracking.prompt_version={version}"]), text


def reader_template(config: Any, registered: str | None = None) -> ReaderTemplate:
    """The template the MoE reader lays its prompts out with: `registered` (the pinned
    version's text, as `pin_reader_prompt` loaded it), else the pinned version read from the
    registry, else the built-in template (tracking off or nothing pinned: `unregistered`)."""
    tracking = config.tracking
    label = prompt_label(tracking.prompt_name, tracking.prompt_version)
    if registered is not None:
        return ReaderTemplate.parse(registered, label)
    if not tracking.enabled or tracking.prompt_version is None:
        return BUILTIN_TEMPLATE
    from rayrag.tracking.tracker import Tracker

    text = Tracker(tracking).load_prompt(tracking.prompt_version)
    return ReaderTemplate.parse(text, label)


@dataclass(frozen=True)
class Citation:
    """A passage that made it into the prompt, under marker `[marker]`."""

    marker: int
    passage: Passage


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    citations: list[Citation] = field(default_factory=list)  # in prompt order, markers 1..n
    # chunk ids dropped to fit, best-ranked first
    truncated: list[str] = field(default_factory=list)
    facts_included: list[Fact] = field(default_factory=list)
    facts_dropped: int = 0

    def __len__(self) -> int:
        return len(self.ids)


def build_prompt(
    question: str,
    passages: Sequence[Passage],
    facts: Sequence[Fact],
    tokenizer: RayragTokenizer,
    max_prompt_tokens: int,
    template: ReaderTemplate = BUILTIN_TEMPLATE,
) -> Prompt:
    """Lay out the prompt within `max_prompt_tokens`; `passages` and `facts` are best first.
    `template` is the registry's wording (training always uses the built-in one)."""
    if max_prompt_tokens <= 0:
        raise ConfigError(f"max_prompt_tokens must be > 0, got {max_prompt_tokens}")
    if not question or not question.strip():
        raise DataError("question is empty")

    head = [tokenizer.bos_id, *tokenizer.encode(template.context_header)]
    asked = template.question_prefix + question.strip() + template.question_suffix
    tail = [
        tokenizer.sep_id,
        *tokenizer.encode(asked),
        tokenizer.sep_id,
        *tokenizer.encode(template.answer_cue),
    ]
    fixed = len(head) + len(tail)
    if fixed > max_prompt_tokens:
        # Counts only: the question text may carry personal data and must not reach a log.
        raise DataError(
            f"question does not fit the prompt: {fixed} tokens with the template, "
            f"max_prompt_tokens is {max_prompt_tokens}"
        )

    passage_ids = [tokenizer.encode(passage_text(i + 1, p)) for i, p in enumerate(passages)]
    fact_ids = [tokenizer.encode(fact_text(f)) for f in facts]
    facts_header = tokenizer.encode(FACTS_HEADER)

    n_passages, n_facts = len(passages), len(facts)
    used = fixed + sum(map(len, passage_ids)) + sum(map(len, fact_ids))
    used += len(facts_header) if n_facts else 0
    while used > max_prompt_tokens and n_passages:
        n_passages -= 1
        used -= len(passage_ids[n_passages])
    while used > max_prompt_tokens and n_facts:
        n_facts -= 1
        used -= len(fact_ids[n_facts]) + (len(facts_header) if n_facts == 0 else 0)
    assert used <= max_prompt_tokens, (used, max_prompt_tokens)

    ids = list(head)
    for row in passage_ids[:n_passages]:
        ids += row
    if n_facts:
        ids += facts_header
        for row in fact_ids[:n_facts]:
            ids += row
    ids += tail
    assert len(ids) == used, (len(ids), used)
    return Prompt(
        ids=ids,
        citations=[Citation(i + 1, p) for i, p in enumerate(passages[:n_passages])],
        truncated=[p.chunk_id for p in passages[n_passages:]],
        facts_included=list(facts[:n_facts]),
        facts_dropped=len(facts) - n_facts,
    )


def build_training_example(
    question: str,
    passages: Sequence[Passage],
    facts: Sequence[Fact],
    answer: str,
    tokenizer: RayragTokenizer,
    max_len: int,
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one supervised example, labels aligned with input_ids.

    Only the answer and its `<eos>` are learned (labels -100 on the prompt, as in
    instruction tuning); the model shifts labels itself. The answer is never cut: an
    example whose question and answer alone exceed `max_len` is a DataError (skip it).
    """
    if not answer or not answer.strip():
        raise DataError("answer is empty")
    answer_ids = [*tokenizer.encode(ANSWER_PREFIX + answer.strip()), tokenizer.eos_id]
    budget = max_len - len(answer_ids)
    if budget <= 0:
        raise DataError(
            f"answer does not fit the example: {len(answer_ids)} tokens, max_len is {max_len}"
        )
    try:
        prompt = build_prompt(question, passages, facts, tokenizer, budget)
    except DataError as exc:
        raise DataError(f"{exc} (answer takes {len(answer_ids)} of max_len {max_len})") from None
    input_ids = prompt.ids + answer_ids
    labels = [-100] * len(prompt.ids) + answer_ids
    return input_ids, labels


def passage_text(marker: int, passage: Passage) -> str:
    """`[marker] title: text`, one line as every prompt lays a passage out (the reader's and
    the OpenAI backend's)."""
    if passage.title:
        return PASSAGE_FORMAT.format(marker=marker, title=passage.title, text=passage.text)
    return PASSAGE_FORMAT_UNTITLED.format(marker=marker, text=passage.text)


def fact_text(fact: Fact) -> str:
    """`subject relation object`, one line as every prompt lays a fact out."""
    # Graph relation keys are identifiers ("founded_by"); the reader sees words.
    return FACT_FORMAT.format(
        subject=fact.subject, relation=fact.relation.replace("_", " "), object=fact.object
    )
