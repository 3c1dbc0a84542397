"""The two ways `rayrag eval` asks a question: in this process, or over HTTP.

`InProcessAnswerer` runs `AnswerPipeline` over `LocalStages` (screen, redact, retrieve, read,
guard: what the Serve graph runs) and adds an untimed deeper ranking for recall@k.
`HttpAnswerer` posts to a running server's `/v1/ask` with a Bearer key; the key decides the
principal, server-side.

    >>> outcome = InProcessAnswerer(bundle, model, cfg, "hybrid")(qa, principal)
    >>> outcome = HttpAnswerer("http://127.0.0.1:8000", api_key=None, mode=None)(qa)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rayrag.config import RAGConfig
from rayrag.data.readers import QAPair
from rayrag.errors import ConfigError, DataError
from rayrag.evaluation.answer_scoring import (
    Outcome,
    outcome_from_response,
)
from rayrag.evaluation.retrieval_eval import (
    RECALL_KS,
    distinct_in_order,
)
from rayrag.types import Principal

HTTP_TIMEOUT_S = 120.0


class InProcessAnswerer:
    """The served steps in this process: `AnswerPipeline` over `LocalStages` (screen, redact,
    retrieve, read, guard), plus an untimed deep ranking for recall@k."""

    def __init__(self, bundle: Path, model: Path | None, config: RAGConfig, mode: str) -> None:
        from rayrag.answering.pipeline import AnswerPipeline, LocalStages

        self.bundle, self.config, self.mode = Path(bundle), config, mode
        self.model = Path(model) if model is not None else None  # None: generator.backend openai
        self.stages = LocalStages(self.bundle, self.model, config, generate=True)
        self.pipeline = AnswerPipeline(config, self.stages)

    def warm_up(self) -> None:
        self.stages.warm_up()

    @property
    def retriever(self) -> Any:
        return self.stages.retriever

    @property
    def reader(self) -> Any:
        return self.stages.reader

    @reader.setter
    def reader(self, reader: Any) -> None:  # a trial's fine-tuned checkpoint answers from here on
        self.warm_up()
        self.stages.reader = reader

    @property
    def bundle_id(self) -> str:
        self.warm_up()
        return self.retriever.dense.bundle.bundle_id

    @property
    def model_version(self) -> str:
        self.warm_up()
        return self.reader.model_version

    def evidence(self, qa: QAPair, principal: Principal) -> tuple[str, Any]:
        """The question as the reader sees it (redacted as the bundle says, as served) and
        the evidence retrieved for it."""
        question, evidence = self.pipeline.evidence_sync(qa.question, principal, self.mode)
        return question.text, evidence

    def __call__(self, qa: QAPair, principal: Principal) -> Outcome:
        started = time.perf_counter()
        turn = self.pipeline.answer_sync(qa.question, principal, mode=self.mode)
        latency_ms = (time.perf_counter() - started) * 1000
        body = turn.response.model_dump()
        if turn.response.refused:  # nothing retrieved or generated, as at the Serve ingress
            outcome = outcome_from_response(body, latency_ms, ranked_doc_ids=[])
            outcome.extra.update(refused=True, categories=turn.categories)
            return outcome
        # Untimed: a ranking deep enough that ten distinct documents survive (retrieval_eval.py).
        depth = max(self.config.retrieval.candidate_k, 4 * max(RECALL_KS))
        deep = self.retriever.retrieve(
            turn.question, principal, mode=self.mode, top_k=depth, with_facts=False
        )
        outcome = outcome_from_response(
            body, latency_ms, distinct_in_order(p.doc_id for p in deep.passages)
        )
        # scored (reader_em), then dropped
        outcome.extra["reader_answer"] = turn.reader_first.answer.text
        return outcome


class HttpAnswerer:
    """`POST {url}/v1/ask` with a Bearer key; the key decides the principal, server-side."""

    def __init__(
        self, url: str, api_key: str | None, mode: str | None, timeout_s: float = HTTP_TIMEOUT_S
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key or os.environ.get("RAYRAG_API_KEY")
        if not self.api_key:
            raise ConfigError("evaluating a server needs an API key: set $RAYRAG_API_KEY")
        self.mode, self.timeout_s = mode, timeout_s
        self.model_version = self.prompt_version = ""
        self._client: Any = None

    def warm_up(self) -> None:
        if self._client is None:
            import httpx

            # no-cache: an evaluation measures the graph (latency included), never the answer cache
            self._client = httpx.Client(
                timeout=self.timeout_s,
                headers={"Authorization": f"Bearer {self.api_key}", "Cache-Control": "no-cache"},
            )

    def __call__(self, qa: QAPair, principal: Principal | None = None) -> Outcome | None:
        """The outcome, or None when the server failed this request (5xx: counted, not scored)."""
        import httpx

        self.warm_up()
        payload: dict[str, Any] = {"question": qa.question}
        if self.mode:
            payload["mode"] = self.mode
        started = time.perf_counter()
        try:
            response = self._client.post(
                f"{self.url}/v1/ask", json=payload, headers={"X-Request-ID": f"eval-{qa.id}"}
            )
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach {self.url} ({type(exc).__name__}) (--url)") from None
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code in (401, 403):
            raise ConfigError(
                f"the server refused the API key ($RAYRAG_API_KEY): HTTP {response.status_code}"
            )
        if response.status_code >= 500:
            return None
        if response.status_code != 200:
            raise DataError(f"question {qa.id}: HTTP {response.status_code} from {self.url}/v1/ask")
        body = response.json()
        self.model_version = self.model_version or str(body.get("model_version") or "")
        self.prompt_version = self.prompt_version or str(body.get("prompt_version") or "")
        return outcome_from_response(body, latency_ms)
