"""A pretrained checkpoint's own tokenizer, chat template and stop ids, and its reader prompt.

A checkpoint trained here carries rayrag's byte-level BPE (special tokens at ids 0..4) and
reads the reader template (`prompt.PROMPT_TEMPLATE`, or its pinned registry version). A
pretrained open model (Mixtral, Qwen-MoE, OLMoE) was trained on its own tokenizer and chat
format, and answers well only in them: its `tokenizer.json` + `tokenizer_config.json` are
loaded with transformers' tokenizer classes, the reader's messages are rendered with the
checkpoint's chat template exactly as transformers renders them (`apply_chat_template`,
generation prompt added), and decoding stops at the ids `generation_config.json` names. The
citations keep the same numbered markers, and the passages are dropped lowest-ranked first
to fit the model's window. Reader fine-tuning on such a base (LoRA) learns in the layout it
serves with: `build_chat_training_example` is that prompt followed by the answer and a stop
id.

    >>> tok = PretrainedTokenizer.load(Path("mixtral-dir"))
    >>> prompt = build_chat_prompt(question, passages, facts, tok, max_prompt_tokens=4096)
    >>> tok.decode(prompt.ids)[:12]
    '[INST] Answer'
    >>> ids, labels = build_chat_training_example(q, passages, facts, "Helix Corp", tok, 512)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rayrag.errors import ConfigError, DataError, ModelError
from rayrag.generator.prompt import Citation, Prompt
from rayrag.types import Fact, Passage

CHAT_PROMPT_VERSION = "chat-v1"
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

SYSTEM_PROMPT = (
    "Answer the question from the numbered passages and facts. Cite every passage you use "
    "by its number in brackets, like [1]. Answer in a few words. If the passages do not "
    "contain the answer, say that you do not know."
)
PASSAGES_HEADER = "Passages:"
PASSAGE_LINE = "\n[{marker}] {title}: {text}"
PASSAGE_LINE_UNTITLED = "\n[{marker}] {text}"
FACTS_HEADER = "\n\nFacts:"
FACT_LINE = "\n{subject} {relation} {object}"
QUESTION_LINE = "\n\nQuestion: {question}"
# Without a chat template (a base model), the same content as plain text, answer cued.
PLAIN_LAYOUT = "{system}\n\n{user}\nAnswer:"


def is_pretrained(checkpoint: Path) -> bool:
    """True for a checkpoint that brings its own tokenizer and chat format: one transformers
    wrote (its config.json has no "rayrag" block), or one we derived from such a base (a merged
    LoRA model: `"rayrag": {"tokenizer": "pretrained"}`)."""
    file = Path(checkpoint) / CONFIG_FILE
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{file}: cannot read config: {exc}") from exc
    if not isinstance(raw, dict):
        return False
    ours = raw.get("rayrag")
    return ours is None or (isinstance(ours, dict) and ours.get("tokenizer") == "pretrained")


class PretrainedTokenizer:
    """transformers' tokenizer of a pretrained checkpoint, with the interface the reader uses
    (`encode` without special tokens, `decode`, `eos_id`, `pad_id`, `vocab_size`) plus
    `render`, the chat template. `stop_ids` are all the ids that end an answer."""

    def __init__(
        self, tokenizer: Any, stop_ids: Sequence[int], pad_id: int, source: Path | None = None
    ) -> None:
        self._tokenizer, self._source = tokenizer, source
        self.stop_ids = tuple(int(i) for i in stop_ids)
        self.eos_id = self.stop_ids[0]
        self.pad_id = int(pad_id)
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))

    @classmethod
    def load(cls, checkpoint: Path) -> PretrainedTokenizer:
        """The tokenizer files beside the weights; stop ids from generation_config.json, else
        the tokenizer's eos token. Nothing is downloaded."""
        checkpoint = Path(checkpoint)
        if (
            not (checkpoint / "tokenizer.json").is_file()
            and not (checkpoint / TOKENIZER_CONFIG_FILE).is_file()
        ):
            raise ModelError(
                f"{checkpoint}: a pretrained checkpoint needs its tokenizer "
                "(tokenizer.json and tokenizer_config.json beside the weights)"
            )
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(
                f"{checkpoint}: cannot load its tokenizer ({type(exc).__name__})"
            ) from None
        generation = _read_json(checkpoint / GENERATION_CONFIG_FILE)
        stops = _ids(generation.get("eos_token_id")) or _ids(tokenizer.eos_token_id)
        if not stops:
            raise ModelError(
                f"{checkpoint}: no end-of-answer id (eos_token_id in {GENERATION_CONFIG_FILE} "
                "or the tokenizer's eos_token)"
            )
        pads = _ids(generation.get("pad_token_id")) or _ids(tokenizer.pad_token_id)
        return cls(tokenizer, stops, pads[0] if pads else stops[0], source=checkpoint)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled as its folder: a Ray worker reloads the files (they are beside the weights).
        return {"checkpoint": str(self._source)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(PretrainedTokenizer.load(Path(state["checkpoint"])).__dict__)

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def render(self, system: str, user: str) -> list[int]:
        """The ids of a system + user conversation with the generation prompt, as
        transformers' `apply_chat_template` renders it. A template that refuses a system
        turn (Mistral's) gets the instructions at the top of the user turn instead; with no
        template, `PLAIN_LAYOUT` after the bos token."""
        if not self.has_chat_template:
            bos = self._tokenizer.bos_token_id
            text = PLAIN_LAYOUT.format(system=system, user=user)
            return ([bos] if bos is not None else []) + self.encode(text)
        from jinja2 import TemplateError

        turns = [
            [{"role": "system", "content": system}, {"role": "user", "content": user}],
            [{"role": "user", "content": f"{system}\n\n{user}"}],
        ]
        for messages in turns:
            try:
                return self._render(messages)
            except TemplateError:
                continue
        raise ModelError("the checkpoint's chat template renders neither system nor user turns")

    def _render(self, messages: list[dict[str, str]]) -> list[int]:
        ids = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return [int(i) for i in ids]


def build_chat_prompt(
    question: str,
    passages: Sequence[Passage],
    facts: Sequence[Fact],
    tokenizer: PretrainedTokenizer,
    max_prompt_tokens: int,
) -> Prompt:
    """The reader's conversation in the checkpoint's chat format, within `max_prompt_tokens`:
    the lowest-ranked passage goes first, then the last fact; the question is never cut.
    `passages` and `facts` are best first; markers [1..n] follow their order."""
    if max_prompt_tokens <= 0:
        raise ConfigError(f"max_prompt_tokens must be > 0, got {max_prompt_tokens}")
    if not question or not question.strip():
        raise DataError("question is empty")
    question = question.strip()
    n_passages, n_facts = len(passages), len(facts)

    def render(n_p: int, n_f: int) -> list[int]:
        return tokenizer.render(SYSTEM_PROMPT, user_turn(question, passages[:n_p], facts[:n_f]))

    fixed = len(render(0, 0))
    if fixed > max_prompt_tokens:
        # Counts only: the question text may carry personal data and must not reach a log.
        raise DataError(
            f"question does not fit the prompt: {fixed} tokens with the template, "
            f"max_prompt_tokens is {max_prompt_tokens}"
        )
    # Estimate from each piece's own length, then render to be exact (a template may add a
    # few tokens, and pieces can merge at their joins).
    sizes_p = [len(tokenizer.encode(_passage_line(i + 1, p))) for i, p in enumerate(passages)]
    sizes_f = [len(tokenizer.encode(_fact_line(f))) for f in facts]
    used = fixed + sum(sizes_p) + sum(sizes_f)
    while used > max_prompt_tokens and n_passages:
        n_passages -= 1
        used -= sizes_p[n_passages]
    while used > max_prompt_tokens and n_facts:
        n_facts -= 1
        used -= sizes_f[n_facts]
    ids = render(n_passages, n_facts)
    while len(ids) > max_prompt_tokens and (n_passages or n_facts):
        if n_passages:
            n_passages -= 1
        else:
            n_facts -= 1
        ids = render(n_passages, n_facts)
    return Prompt(
        ids=ids,
        citations=[Citation(i + 1, p) for i, p in enumerate(passages[:n_passages])],
        truncated=[p.chunk_id for p in passages[n_passages:]],
        facts_included=list(facts[:n_facts]),
        facts_dropped=len(facts) - n_facts,
    )


def build_chat_training_example(
    question: str,
    passages: Sequence[Passage],
    facts: Sequence[Fact],
    answer: str,
    tokenizer: PretrainedTokenizer,
    max_len: int,
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one supervised example in the checkpoint's chat format: the
    prompt exactly as `build_chat_prompt` renders it for serving, then the answer's ids and
    the first stop id (`eos_id`), which is where decoding ends. Only the answer and its stop
    id are learned (labels -100 on the prompt); the model shifts labels itself. The answer is
    never cut: one that leaves no room for the question is a DataError (skip the example)."""
    if not answer or not answer.strip():
        raise DataError("answer is empty")
    answer_ids = [*tokenizer.encode(answer.strip()), tokenizer.eos_id]
    budget = max_len - len(answer_ids)
    if budget <= 0:
        raise DataError(
            f"answer does not fit the example: {len(answer_ids)} tokens, max_len is {max_len}"
        )
    try:
        prompt = build_chat_prompt(question, passages, facts, tokenizer, budget)
    except DataError as exc:
        raise DataError(f"{exc} (answer takes {len(answer_ids)} of max_len {max_len})") from None
    return prompt.ids + answer_ids, [-100] * len(prompt.ids) + answer_ids


def user_turn(question: str, passages: Sequence[Passage], facts: Sequence[Fact]) -> str:
    """The user message: numbered passages, facts, then the question."""
    text = PASSAGES_HEADER + "".join(_passage_line(i + 1, p) for i, p in enumerate(passages))
    if facts:
        text += FACTS_HEADER + "".join(_fact_line(f) for f in facts)
    return text + QUESTION_LINE.format(question=question)


def _passage_line(marker: int, passage: Passage) -> str:
    if passage.title:
        return PASSAGE_LINE.format(marker=marker, title=passage.title, text=passage.text)
    return PASSAGE_LINE_UNTITLED.format(marker=marker, text=passage.text)


def _fact_line(fact: Fact) -> str:
    relation = fact.relation.replace("_", " ")
    return FACT_LINE.format(subject=fact.subject, relation=relation, object=fact.object)


def _read_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{file}: cannot read: {exc}") from exc
    return raw if isinstance(raw, dict) else {}


def _ids(value: Any) -> list[int]:
    """An id or a list of ids from a HF config (None -> [])."""
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value if v is not None]
