"""AnswerPipeline: screen -> redact -> retrieve -> read -> guard -> cost, written once.

Every way of asking runs these steps here: `rayrag ask`, `rayrag eval`, Tune trials and
`rayrag compare` in one process (`LocalStages`), and the Serve graph's Ingress through
deployment handles (`rayrag.serve.handles.HandleStages`). A stage set only says how each
step is carried out; the order of the steps, the refusal, the cost and the response are
decided here, so a served answer and a local one cannot drift apart.

The pipeline is async because the Serve stages are awaited handles. Local stages never
suspend, so `answer_sync` drives the same coroutine to its end without an event loop
(usable from a CLI, a Tune trial or a running loop alike).

    >>> pipeline = AnswerPipeline(config, LocalStages(bundle, model, config))
    >>> turn = pipeline.answer_sync("Who founded Tarrow Power?", Principal("ana", ("public",)))
    >>> turn.response.answer, turn.response.usage.cost
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rayrag.answering.response import AskResponse
from rayrag.config import RAGConfig, ServeConfig
from rayrag.coroutines import run_sync
from rayrag.errors import ConfigError
from rayrag.types import Evidence, Principal, RedactedQuestion

STREAM_HOLD = " \n\t"  # streamed text is released a whole word at a time, redacted
Observe = Callable[[str, float], None]


def cost_of(prompt_tokens: int, completion_tokens: int, serve: ServeConfig) -> float:
    """What an answer costs at `serve.price_per_1k_*` (in `serve.currency`)."""
    return round(
        prompt_tokens / 1000 * serve.price_per_1k_input_tokens
        + completion_tokens / 1000 * serve.price_per_1k_output_tokens,
        8,
    )


class StageTimer:
    """Per-stage wall time of one request, in ms, summed when a stage runs twice; `observe`
    also receives each sample (the Ingress's Prometheus histogram)."""

    def __init__(self, observe: Observe | None = None) -> None:
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self._observe = observe

    async def __call__(self, stage: str, awaitable: Any) -> Any:
        started = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.add(stage, (time.perf_counter() - started) * 1000)

    def add(self, stage: str, ms: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0.0) + ms, 2)
        if self._observe is not None:
            self._observe(stage, ms)

    def total(self) -> dict[str, float]:
        self.timings["total"] = round((time.perf_counter() - self.started) * 1000, 2)
        return self.timings


class AnswerStages(Protocol):
    """How each step is carried out: in this process, or by Serve deployments."""

    async def redact(self, question: str) -> RedactedQuestion: ...

    async def retrieve(
        self,
        question: RedactedQuestion,
        principal: Principal,
        mode: str,
        top_k: int,
        timer: StageTimer,
    ) -> Evidence: ...

    async def read(self, question: str, evidence: Evidence, max_new_tokens: int | None) -> Any: ...

    async def verify(
        self, question: str, result: Any, evidence: Evidence, principal: Principal
    ) -> tuple[Any, Any]: ...

    def stream(
        self, question: str, evidence: Evidence, max_new_tokens: int | None
    ) -> AsyncIterator[Any]: ...

    async def redact_answer(self, text: str, chunk_ids: list[str]) -> str: ...

    async def check(
        self,
        question: str,
        answer_text: str,
        evidence: Evidence,
        principal: Principal,
        answer_logprob: float | None,
    ) -> Any: ...


@dataclass
class AnswerTurn:
    """One answered question: the response and what it was made from (for the caller's own
    logging, escalation and scoring; `reader_first` is the reader's answer before the Guard
    chose among its candidates)."""

    response: AskResponse
    question: RedactedQuestion | None = None
    evidence: Evidence | None = None
    result: Any = None
    report: Any = None
    reader_first: Any = None
    categories: list[str] = field(default_factory=list)


