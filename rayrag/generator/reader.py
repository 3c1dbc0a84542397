"""The reader: evidence in, a cited answer out, from a trained generator checkpoint.

The last step of the online flow before the Guard: lay the question, the
ranked passages and the KG facts out with `prompt.build_prompt` (numbered citation markers
as in ALCE, Gao et al. 2023), decode with `generate` under the config's `DecodingConfig`
(stopping at `<eos>` or `<sep>`), and return an `Answer` whose citations are exactly the
passages that made it into the prompt, in marker order. What did not fit the context window
is dropped lowest-ranked first and reported (`ReaderResult.truncated_chunk_ids`); the
question itself is never cut — a question too long for the window is a `DataError`.

    >>> reader = Reader(Path(".rayrag/demo/model"), cfg)
    >>> result = reader.answer("Who acquired Brightwater Labs?", evidence)
    >>> (
    ...     result.answer.text,
    ...     [p.chunk_id for p in result.answer.citations],
    ...     result.truncated_chunk_ids,
    ... )
    ('Helix Corp', ['doc-7#0', 'doc-3#1'], [])
    >>> stream = reader.answer(question, evidence, stream=True)
    >>> for piece in stream: print(piece, end="")
    >>> stream.result.cited_markers
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rayrag.config import RAGConfig
from rayrag.errors import ConfigError, DataError, ModelError
from rayrag.generator.checkpoint import (
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
    load_checkpoint,
    serving_dtype,
)
from rayrag.generator.generate import DecodeOptions, Generation, generate, stream
from rayrag.generator.model import MoETransformer
from rayrag.generator.pretrained import PretrainedTokenizer, build_chat_prompt, is_pretrained
from rayrag.generator.prompt import (
    BUILTIN_TEMPLATE,
    Prompt,
    ReaderTemplate,
    build_prompt,
    reader_template,
)
from rayrag.generator.routing_health import shard_shares
from rayrag.generator.tokenizer import RayragTokenizer
from rayrag.index.graph import NON_FACT_RELATIONS
from rayrag.types import Answer, Evidence, Fact

MARKER_RE = re.compile(r"\[(\d{1,3})\]")
DIGEST_CHARS = 12  # of the weights' sha256 in `model_version`: enough to tell two trainings apart


@dataclass(frozen=True)
class ReaderResult:
    """An `Answer` and what the reader knows about how it was made (ids and counts, no text)."""

    answer: Answer
    # dropped to fit the window, best-ranked first
    truncated_chunk_ids: list[str] = field(default_factory=list)
    facts_dropped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""  # "eos" | "stop" | "length"
    # [n] the text mentions, valid ones, first-mention order
    cited_markers: list[int] = field(default_factory=list)
    # per MoE layer, each expert's token-slot share
    routing: list[list[float]] = field(default_factory=list)
    # per ExpertShard, its token-slot share (when sharded)
    shard_share: list[float] = field(default_factory=list)
    # the model's log-probability of the whole answer (its eos included); None when the
    # backend reports none (a remote model: the Guard then scores the evidence alone)
    answer_logprob: float | None = 0.0
    # decoding.candidates > 1: the reader's other candidate answers, most likely first (the
    # Guard may prefer one of them: `Guard.check_best`)
    alternatives: tuple[ReaderResult, ...] = ()

    @property
    def answer_probability(self) -> float | None:
        """The model's probability of the answer it gave (greedy: its own best guess); None
        when the backend reports no log-probability."""
        if self.answer_logprob is None:
            return None
        return math.exp(min(self.answer_logprob, 0.0))

    @property
    def truncated(self) -> bool:
        return bool(self.truncated_chunk_ids) or self.facts_dropped > 0

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class AnswerStream:
    """Text pieces as they are decoded; `result` (a `ReaderResult`) once the stream is read.

    `citations` and `truncated_chunk_ids` are known before the first piece, so a client can
    show the sources while the answer is still being written.
    """

    def __init__(self, reader: Reader, prompt: Prompt, tokens: Iterator[int]) -> None:
        self._reader, self._prompt, self._tokens = reader, prompt, tokens
        self.result: ReaderResult | None = None

    @property
    def citations(self):
        return tuple(c.passage for c in self._prompt.citations)

    @property
    def truncated_chunk_ids(self) -> list[str]:
        return list(self._prompt.truncated)

    def __iter__(self) -> Iterator[str]:
        tok = self._reader.tokenizer
        ids: list[int] = []
        sent = ""
        while True:
            try:
                ids.append(next(self._tokens))
            except StopIteration as done:
                generation: Generation = done.value
                break
            text = tok.decode(ids).lstrip()
            # A byte-level BPE token can end inside a UTF-8 character: hold it until complete.
            if text.endswith("\ufffd") or not text.startswith(sent):
                continue
            if len(text) > len(sent):
                yield text[len(sent) :]
                sent = text
        self.result = self._reader._result(self._prompt, generation)
        final = self.result.answer.text
        if final.startswith(sent) and len(final) > len(sent):
            yield final[len(sent) :]


class Reader:
    """A generator checkpoint that answers questions from `Evidence`, with citations.

    Cheap to construct; `warm_up()` loads the weights and the tokenizer once. Decoding
    follows `config.decoding`; `answer(..., max_new_tokens=N)` overrides the length cap.
    """

    def __init__(
        self,
        checkpoint: Path | str,
        config: RAGConfig,
        device: str | torch.device | None = None,
        template: str | None = None,
    ) -> None:
        self.checkpoint = Path(checkpoint)
        self.config = config
        self.device = (
            torch.device(device)
            if device is not None
            else (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        )
        self._model: MoETransformer | None = None
        self.sharded: Any = None  # a ShardedGenerator when generator.num_shards > 1
        self._tokenizer: RayragTokenizer | PretrainedTokenizer | None = None
        # A pretrained checkpoint (transformers wrote it) reads its own chat format and stops
        # at its own ids; a checkpoint trained here reads the reader template (`self.template`).
        self.pretrained = False
        self._model_version = ""
        # `template`: the pinned registry version's text when the caller already loaded it
        # (`prompt.pin_reader_prompt`); else `warm_up` reads the pin (or uses the built-in).
        self._registered_template = template
        self.template: ReaderTemplate = BUILTIN_TEMPLATE

    # -- loading ---------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Load the checkpoint and its tokenizer; check they agree on the vocabulary."""
        if self._model is not None:
            return
        if not self.checkpoint.is_dir():
            raise ModelError(f"generator checkpoint not found: {self.checkpoint} (--model)")
        pretrained = is_pretrained(self.checkpoint)
        tokenizer = (
            PretrainedTokenizer.load(self.checkpoint)
            if pretrained
            else RayragTokenizer.load(self.checkpoint)
        )
        shards = self.config.generator.num_shards
        if shards > 1:  # experts on ExpertShard actors (generator/sharded.py); the rest here
            from rayrag.generator.sharded import ShardedGenerator

            gen = self.config.generator
            self.sharded = ShardedGenerator(
                self.checkpoint,
                shards,
                transport=gen.ep_transport,
                num_cpus=gen.shard_num_cpus,
                dtype=self.config.decoding.dtype,
            )
            model = self.sharded.model
        else:
            model = load_checkpoint(
                self.checkpoint,
                device=self.device,
                dtype=serving_dtype(self.config.decoding.dtype, self.device),
            )
        if tokenizer.vocab_size > model.config.vocab_size:
            # Ids past the embedding table would index out of range at the first forward.
            raise ModelError(
                f"{self.checkpoint}: tokenizer has {tokenizer.vocab_size} tokens but the model's "
                f"vocab_size is {model.config.vocab_size}; the two files are from different "
                "trainings"
            )
        if not pretrained:  # a pretrained checkpoint reads its own chat format
            self.template = reader_template(self.config, self._registered_template)
        self._model_version = f"{self.checkpoint.resolve().name}@{weights_digest(self.checkpoint)}"
        self._tokenizer, self._model, self.pretrained = tokenizer, model, pretrained

    @property
    def model(self) -> MoETransformer:
        self.warm_up()
        return self._model

    @property
    def tokenizer(self) -> RayragTokenizer | PretrainedTokenizer:
        self.warm_up()
        return self._tokenizer

    @property
    def model_version(self) -> str:
        """`<checkpoint dir name>@<sha256 of the weights, 12 hex>`."""
        self.warm_up()
        return self._model_version

    # -- answering -------------------------------------------------------------------------

    def options(self, max_new_tokens: int | None = None) -> DecodeOptions:
        decoding = self.config.decoding
        if max_new_tokens is not None:
            if max_new_tokens <= 0:
                raise ConfigError(
                    f"max_new_tokens must be > 0, got {max_new_tokens} (--decoding.max-new-tokens)"
                )
            decoding = decoding.model_copy(update={"max_new_tokens": max_new_tokens})
        tok = self.tokenizer
        if isinstance(tok, PretrainedTokenizer):
            # Its own stop ids; free text (the span constraint needs rayrag's <sep> layout).
            return DecodeOptions.from_config(
                decoding.model_copy(update={"extractive": False}),
                eos_id=tok.eos_id,
                pad_id=tok.pad_id,
                stop=[[i] for i in tok.stop_ids[1:]],
                seed=self.config.seed,
            )
        return DecodeOptions.from_config(
            decoding,
            eos_id=tok.eos_id,
            pad_id=tok.pad_id,
            stop=[[tok.sep_id]],
            seed=self.config.seed,
            span_until=tok.sep_id,
        )

    def prompt_budget(self, max_new_tokens: int) -> int:
        """Prompt tokens that leave room for `max_new_tokens` in the model's window."""
        window = self.model.config.max_seq_len
        budget = window - max_new_tokens
        if budget <= 0:
            raise ConfigError(
                f"decoding.max_new_tokens {max_new_tokens} leaves no room for a prompt in the "
                f"model's window of {window} tokens (--set decoding.max_new_tokens)"
            )
        return budget

    def build(self, question: str, evidence: Evidence, max_new_tokens: int | None = None) -> Prompt:
        """The prompt `answer` would decode from (passages dropped lowest-ranked first to fit).
        A per-request `max_new_tokens` that leaves no room for a prompt is the request's error
        (DataError: HTTP 400), not the deployment's."""
        opts = self.options(max_new_tokens)
        if max_new_tokens is not None and max_new_tokens >= self.model.config.max_seq_len:
            raise DataError(
                f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's "
                f"window of {self.model.config.max_seq_len} tokens"
            )
        budget = self.prompt_budget(opts.max_new_tokens)
        facts = reader_facts(evidence.facts)
        if self.pretrained:
            return build_chat_prompt(question, evidence.passages, facts, self.tokenizer, budget)
        return build_prompt(
            question, evidence.passages, facts, self.tokenizer, budget, template=self.template
        )

    def answer(
        self,
        question: str,
        evidence: Evidence,
        *,
        stream: bool = False,
        max_new_tokens: int | None = None,
    ) -> ReaderResult | AnswerStream:
        """A `ReaderResult`, or with `stream=True` an `AnswerStream` of text pieces."""
        prompt = self.build(question, evidence, max_new_tokens)
        opts = self.options(max_new_tokens)
        if stream:
            return AnswerStream(self, prompt, _token_stream(self.model, prompt.ids, opts))
        (generation,) = generate(self.model, [prompt.ids], **opts.kwargs())
        return self._result(prompt, generation)

    def answer_batch(
        self,
        questions: Sequence[str],
        evidences: Sequence[Evidence],
        max_new_tokens: Sequence[int | None] | None = None,
    ) -> list[ReaderResult]:
        """`answer` for many questions with one batched decode per distinct length cap (the
        serve graph's `@serve.batch`); rows finish independently, results in input order."""
        caps = list(max_new_tokens) if max_new_tokens is not None else [None] * len(questions)
        if not len(questions) == len(evidences) == len(caps):
            raise ValueError("questions, evidences and max_new_tokens must have the same length")
        prompts = [self.build(q, e, m) for q, e, m in zip(questions, evidences, caps, strict=True)]
        results: list[ReaderResult | None] = [None] * len(prompts)
        by_cap: dict[int | None, list[int]] = {}
        for i, cap in enumerate(caps):
            by_cap.setdefault(cap, []).append(i)
        for cap, rows in by_cap.items():
            generations = generate(
                self.model, [prompts[i].ids for i in rows], **self.options(cap).kwargs()
            )
            for i, generation in zip(rows, generations, strict=True):
                results[i] = self._result(prompts[i], generation)
        return results  # type: ignore[return-value]

    def _result(self, prompt: Prompt, generation: Generation) -> ReaderResult:
        text = self.tokenizer.decode(generation.tokens).strip()
        citations = tuple(c.passage for c in prompt.citations)
        answer = Answer(
            text=text,
            citations=citations,
            facts=tuple(prompt.facts_included),
            model_version=self.model_version,
            config_hash=self.config.config_hash,
        )
        return ReaderResult(
            answer=answer,
            truncated_chunk_ids=list(prompt.truncated),
            facts_dropped=prompt.facts_dropped,
            prompt_tokens=len(prompt.ids),
            completion_tokens=len(generation.tokens),
            finish_reason=generation.finish_reason,
            cited_markers=cited_markers(text, len(citations)),
            routing=generation.expert_share,
            answer_logprob=generation.logprob,
            shard_share=shard_shares(generation.expert_share, self.sharded.ranges)
            if self.sharded
            else [],
            alternatives=tuple(self._result(prompt, g) for g in generation.alternatives),
        )


