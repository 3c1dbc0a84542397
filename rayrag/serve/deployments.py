"""The serve graph's stages: one Ray Serve deployment each, a thin shell around a plain class.

    Redactor    query PII (Presidio, `governance.redaction.Redactor`), batched
    Retriever   query embedding (batched with `@serve.batch`) and FAISS search, ACL inside
    KGEnricher  entity linking, personalized PageRank, KG-guided expansion, fusion, facts
    Generator   the MoE reader (`generator.answer.Reader`), batched decoding and streaming
    Guard       output redaction, KG validation, groundedness, escalation (`serve.guard`)

The logic is the in-process classes' (`HybridRetriever`'s steps, `Reader`, `Guard`), so the
graph answers exactly what `rayrag ask` answers; the Ingress (ingress.py) orchestrates them
with `DeploymentHandle`s and awaits only what it needs. Each stage takes the config as JSON
and paths, loads its models in the constructor, and answers `ready()` for /readyz.
Batch sizes and waits come from `serve.max_batch_size` / `serve.batch_wait_timeout_s`
(`set_max_batch_size` at construction; the decorator's numbers are only defaults). With
`max_batch_size: 1` a stage calls its model directly instead: batching one is pointless,
and Ray's `_local_testing_mode` cannot run `@serve.batch` (its batch queue asks for the
replica context, which that mode does not provide in Ray 2.60).
Principals cross deployments as `Principal` objects (names and groups, no secrets).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from ray import serve

from rayrag.config import RAGConfig
from rayrag.types import Evidence, Passage, Principal


def _config(config_json: str) -> RAGConfig:
    return RAGConfig.model_validate_json(config_json)


@serve.deployment(name="Redactor")
class RedactorStage:
    def __init__(self, config_json: str) -> None:
        config = _config(config_json)
        self.enabled = config.governance.redaction.enabled
        self.redactor = None
        if self.enabled:
            from rayrag.governance.redaction import Redactor

            self.redactor = Redactor(config.governance.redaction)
            self.redactor.warm_up()
        self.batched = config.serve.max_batch_size > 1
        self._redact_batch.set_max_batch_size(config.serve.max_batch_size)
        self._redact_batch.set_batch_wait_timeout_s(config.serve.batch_wait_timeout_s)

    def ready(self) -> dict[str, Any]:
        return {"redaction": self.enabled}

    async def redact_one(self, question: str) -> tuple[str, dict[str, int]]:
        """(redacted text, counts per entity type)."""
        if self.batched:
            return await self._redact_batch(question)
        return self._redact([question])[0]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _redact_batch(self, questions: list[str]) -> list[tuple[str, dict[str, int]]]:
        return self._redact(questions)

    def _redact(self, questions: list[str]) -> list[tuple[str, dict[str, int]]]:
        if self.redactor is None:
            return [(q, {}) for q in questions]
        return [(r.text, dict(r.counts)) for r in self.redactor.redact_batch(questions)]  # one spaCy pass


@serve.deployment(name="Retriever")
class RetrieverStage:
    def __init__(self, config_json: str, bundle: str) -> None:
        from rayrag.retrieval.dense import DenseRetriever

        config = _config(config_json)
        self.dense = DenseRetriever(bundle, config)
        self.dense.warm_up()
        self.bundle_id = self.dense.bundle.manifest.get("bundle_id", "")
        self.batched = config.serve.max_batch_size > 1
        self.embed.set_max_batch_size(config.serve.max_batch_size)
        self.embed.set_batch_wait_timeout_s(config.serve.batch_wait_timeout_s)

    def ready(self) -> dict[str, Any]:
        return {"bundle_id": self.bundle_id}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def embed(self, questions: list[str]) -> list[np.ndarray]:
        return list(self.dense.encode(questions))  # one MiniLM call for the batch

    async def search(self, question: str, principal: Principal, top_k: int) -> list[Passage]:
        """The principal's top_k passages for an already-redacted question."""
        vector = await self.embed(question) if self.batched else self.dense.encode([question])[0]
        return self.dense.search(vector[None], principal, top_k)[0]