class AnswerPipeline:
    """The answer steps over a stage set; `prompt_version` and `model_version` stamp responses."""

    def __init__(
        self, config: RAGConfig, stages: AnswerStages, *, prompt_version: str = ""
    ) -> None:
        self.config, self.stages, self.prompt_version = config, stages, prompt_version
        self.model_version = ""  # learned from the first answer; refusals carry it afterwards
        self._safety: Any = None
        safety = config.governance.input_safety
        if safety.enabled and safety.check_questions:
            from rayrag.governance.safety.input_safety import input_safety

            self._safety = input_safety(safety)  # one compiled classifier per process

    @property
    def screens(self) -> bool:
        """Whether questions are screened by the input-safety classifier."""
        return self._safety is not None

    # -- the steps ---------------------------------------------------------------------------

    def screen(self, question: str) -> list[str] | None:
        """The categories the input-safety classifier flags the question for, or None."""
        if self._safety is None:
            return None
        verdict = self._safety.check(question)
        return list(verdict.categories) if verdict.flagged else None

    def refusal(
        self, mode: str, categories: list[str], timer: StageTimer, request_id: str = ""
    ) -> AnswerTurn:
        """The refusal: nothing retrieved, nothing generated, nothing charged."""
        from rayrag.governance.safety.input_safety import REFUSAL_TEXT

        response = AskResponse(
            answer=REFUSAL_TEXT,
            finish_reason="content_filter",
            mode=mode,
            request_id=request_id,
            usage={"currency": self.config.serve.currency},
            model_version=self.model_version,
            config_hash=self.config.config_hash,
            timings_ms=timer.total(),
            reasons=["input_safety"],
            prompt_version=self.prompt_version,
            refused=True,
            safety={"question_flagged": True, "categories": categories, "flagged_chunks": 0},
        )
        return AnswerTurn(response=response, categories=categories)

    async def evidence(
        self,
        question: str,
        principal: Principal,
        mode: str | None = None,
        top_k: int | None = None,
        timer: StageTimer | None = None,
    ) -> tuple[RedactedQuestion, Evidence]:
        """Redact the question as the bundle says, then retrieve for the principal."""
        timer = timer or StageTimer()
        mode = mode or self.config.retrieval.mode
        top_k = self.config.retrieval.top_k if top_k is None else top_k
        redacted = await timer("redact", self.stages.redact(question))
        evidence = await self.stages.retrieve(redacted, principal, mode, top_k, timer)
        return redacted, evidence

    async def answer(
        self,
        question: str,
        principal: Principal,
        *,
        mode: str | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
        request_id: str = "",
        observe: Observe | None = None,
        screened: list[str] | None | bool = False,
    ) -> AnswerTurn:
        """Screen, redact, retrieve, read, guard; the response with its cost.

        `screened`: the caller already screened the question (its categories, or None when
        clean), so the classifier does not run twice."""
        timer = StageTimer(observe)
        mode = mode or self.config.retrieval.mode
        categories = self.screen(question) if screened is False else screened
        if categories is not None:
            return self.refusal(mode, categories, timer, request_id)
        redacted, evidence = await self.evidence(question, principal, mode, top_k, timer)
        first = await timer("generate", self.stages.read(redacted.text, evidence, max_new_tokens))
        # The reader's candidates (decoding.candidates) go to the Guard, which keeps the one it
        # trusts most.
        result, report = await timer(
            "guard", self.stages.verify(redacted.text, first, evidence, principal)
        )
        response = self.response(redacted, evidence, result, report, mode, timer, request_id)
        return AnswerTurn(
            response=response,
            question=redacted,
            evidence=evidence,
            result=result,
            report=report,
            reader_first=first,
        )

    def answer_sync(self, question: str, principal: Principal, **options: Any) -> AnswerTurn:
        """`answer` with in-process stages, from synchronous code."""
        return run_sync(self.answer(question, principal, **options))

    def evidence_sync(
        self, question: str, principal: Principal, mode: str | None = None, top_k: int | None = None
    ) -> tuple[RedactedQuestion, Evidence]:
        return run_sync(self.evidence(question, principal, mode, top_k))

    async def stream(
        self,
        question: str,
        principal: Principal,
        *,
        mode: str | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
        request_id: str = "",
        observe: Observe | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[tuple[str, Any]]:
        """("meta", citations), ("delta", text)..., ("done", AnswerTurn).

        Text leaves a whole word at a time and redacted under the passages' policy; the
        final response carries the fully checked answer, which is authoritative."""
        timer = StageTimer(observe)
        mode = mode or self.config.retrieval.mode
        categories = self.screen(question)
        if categories is not None:
            turn = self.refusal(mode, categories, timer, request_id)
            yield "meta", []
            yield "delta", turn.response.answer
            yield "done", turn
            return
        redacted, evidence = await self.evidence(question, principal, mode, top_k, timer)
        chunk_ids = [p.chunk_id for p in evidence.passages]
        pieces = self.stages.stream(redacted.text, evidence, max_new_tokens)
        generate_started = time.perf_counter()
        yield "meta", await pieces.__anext__()  # the passages that fit the reader's window
        released = StreamRelease()
        result = None
        async for item in pieces:
            if deadline is not None and time.perf_counter() > deadline:
                await _cancel(pieces)
                raise TimeoutError("request timed out while decoding")
            if not isinstance(item, str):
                result = item
                break
            held = released.add(item)
            if held is not None:
                delta = released.accept(await self.stages.redact_answer(held, chunk_ids))
                if delta:
                    yield "delta", delta
        timer.add("generate", (time.perf_counter() - generate_started) * 1000)
        report = await timer(
            "guard",
            self.stages.check(
                redacted.text, result.answer.text, evidence, principal, result.answer_logprob
            ),
        )
        delta = released.accept(report.text)
        if delta:
            yield "delta", delta
        response = self.response(redacted, evidence, result, report, mode, timer, request_id)
        yield (
            "done",
            AnswerTurn(
                response=response,
                question=redacted,
                evidence=evidence,
                result=result,
                report=report,
                reader_first=result,
            ),
        )

    # -- the response ------------------------------------------------------------------------

    def response(
        self,
        question: RedactedQuestion,
        evidence: Evidence,
        result: Any,
        report: Any,
        mode: str,
        timer: StageTimer,
        request_id: str = "",
    ) -> AskResponse:
        """The reader's result as the Guard left it, priced, timed and stamped."""
        from rayrag.generator.reader import result_to_json
        from rayrag.generator.routing_health import shard_imbalance

        body = result_to_json(result)
        usage = body["usage"]
        usage.update(
            cost=cost_of(usage["prompt_tokens"], usage["completion_tokens"], self.config.serve),
            currency=self.config.serve.currency,
        )
        routing: dict[str, Any] = {
            "expert_share": result.routing,
            "max_share": max((max(layer) for layer in result.routing), default=0.0),
        }
        if result.shard_share:  # expert parallelism: each shard's share and their imbalance
            routing.update(
                shard_share=result.shard_share, shard_imbalance=shard_imbalance(result.shard_share)
            )
        self.model_version = body["model_version"] or self.model_version
        body.update(
            answer=report.text,
            request_id=request_id,
            mode=mode,
            usage=usage,
            timings_ms=timer.total(),
            redactions={"question": dict(question.counts), "answer": dict(report.redactions)},
            validation=report.validation,
            groundedness=report.groundedness,
            confidence=report.confidence,
            escalated=report.escalated,
            reasons=list(report.reasons),
            routing=routing,
            prompt_version=self.prompt_version,
            refused=False,
            cached=False,
            safety={
                "question_flagged": False,
                "categories": [],
                "flagged_chunks": evidence.flagged_chunks,
            },
        )
        return AskResponse.model_validate(body)


class StreamRelease:
    """Streamed text is released a whole word at a time and only after redaction: `add` a
    decoded piece and get the text up to the last word boundary when it has grown, then
    `accept` the redacted text and get what to send (nothing when redaction rewrote what
    was already sent; the final checked answer is authoritative)."""

    def __init__(self) -> None:
        self.text = ""
        self.sent = ""

    def add(self, piece: str) -> str | None:
        self.text += piece
        cut = max(self.text.rfind(c) for c in STREAM_HOLD)
        return self.text[:cut] if cut > len(self.sent) else None

    def accept(self, safe: str) -> str:
        if safe.startswith(self.sent) and len(safe) > len(self.sent):
            delta, self.sent = safe[len(self.sent) :], safe
            return delta
        return ""


async def _cancel(pieces: Any) -> None:
    cancel = getattr(pieces, "cancel", None)
    if cancel is not None:
        cancel()
    else:
        await pieces.aclose()


class LocalStages:
    """The steps in this process: `HybridRetriever`, the reader `generator.backend` names (the
    MoE `Reader` on `model`, or `OpenAIReader`: an OpenAI-compatible endpoint, no checkpoint)
    and `Guard`, loaded once.

    `generate=False` (the default when there is no model and the backend is moe) builds no
    reader and no Guard: evidence-only use (`rayrag ask --retrieval-only`, `rayrag compare`)."""

    def __init__(
        self,
        bundle: Path | str,
        model: Path | str | None,
        config: RAGConfig,
        *,
        generate: bool | None = None,
    ) -> None:
        self.bundle, self.model, self.config = Path(bundle), Path(model) if model else None, config
        remote = config.generator.backend == "openai"
        self.generate = (self.model is not None or remote) if generate is None else generate
        self.retriever: Any = None
        self.reader: Any = None
        self.guard: Any = None

    def warm_up(self) -> None:
        if self.retriever is not None:
            return
        from rayrag.answering.guard import Guard
        from rayrag.retrieval.hybrid import HybridRetriever

        reader = None
        if self.generate and self.config.generator.backend == "openai":
            from rayrag.generator.openai_backend import OpenAIReader

            reader = OpenAIReader(self.config)
            reader.warm_up()  # a missing key fails before the bundle loads
        elif self.generate:
            from rayrag.generator.reader import Reader

            if self.model is None:
                raise ConfigError("generator.backend moe needs a checkpoint (--model CKPT)")
            reader = Reader(self.model, self.config)
            reader.warm_up()  # a bad checkpoint fails before the bundle loads
        retriever = HybridRetriever(self.bundle, self.config)
        retriever.warm_up(graph=True)
        guard = None
        if reader is not None:
            guard = Guard(self.config, bundle_path=self.bundle)
            guard.warm_up()
        self.reader, self.guard, self.retriever = reader, guard, retriever

    def _generator(self) -> tuple[Any, Any]:
        self.warm_up()
        if self.reader is None:
            raise RuntimeError("these stages were built without a reader (evidence only)")
        return self.reader, self.guard

    async def redact(self, question: str) -> RedactedQuestion:
        self.warm_up()
        return self.retriever.dense.redacted(question)

    async def retrieve(
        self,
        question: RedactedQuestion,
        principal: Principal,
        mode: str,
        top_k: int,
        timer: StageTimer,
    ) -> Evidence:
        started = time.perf_counter()
        evidence = self.retriever.retrieve(question, principal, mode=mode, top_k=top_k)
        timer.add("retrieve", (time.perf_counter() - started) * 1000)
        return evidence

    async def read(self, question: str, evidence: Evidence, max_new_tokens: int | None) -> Any:
        reader, _ = self._generator()
        return reader.answer(question, evidence, max_new_tokens=max_new_tokens)

    async def verify(
        self, question: str, result: Any, evidence: Evidence, principal: Principal
    ) -> tuple[Any, Any]:
        _, guard = self._generator()
        return guard.verify(question, result, evidence, principal)

    async def stream(
        self, question: str, evidence: Evidence, max_new_tokens: int | None
    ) -> AsyncIterator[Any]:
        reader, _ = self._generator()
        answer_stream = reader.answer(
            question, evidence, stream=True, max_new_tokens=max_new_tokens
        )
        yield answer_stream.citations
        for piece in answer_stream:
            yield piece
        yield answer_stream.result

    async def redact_answer(self, text: str, chunk_ids: list[str]) -> str:
        _, guard = self._generator()
        return guard.redact_text(text, chunk_ids)

    async def check(
        self,
        question: str,
        answer_text: str,
        evidence: Evidence,
        principal: Principal,
        answer_logprob: float | None,
    ) -> Any:
        _, guard = self._generator()
        return guard.check(question, answer_text, evidence, principal, answer_logprob)
