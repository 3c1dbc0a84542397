"""The generator backends `rayrag compare` runs: our Reader (MoE or dense), the extractive
baseline, and any OpenAI-compatible endpoint (fed the same evidence, through
`generator.openai_backend`). Each answers one question on given evidence and
returns a `Reply` (text, cited documents, token counts, first-token and total seconds); the
rules each follows are in `rayrag.evaluation.compare`'s docstring.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rayrag.types import Evidence, Passage

MARKER_RE = re.compile(r"\[(\d{1,3})\]")
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
QUESTION_WORDS = frozenset("who whom whose what which when where why how".split())
STOPWORDS = frozenset(
    """a an the and or but if of at by for with about against between into through
    during before after above below to from up down in out on off over under again then once
    here there all any both each few more most other some such no nor not only own same so than
    too very can will just should now is are was were be been being have has had having do does
    did doing i me my we our you your he him his she her it its they them their this that these
    those as until while also would could may might must shall did name named""".split()
)
DEFAULT_OPENAI_MODEL = "rayrag"


def content_tokens(text: str) -> set[str]:
    """Lower-cased alphanumeric words minus stopwords and question words."""
    return {
        t for t in _WORD.findall(text.lower()) if t not in STOPWORDS and t not in QUESTION_WORDS
    }


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]


@dataclass(frozen=True)
class Extract:
    """The extractive answer: a sentence of passage `marker` (1-based rank in the evidence)."""

    sentence: str
    marker: int
    passage: Passage
    overlap: int

    @property
    def text(self) -> str:
        return f"{self.sentence} [{self.marker}]"


def extractive_answer(question: str, evidence: Evidence) -> Extract | None:
    """The best-matching evidence sentence (rule in the module docstring); None without passages."""
    wanted = content_tokens(question)
    best: Extract | None = None
    for marker, passage in enumerate(evidence.passages, 1):
        for sentence in split_sentences(passage.text):
            overlap = len(wanted & content_tokens(sentence))
            if (
                best is None or overlap > best.overlap
            ):  # strict: ties keep the earlier (higher-ranked)
                best = Extract(sentence, marker, passage, overlap)
    return best


# ---------------------------------------------------------------- backends


@dataclass(frozen=True)
class Reply:
    """One backend's answer to one question: scored in memory, never logged."""

    text: str
    cited_doc_ids: tuple[str, ...] | None  # None: the answer marks no citation
    ttft_s: float
    latency_s: float  # generation only; the shared retrieval time is added when scored
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: str | None = None  # the error class when the backend gave no answer


def marked_docs(
    text: str, citations: Sequence[Any], doc_id: Callable[[Any], str]
) -> tuple[str, ...] | None:
    """Doc ids of the citations the text marks `[n]` (1-based); None when it marks none."""
    marked = [int(m) for m in MARKER_RE.findall(text) if 1 <= int(m) <= len(citations)]
    return tuple(doc_id(citations[m - 1]) for m in dict.fromkeys(marked)) or None


class ReaderBackend:
    """Our Reader, streamed so the first text piece is timed."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def __call__(self, question: str, evidence: Evidence) -> Reply:
        started = time.perf_counter()
        stream = self.reader.answer(question, evidence, stream=True)
        first = None
        for _ in stream:
            first = time.perf_counter() - started if first is None else first
        latency = time.perf_counter() - started
        result = stream.result
        text = result.answer.text
        return Reply(
            text,
            marked_docs(text, result.answer.citations, lambda p: p.doc_id),
            latency if first is None else first,
            latency,
            result.prompt_tokens,
            result.completion_tokens,
        )


def extractive_backend(question: str, evidence: Evidence) -> Reply:
    started = time.perf_counter()
    found = extractive_answer(question, evidence)
    latency = time.perf_counter() - started
    if found is None:
        return Reply("", None, latency, latency)
    return Reply(found.text, (found.passage.doc_id,), latency, latency)


class OpenAIBackend:
    """An OpenAI-compatible chat endpoint on the same evidence as every other backend: the
    prompt `generator.backend: openai` sends (`OpenAIReader`: the redacted question, the ranked
    passages with their [n] markers, the facts), streamed so the first text piece is timed."""

    def __init__(
        self,
        url: str,
        config: Any,
        api_key: str | None = None,
        model: str = DEFAULT_OPENAI_MODEL,
        timeout_s: float = 120.0,
    ) -> None:
        from rayrag.config import RAGConfig
        from rayrag.generator.openai_backend import OpenAIReader

        base = url.rstrip("/")
        tree = config.model_dump(mode="json")
        tree["generator"].update(backend="openai")
        tree["generator"]["openai"].update(
            base_url=base if base.endswith("/v1") else f"{base}/v1",
            model=model,
            api_key_env="",  # the key is handed in (or none)
            timeout_s=timeout_s,
        )
        self.reader = OpenAIReader(RAGConfig.model_validate(tree), api_key=api_key)
        self.endpoint = self.reader.endpoint

    def warm_up(self) -> None:
        self.reader.warm_up()

    def close(self) -> None:
        self.reader.close()

    def __call__(self, question: str, evidence: Evidence) -> Reply:
        started = time.perf_counter()
        stream = self.reader.answer(question, evidence, stream=True)
        first = None
        for _ in stream:
            first = time.perf_counter() - started if first is None else first
        latency = time.perf_counter() - started
        result = stream.result
        text = result.answer.text
        return Reply(
            text,
            marked_docs(text, result.answer.citations, lambda p: p.doc_id),
            latency if first is None else first,
            latency,
            result.prompt_tokens,
            result.completion_tokens,
        )


# ---------------------------------------------------------------- scoring