def _token_stream(model: MoETransformer, ids: list[int], opts: DecodeOptions) -> Iterator[int]:
    # A stream sends one answer as it is decoded: no candidates to choose from.
    return stream(model, ids, **{**opts.kwargs(), "branches": 1})


def reader_facts(facts: tuple[Fact, ...] | list[Fact]) -> list[Fact]:
    """The relation facts, in rank order. Structural graph edges (co-occurrence, mentions,
    synonyms) tie entities without asserting anything, and the reader is trained without
    them (`reader_contexts.chunk_facts`): the prompt it answers from must look like the ones it
    learned on."""
    return [f for f in facts if f.relation not in NON_FACT_RELATIONS]


def cited_markers(text: str, n_citations: int) -> list[int]:
    """The citation markers `[n]` that `text` mentions, 1 <= n <= n_citations,
    first mention first."""
    seen: list[int] = []
    for match in MARKER_RE.finditer(text):
        marker = int(match.group(1))
        if 1 <= marker <= n_citations and marker not in seen:
            seen.append(marker)
    return seen


def weights_digest(checkpoint: Path, chars: int = DIGEST_CHARS) -> str:
    """Short sha256 of the checkpoint's weights (all shards, in name order, when sharded)."""
    single, index = checkpoint / WEIGHTS_FILE, checkpoint / WEIGHTS_INDEX_FILE
    files = (
        [single]
        if single.is_file()
        else [index, *sorted(p for p in checkpoint.glob("*.safetensors") if p.name != WEIGHTS_FILE)]
    )
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:chars]


def result_to_json(result: ReaderResult) -> dict[str, Any]:
    """The CLI's and the API's JSON view: ids, titles, scores, facts with provenance; usage."""
    answer = result.answer
    return {
        "answer": answer.text,
        "citations": [
            {
                "marker": i,
                "chunk_id": p.chunk_id,
                "doc_id": p.doc_id,
                "title": p.title,
                "score": p.score,
                "text": p.text,
                "page": p.page,
                "section": p.section,
            }
            for i, p in enumerate(answer.citations, 1)
        ],
        "cited_markers": result.cited_markers,
        "facts": [
            {
                "subject": f.subject,
                "relation": f.relation,
                "object": f.object,
                "confidence": f.confidence,
                "chunk_ids": list(f.chunk_ids),
                "doc_ids": list(f.doc_ids),
            }
            for f in answer.facts
        ],
        "truncated": {
            "chunk_ids": result.truncated_chunk_ids,
            "facts_dropped": result.facts_dropped,
        },
        "finish_reason": result.finish_reason,
        "usage": result.usage(),
        "model_version": answer.model_version,
        "config_hash": answer.config_hash,
    }
