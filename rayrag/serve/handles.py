"""The AnswerPipeline's stages as Serve deployment handles: the graph's half of the pipeline.

`HandleStages` carries each step of `rayrag.answering.pipeline.AnswerPipeline` out on the
deployment that owns it, awaiting `DeploymentResponse`s (never `ray.get`):

    redact   -> Redactor.redact_one (batched)
    retrieve -> Retriever.search (embed + FAISS)  ||  Ranker.link (entity linking), concurrently
                -> Ranker.graph_ranking (PageRank) -> Ranker.evidence (fusion, hops, facts)
    read     -> Generator.answer (batched decoding, n-best)   | stream -> Generator.stream
    verify   -> Guard.verify                                    | check, redact_answer -> Guard

`retrieve` is `HybridRetriever.retrieve` split across the Retriever and Ranker
deployments, so the service ranks what `rayrag ask` ranks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from rayrag.answering.pipeline import StageTimer
from rayrag.config import RAGConfig
from rayrag.retrieval.hybrid import candidate_depth, rank_plan
from rayrag.types import Evidence, Passage, Principal, RedactedQuestion


class HandleStages:
    """One handle per stage deployment, as `build_app` wires them."""

    def __init__(
        self,
        config: RAGConfig,
        redactor: Any,
        retriever: Any,
        ranker: Any,
        generator: Any,
        guard: Any,
    ) -> None:
        self.config = config
        self.redactor, self.retriever, self.ranker = redactor, retriever, ranker
        self.generator, self.guard = generator, guard

    async def redact(self, question: str) -> RedactedQuestion:
        redacted, _counts = await self.redactor.redact_one.remote(question)
        return redacted

    async def retrieve(
        self,
        question: RedactedQuestion,
        principal: Principal,
        mode: str,
        top_k: int,
        timer: StageTimer,
    ) -> Evidence:
        depth = candidate_depth(mode, top_k, self.config)
        return await rank_plan(
            _HandleRankSteps(self, timer), question, principal, mode, top_k, depth
        )

    async def read(self, question: str, evidence: Evidence, max_new_tokens: int | None) -> Any:
        return await self.generator.answer.remote((question, evidence, max_new_tokens))

    async def verify(
        self, question: str, result: Any, evidence: Evidence, principal: Principal
    ) -> tuple[Any, Any]:
        return await self.guard.verify.remote(question, result, evidence, principal)

    def stream(
        self, question: str, evidence: Evidence, max_new_tokens: int | None
    ) -> AsyncIterator[Any]:
        return self.generator.options(stream=True).stream.remote(question, evidence, max_new_tokens)

    async def redact_answer(self, text: str, chunk_ids: list[str]) -> str:
        return await self.guard.redact.remote(text, chunk_ids)

    async def check(
        self,
        question: str,
        answer_text: str,
        evidence: Evidence,
        principal: Principal,
        answer_logprob: float | None,
    ) -> Any:
        return await self.guard.check.remote(
            question, answer_text, evidence, principal, answer_logprob
        )


class _HandleRankSteps:
    """`rank_plan`'s steps over the Retriever and Ranker handles, timed per stage."""

    def __init__(self, stages: HandleStages, timer: StageTimer) -> None:
        self.stages, self.timer = stages, timer

    async def dense(
        self, question: RedactedQuestion, principal: Principal, depth: int
    ) -> list[Passage]:
        return await self.timer(
            "retrieve", self.stages.retriever.search.remote(question, principal, depth)
        )

    async def link(self, question: RedactedQuestion, principal: Principal) -> dict[str, float]:
        return await self.stages.ranker.link.remote(question, principal)

    async def graph(
        self, principal: Principal, links: dict[str, float], dense_hits: list[Passage], depth: int
    ) -> list[tuple[str, float]]:
        return await self.timer(
            "kg", self.stages.ranker.graph_ranking.remote(principal, links, dense_hits, depth)
        )

    async def both(self, first: Any, second: Any) -> tuple[Any, Any]:
        return tuple(await asyncio.gather(first, second))

    async def final(
        self,
        question: RedactedQuestion,
        principal: Principal,
        mode: str,
        top_k: int,
        dense_ranking: list[tuple[str, float]],
        graph_ranking: list[tuple[str, float]],
    ) -> Evidence:
        stage = "retrieve" if mode == "bm25" else "kg"
        return await self.timer(
            stage,
            self.stages.ranker.evidence.remote(
                question, principal, mode, top_k, dense_ranking, graph_ranking
            ),
        )
