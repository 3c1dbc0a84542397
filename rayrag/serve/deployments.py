"""The serve graph's stages: one Ray Serve deployment each, a thin shell around a plain class.

    Redactor    query PII (Presidio, `governance.privacy.redaction`), batched
    Retriever   query embedding (batched with `@serve.batch`) and FAISS search, ACL inside
    Ranker      entity linking, personalized PageRank, BM25, KG-guided expansion, fusion, facts
    Generator   the MoE reader (`generator.reader.Reader`), batched decoding and streaming, or
                an OpenAI-compatible endpoint (`generator.openai_backend`, generator.backend)
    Guard       output redaction, KG validation, groundedness, escalation (`answering.guard`)

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

import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from ray import serve

from rayrag.config import RAGConfig
from rayrag.event_log import get_logger
from rayrag.serve.locate import locate_bundle, locate_model
from rayrag.types import Evidence, Passage, Principal, RedactedQuestion

T = TypeVar("T")
_log = get_logger("rayrag.serve.stages")


def _config(config_json: str) -> RAGConfig:
    return RAGConfig.model_validate_json(config_json)


def bundle_id_of(bundle: str | Path) -> str:
    """The bundle id its manifest names now; "" while a swap has no manifest in place."""
    try:
        return str(
            json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8")).get(
                "bundle_id", ""
            )
        )
    except (OSError, ValueError):
        return ""


def manifest_stamp(bundle: str | Path) -> tuple[int, int, int] | None:
    """(inode, mtime_ns, size) of a bundle's manifest; None while it is missing (mid-swap)."""
    try:
        st = os.stat(Path(bundle) / "manifest.json")
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_bundle_id(bundle: str | Path, default: str = "") -> str:
    """The manifest's bundle id; `default` while the manifest cannot be read (mid-swap)."""
    try:
        manifest = json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
    return str(manifest.get("bundle_id", default)) if isinstance(manifest, dict) else default


class BundleWatch(Generic[T]):
    """What a stage built from its bundle, rebuilt when the bundle on disk is replaced.

    `rayrag forget` and a re-ingest write a new bundle in place (two renames); every stage
    replica notices on its next request, at most `check_s` seconds late (0 = every request:
    a `stat` costs microseconds), and loads the new one before answering, so no replica
    serves an erased document after the erasure returned. While a swap is half done (the
    manifest missing for an instant) the current bundle keeps serving."""

    def __init__(self, bundle: str | Path, load: Callable[[], T], check_s: float = 0.0) -> None:
        self.bundle, self._load, self.check_s = Path(bundle), load, check_s
        self._stamp = manifest_stamp(self.bundle)
        self.value = load()
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self.reloads = 0

    def current(self) -> T:
        now = time.monotonic()
        if now - self._checked < self.check_s:
            return self.value
        self._checked = now
        stamp = manifest_stamp(self.bundle)
        if stamp is not None and stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self.value = self._load()
                    self._stamp = stamp
                    self.reloads += 1
                    _log.warning(
                        "bundle_reloaded",
                        extra={"fields": {"bundle": self.bundle.name, "reloads": self.reloads}},
                    )
        return self.value


@serve.deployment(name="Redactor")
class RedactorStage:
    """Questions redacted as the served bundle's documents were: one form per redaction
    policy its manifest records (`QueryRedactor`), reloaded with the bundle."""

    def __init__(self, config_json: str, bundle: str) -> None:
        bundle = str(locate_bundle(bundle))  # resolved in this replica, where it runs
        from rayrag.governance.privacy.redaction import QueryRedactor
        from rayrag.index.bundle import IndexBundle

        config = _config(config_json)
        engine: list[Any] = [None]  # Presidio loads once; a new bundle only changes the policies

        def load() -> QueryRedactor:
            query = QueryRedactor(IndexBundle.load(bundle), config.governance.redaction)
            if (
                query.redactor is not None
                and engine[0] is not None
                and engine[0].config == query.config
            ):
                query.redactor = engine[0]
            query.warm_up()
            engine[0] = query.redactor or engine[0]
            return query

        self.watch = BundleWatch(bundle, load, config.serve.bundle_check_s)
        self.batched = config.serve.max_batch_size > 1
        self._redact_batch.set_max_batch_size(config.serve.max_batch_size)
        self._redact_batch.set_batch_wait_timeout_s(config.serve.batch_wait_timeout_s)

    def ready(self) -> dict[str, Any]:
        query = self.watch.current()
        return {"redaction": query.redactor is not None, "policies": list(query.policies)}

    async def redact_one(self, question: str) -> tuple[RedactedQuestion, dict[str, int]]:
        """(the question's forms, counts per entity type in its strictest form)."""
        if self.batched:
            return await self._redact_batch(question)
        return self._redact([question])[0]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _redact_batch(
        self, questions: list[str]
    ) -> list[tuple[RedactedQuestion, dict[str, int]]]:
        return self._redact(questions)

    def _redact(self, questions: list[str]) -> list[tuple[RedactedQuestion, dict[str, int]]]:
        return [
            (r, dict(r.counts)) for r in self.watch.current().redact_batch(questions)
        ]  # one spaCy pass


