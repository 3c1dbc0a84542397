"""The reader's learning curve: exact match on a QA set, per slice, against training step.

A validation loss says how well the model predicts answers it is shown; exact match says
whether it finds them. `AnswerCurve` retrieves the evidence for a QA file once (hybrid
retrieval over the bundle, every group of the bundle, as the demo asks), lays the prompts
out with the tokenizer being trained (a pretrained base's own chat format and stop ids when
LoRA trains on one), and at each validation point decodes them greedily
and scores SQuAD exact match overall and per `metadata.hops`: the numbers a change is
judged by, as a curve (MLflow metrics `curve/em`, `curve/em_hops_1`, ... and a PNG), not as
one figure at the end. The questions are only read, never trained on.

    >>> curve = AnswerCurve(cfg, Path("bundle"), Path("qa.jsonl"), limit=80)
    >>> curve.prepare(tokenizer)              # retrieval and prompts, once
    >>> curve(model, step=400)                # {"curve/em": 0.41, "curve/em_hops_1": 0.6, ...}
    >>> curve.plot(Path("em_curve.png"))
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from rayrag.config import RAGConfig
from rayrag.data.readers import read_qa
from rayrag.errors import DataError
from rayrag.evaluation.qa_metrics import exact_match
from rayrag.generator.generate import generate
from rayrag.generator.pretrained import PretrainedTokenizer, build_chat_prompt
from rayrag.generator.prompt import build_prompt

DECODE_BATCH = 32


class AnswerCurve:
    """Exact match of the model being trained on a fixed QA set;
    cheap to build, `prepare` retrieves."""

    def __init__(
        self, config: RAGConfig, bundle: Path, qa_path: Path, limit: int | None = None
    ) -> None:
        if limit is not None and limit <= 0:
            raise DataError(f"curve limit must be > 0, got {limit} (--curve-limit)")
        self.config, self.bundle, self.qa_path, self.limit = (
            config,
            Path(bundle),
            Path(qa_path),
            limit,
        )
        self.prompts: list[list[int]] = []
        self.answers: list[list[str]] = []
        self.slices: list[str] = []
        self.history: list[tuple[int, dict[str, float]]] = []
        self._eos = self._pad = 0
        self._stop: list[list[int]] = []
        self._span_until: int | None = None
        self._tokenizer: Any = None

    def prepare(self, tokenizer: Any, window: int | None = None) -> None:
        """Retrieve every question's evidence and build its prompt (idempotent), laid out as
        the reader serves it: rayrag's template, or a pretrained checkpoint's chat format
        (free text up to its stop ids). `window`: the model's context (default
        generator.max_seq_len)."""
        if self.prompts:
            return
        from rayrag.generator.reader import reader_facts
        from rayrag.index.bundle import IndexBundle
        from rayrag.retrieval.hybrid import HybridRetriever
        from rayrag.types import Principal

        pairs = read_qa(self.qa_path)
        pairs = pairs[: self.limit] if self.limit else pairs
        if not pairs:
            raise DataError(f"no questions in {self.qa_path} (--curve-qa)")
        groups = {
            g
            for acl in IndexBundle.load(self.bundle).chunks().column("acl").to_pylist()
            for g in acl
        }
        everyone = Principal("curve", frozenset(groups))
        retriever = HybridRetriever(self.bundle, self.config)
        window = window or self.config.generator.max_seq_len
        budget = window - self.config.decoding.max_new_tokens
        chat = isinstance(tokenizer, PretrainedTokenizer)
        layout = build_chat_prompt if chat else build_prompt
        for qa in pairs:
            evidence = retriever.retrieve(qa.question, everyone)
            prompt = layout(
                qa.question, evidence.passages, reader_facts(evidence.facts), tokenizer, budget
            )
            self.prompts.append(prompt.ids)
            self.answers.append(list(qa.answers))
            self.slices.append(str(qa.metadata.get("hops", "all")))
        self._tokenizer = tokenizer
        self._eos, self._pad = tokenizer.eos_id, tokenizer.pad_id
        if chat:  # as the Reader decodes a pretrained checkpoint: its stop ids, free text
            self._stop, self._span_until = [[i] for i in tokenizer.stop_ids[1:]], None
        else:
            sep = tokenizer.sep_id
            self._stop = [[sep]]
            self._span_until = sep if self.config.decoding.extractive else None

    def __call__(self, model: Any, step: int) -> dict[str, float]:
        """Decode every prompt greedily (extractive when the reader serves so) and score; the
        point is kept for `plot`."""
        if not self.prompts:
            raise DataError("AnswerCurve.prepare(tokenizer) must run before the curve is measured")
        texts: list[str] = []
        for start in range(0, len(self.prompts), DECODE_BATCH):
            generations = generate(
                model,
                self.prompts[start : start + DECODE_BATCH],
                max_new_tokens=self.config.decoding.max_new_tokens,
                eos_id=self._eos,
                pad_id=self._pad,
                stop=self._stop,
                span_until=self._span_until,
            )
            texts += [self._tokenizer.decode(g.tokens).strip() for g in generations]
        scores: dict[str, list[float]] = defaultdict(list)
        for text, answers, hops in zip(texts, self.answers, self.slices, strict=True):
            em = exact_match(text, answers)
            scores["curve/em"].append(em)
            scores[f"curve/em_hops_{hops}"].append(em)
        point = {name: round(sum(v) / len(v), 4) for name, v in scores.items()}
        self.history.append((step, point))
        return point

    def plot(self, path: Path) -> Path | None:
        """Exact match per slice against step, one line each; None before any point."""
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = sorted({name for _, point in self.history for name in point})
        for name in names:
            steps = [s for s, point in self.history if name in point]
            ax.plot(
                steps,
                [point[name] for _, point in self.history if name in point],
                marker="o",
                label=name.removeprefix("curve/"),
            )
        ax.set_xlabel("training step")
        ax.set_ylabel("exact match")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        ax.set_title(f"reader exact match on {self.qa_path.name} ({len(self.prompts)} questions)")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
