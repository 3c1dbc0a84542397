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
from rayrag.types import Evidence, Principal, RedactedQuestion


class HandleStages:
    """One handle per stage deployment, as `build_app` wires them."""

    def __init__(self, config: RAGConfig, redactor: Any, retriever: Any, ranker: Any, generator: Any,
                 guard: Any) -> None:
        self.config = config
        self.redactor, self.retriever, self.ranker = redactor, retriever, ranker
        self.generator, self.guard = generator, guard

    async def redact(self, question: str) -> RedactedQuestion:
        redacted, _counts = await self.redactor.redact_one.remote(question)
        return redacted

    async def retrieve(self, question: RedactedQuestion, principal: Principal, mode: str, top_k: int,
                       timer: StageTimer) -> Evidence:
        if mode == "bm25":  # the lexical index lives beside the graph; nothing else to search
            return await timer("retrieve", self.ranker.evidence.remote(question, principal, mode, top_k, [], []))
        depth = top_k if mode == "dense" else max(top_k, self.config.retrieval.candidate_k)
        dense_ref = self.retriever.search.remote(question, principal, depth)
        if mode == "dense":
            dense_hits, links = await timer("retrieve", dense_ref), {}
        else:  # dense search and entity linking do not depend on each other
            dense_hits, links = await timer("retrieve", asyncio.gather(
                dense_ref, self.ranker.link.remote(question, principal)))
        dense_ranking = [(p.chunk_id, p.score) for p in dense_hits]
        graph_ranking: list[tuple[str, float]] = []
        if mode != "dense":
            graph_ranking = await timer("kg", self.ranker.graph_ranking.remote(principal, links, dense_hits, depth))
        return await timer("kg", self.ranker.evidence.remote(question, principal, mode, top_k, dense_ranking,
                                                         graph_ranking))

    async def read(self, question: str, evidence: Evidence, max_new_tokens: int | None) -> Any:
        return await self.generator.answer.remote((question, evidence, max_new_tokens))

    async def verify(self, question: str, result: Any, evidence: Evidence, principal: Principal) -> tuple[Any, Any]:
        return await self.guard.verify.remote(question, result, evidence, principal)

    def stream(self, question: str, evidence: Evidence, max_new_tokens: int | None) -> AsyncIterator[Any]:
        return self.generator.options(stream=True).stream.remote(question, evidence, max_new_tokens)

    async def redact_answer(self, text: str, chunk_ids: list[str]) -> str:
        return await self.guard.redact.remote(text, chunk_ids)

    async def check(self, question: str, answer_text: str, evidence: Evidence, principal: Principal,
                    answer_logprob: float | None) -> Any:
        return await self.guard.check.remote(question, answer_text, evidence, principal, answer_logprob)