@serve.deployment(name="Retriever")
class RetrieverStage:
    def __init__(self, config_json: str, bundle: str) -> None:
        bundle = str(locate_bundle(bundle))  # resolved in this replica, where it runs
        from rayrag.retrieval.dense import DenseRetriever

        config = _config(config_json)

        def load() -> DenseRetriever:
            dense = DenseRetriever(bundle, config)
            dense.warm_up()
            return dense

        self.watch = BundleWatch(bundle, load, config.serve.bundle_check_s)
        self.batched = config.serve.max_batch_size > 1
        self.embed.set_max_batch_size(config.serve.max_batch_size)
        self.embed.set_batch_wait_timeout_s(config.serve.batch_wait_timeout_s)

    @property
    def dense(self) -> Any:
        return self.watch.current()

    def ready(self) -> dict[str, Any]:
        return {"bundle_id": self.dense.bundle.manifest.get("bundle_id", "")}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def embed(self, questions: list[str]) -> list[np.ndarray]:
        return list(self.dense.encode(questions))  # one MiniLM call for the batch

    async def search(
        self, question: RedactedQuestion, principal: Principal, top_k: int
    ) -> list[Passage]:
        """The principal's top_k passages for an already-redacted question (each form over
        its policy's passages)."""
        dense = self.dense  # one bundle for the whole search
        groups = question.groups()
        vectors = {}
        for text, _ in groups:
            vector = await self.embed(text) if self.batched else dense.encode([text])[0]
            vectors[text] = vector[None]
        return dense.search_groups(groups, vectors, principal, top_k)


@serve.deployment(name="Ranker")
class RankerStage:
    """`HybridRetriever`'s graph side and fusion; dense searches come from the Retriever."""

    def __init__(self, config_json: str, bundle: str) -> None:
        bundle = str(locate_bundle(bundle))  # resolved in this replica, where it runs
        from rayrag.retrieval.hybrid import HybridRetriever

        config = _config(config_json)

        def load() -> HybridRetriever:
            hybrid = HybridRetriever(bundle, config)
            hybrid.warm_up(graph=True)
            return hybrid

        self.watch = BundleWatch(bundle, load, config.serve.bundle_check_s)

    @property
    def hybrid(self) -> Any:
        return self.watch.current()

    def ready(self) -> dict[str, Any]:
        """The graph this replica ranks with, from the bundle on disk now (reloaded if replaced)."""
        state = self.hybrid.state()
        if not state["graph_nodes"]:
            raise RuntimeError("the knowledge graph is not loaded")
        return state

    def link(self, question: RedactedQuestion, principal: Principal) -> dict[str, float]:
        return self.hybrid.link(question, principal)

    def graph_ranking(
        self, principal: Principal, links: dict[str, float], dense_hits: list[Passage], depth: int
    ) -> list[tuple[str, float]]:
        """PageRank from the linked entities and the top dense hits."""
        return self.hybrid.graph_ranking(links, principal, dense_hits, depth)

    def evidence(
        self,
        question: RedactedQuestion,
        principal: Principal,
        mode: str,
        top_k: int,
        dense_ranking: list[tuple[str, float]],
        graph_ranking: list[tuple[str, float]],
    ) -> Evidence:
        # the mode's ranking as in process (`rank_plan`'s final step), then provenance
        hybrid = self.hybrid
        # type: ignore[arg-type]
        ranking = hybrid.final_ranking(
            question, principal, mode, top_k, dense_ranking, graph_ranking
        )
        return hybrid.evidence(ranking, question, principal, mode)  # type: ignore[arg-type]