@serve.deployment(name="KGEnricher")
class KGEnricherStage:
    """`HybridRetriever`'s graph side and fusion; dense searches come from the Retriever."""

    def __init__(self, config_json: str, bundle: str) -> None:
        from rayrag.retrieval.hybrid import HybridRetriever

        self.hybrid = HybridRetriever(bundle, _config(config_json))
        self.hybrid.warm_up(graph=True)

    def ready(self) -> dict[str, Any]:
        return {"graph": True}

    def link(self, question: str, principal: Principal) -> dict[str, float]:
        return self.hybrid.link(question, principal)

    def expand(self, question: str, principal: Principal, links: dict[str, float],
               dense_hits: list[Passage], depth: int) -> tuple[list[tuple[str, float]], list[str]]:
        """(graph ranking, bridge entities for the expanded dense query)."""
        graph_ranking = self.hybrid.graph_ranking(links, principal, dense_hits, depth)
        expand_k = self.hybrid.config.retrieval.expand_k
        bridges = self.hybrid.bridge_entities(question, principal, [p.chunk_id for p in dense_hits[:expand_k]])
        return graph_ranking, bridges

    def evidence(self, question: str, principal: Principal, mode: str, top_k: int,
                 dense_ranking: list[tuple[str, float]], graph_ranking: list[tuple[str, float]]) -> Evidence:
        if mode == "dense":
            ranking = dense_ranking[:top_k]
        elif mode == "graph":
            ranking = graph_ranking[:top_k]
        else:
            ranking = self.hybrid.fuse(dense_ranking, graph_ranking, top_k)
        return self.hybrid.evidence(ranking, question, principal, mode)  # type: ignore[arg-type]


@serve.deployment(name="Generator")
class GeneratorStage:
    def __init__(self, config_json: str, model: str) -> None:
        from rayrag.generator.answer import Reader

        config = _config(config_json)
        self.reader = Reader(model, config)
        self.reader.warm_up()
        self.batched = config.serve.max_batch_size > 1
        self._answer_batch.set_max_batch_size(config.serve.max_batch_size)
        self._answer_batch.set_batch_wait_timeout_s(config.serve.batch_wait_timeout_s)
        self.shard_gauges = None
        if self.reader.sharded is not None:  # expert parallelism: per-shard load as Serve metrics
            from ray.serve.metrics import Gauge

            self.shard_gauges = (
                Gauge("rayrag_expert_shard_tokens", description="Token-slots sent to each expert shard.",
                      tag_keys=("shard",)),
                Gauge("rayrag_expert_shard_imbalance", description="(max - mean) / mean of the shards' token-slots."),
                Gauge("rayrag_expert_shard_restarts", description="Expert shards recreated after a failure."))

    def ready(self) -> dict[str, Any]:
        return {"model_version": self.reader.model_version}

    def shard_stats(self) -> dict[str, Any]:
        """Expert parallelism's state: shards, transport, load per shard, imbalance, restarts."""
        sharded = self.reader.sharded
        if sharded is None:
            return {"shards": 0}
        return {"shards": len(sharded.ranges), "transport": sharded.transport, "shard_load": list(sharded.shard_load),
                "imbalance": round(sharded.load_imbalance(), 4), "restarts": sharded.restarts}

    def shard_actors(self) -> list[Any]:
        """The ExpertShard actor handles (operators and fault tests); [] when not sharded."""
        return list(self.reader.sharded.shards) if self.reader.sharded is not None else []

    def _record_shards(self) -> None:
        if self.shard_gauges is None:
            return
        tokens, imbalance, restarts = self.shard_gauges
        sharded = self.reader.sharded
        for s, load in enumerate(sharded.shard_load):
            tokens.set(load, tags={"shard": str(s)})
        imbalance.set(sharded.load_imbalance())
        restarts.set(sharded.restarts)

    async def answer(self, request: tuple[str, Evidence, int | None]) -> Any:
        """The ReaderResult for (question, evidence, max_new_tokens); batched with others."""
        if self.batched:
            return await self._answer_batch(request)
        question, evidence, cap = request
        try:
            return self.reader.answer(question, evidence, max_new_tokens=cap)
        finally:
            self._record_shards()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _answer_batch(self, requests: list[tuple[str, Evidence, int | None]]) -> list[Any]:
        questions, evidences, caps = zip(*requests, strict=True)  # one decode for the batch
        try:
            return self.reader.answer_batch(list(questions), list(evidences), list(caps))
        finally:
            self._record_shards()

    async def stream(self, question: str, evidence: Evidence, max_new_tokens: int | None) -> AsyncIterator[Any]:
        """The cited passages (those that fit the window) first, then text pieces as they are
        decoded, then the ReaderResult as the last item."""
        answer_stream = self.reader.answer(question, evidence, stream=True, max_new_tokens=max_new_tokens)
        yield answer_stream.citations
        try:
            for piece in answer_stream:
                yield piece
        finally:
            self._record_shards()
        yield answer_stream.result


@serve.deployment(name="Guard")
class GuardStage:
    def __init__(self, config_json: str, bundle: str) -> None:
        from rayrag.serve.guard import Guard

        self.guard = Guard(_config(config_json), bundle_path=bundle)
        self.guard.warm_up()

    def ready(self) -> dict[str, Any]:
        return {"guard": True}

    def check(self, question: str, answer_text: str, evidence: Evidence, principal: Principal) -> Any:
        return self.guard.check(question, answer_text, evidence, principal)

    def redact(self, text: str) -> str:
        """Output redaction alone, for streamed text (the full check runs at the end)."""
        redactor = self.guard.redactor
        if redactor is None or not self.guard.config.governance.redaction.enabled:
            return text
        return redactor.redact(text).text