@serve.deployment(name="Generator")
class GeneratorStage:
    """The reader `generator.backend` names: the MoE `Reader` on the checkpoint (batched
    decoding), or `OpenAIReader` (an OpenAI-compatible endpoint, awaited without blocking the
    replica's loop; concurrency is `max_ongoing_requests`, the endpoint batches on its side)."""

    def __init__(self, config_json: str, model: str, template: str | None = None) -> None:
        """`template`: the pinned reader prompt's text, loaded once by `build_app`."""
        config = _config(config_json)
        self.remote = config.generator.backend == "openai"
        if self.remote:
            from rayrag.generator.openai_backend import OpenAIReader

            self.reader: Any = OpenAIReader(config)  # no checkpoint: `model` is not read
        else:
            from rayrag.generator.reader import Reader

            model = str(locate_model(model, config))  # resolved (or downloaded) in this replica
            self.reader = Reader(model, config, template=template)
        self.reader.warm_up()
        self.batched = config.serve.max_batch_size > 1
        self._answer_batch.set_max_batch_size(config.serve.max_batch_size)
        self._answer_batch.set_batch_wait_timeout_s(config.serve.batch_wait_timeout_s)
        self.shard_gauges = None
        if self.reader.sharded is not None:  # expert parallelism: per-shard load as Serve metrics
            from ray.serve.metrics import Gauge

            self.shard_gauges = (
                Gauge(
                    "rayrag_expert_shard_tokens",
                    description="Token-slots sent to each expert shard.",
                    tag_keys=("shard",),
                ),
                Gauge(
                    "rayrag_expert_shard_imbalance",
                    description="(max - mean) / mean of the shards' token-slots.",
                ),
                Gauge(
                    "rayrag_expert_shard_restarts",
                    description="Expert shards recreated after a failure.",
                ),
            )

    async def ready(self) -> dict[str, Any]:
        """The model version and backend; for an endpoint, also whether its /models answers
        (`endpoint`: "ok" or the failure's label; /readyz is 503 unless "ok")."""
        if not self.remote:
            return {"model_version": self.reader.model_version, "backend": "moe"}
        endpoint = await self.reader.aprobe()
        return {
            "model_version": self.reader.model_version,
            "backend": "openai",
            "endpoint": endpoint,
        }

    def shard_stats(self) -> dict[str, Any]:
        """Expert parallelism's state: shards, transport, load per shard, imbalance, restarts."""
        sharded = self.reader.sharded
        if sharded is None:
            return {"shards": 0}
        return {
            "shards": len(sharded.ranges),
            "transport": sharded.transport,
            "shard_load": list(sharded.shard_load),
            "imbalance": round(sharded.load_imbalance(), 4),
            "restarts": sharded.restarts,
        }

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
        if self.remote:
            question, evidence, cap = request
            return await self.reader.aanswer(question, evidence, cap)
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

    async def stream(
        self, question: str, evidence: Evidence, max_new_tokens: int | None
    ) -> AsyncIterator[Any]:
        """The cited passages (those that fit the window) first, then text pieces as they are
        decoded, then the ReaderResult as the last item."""
        if self.remote:
            async for item in self.reader.astream(question, evidence, max_new_tokens):
                yield item
            return
        answer_stream = self.reader.answer(
            question, evidence, stream=True, max_new_tokens=max_new_tokens
        )
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
        bundle = str(locate_bundle(bundle))  # resolved in this replica, where it runs
        from rayrag.answering.guard import Guard

        config = _config(config_json)

        redactor: list[Any] = [None]  # Presidio loads once; only the bundle's graph is reloaded

        def load() -> Guard:
            guard = Guard(config, redactor[0], bundle_path=bundle)
            guard.warm_up()
            redactor[0] = guard.redactor
            return guard

        self.watch = BundleWatch(bundle, load, config.serve.bundle_check_s)

    @property
    def guard(self) -> Any:
        return self.watch.current()

    def ready(self) -> dict[str, Any]:
        """The Guard's checks, warm, over the bundle on disk now (reloaded if replaced)."""
        state = self.guard.state()
        if not state["warm"] or (
            self.watch.bundle and state["bundle_id"] != bundle_id_of(self.watch.bundle)
        ):
            raise RuntimeError("the guard is not warm over the current bundle")
        return state

    def check(
        self,
        question: str,
        answer_text: str,
        evidence: Evidence,
        principal: Principal,
        answer_logprob: float | None = None,
    ) -> Any:
        return self.guard.check(question, answer_text, evidence, principal, answer_logprob)

    def verify(
        self, question: str, result: Any, evidence: Evidence, principal: Principal
    ) -> tuple[Any, Any]:
        """`Guard.verify`: the reader's candidate the checks trust most, and its report."""
        return self.guard.verify(question, result, evidence, principal)

    def redact(self, text: str, chunk_ids: list[str] | None = None) -> str:
        """Output redaction alone, for streamed text (the full check runs at the end), under
        the policy of the passages the answer draws on (`chunk_ids`)."""
        return self.guard.redact_text(text, chunk_ids or [])
