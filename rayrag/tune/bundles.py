"""The bundle cache of a tuning sweep: each distinct IndexBundle built once, before trials.

A Ray Tune sweep over chunking configs must never ingest inside a trial: trials that share
a chunking config would build the same bundle again, and an ingest inside a 1-CPU trial
would start Ray Data actor pools that wait forever for CPUs their siblings hold. So the
sweep first calls `BundleCache.prebuild`, which dedupes the configs by `bundle_key`,
reuses complete bundles already under the cache root and builds the missing ones
concurrently, one Ray task each, running ingest in-process (`engine="local"`). Trials then
`lookup` their bundle by key. (The "index per chunk size, then evaluate" split of
Anyscale's llm-applications experiments.)

    >>> cache = BundleCache(Path(".rayrag/tune/bundles"))
    >>> report = cache.prebuild(Path("corpus.jsonl"), [cfg_128, cfg_256, cfg_512])
    >>> cache.lookup(bundle_key(cfg_128, corpus_digest(Path("corpus.jsonl"))))
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayrag.config import RAGConfig
from rayrag.errors import ConfigError, user_error_in
from rayrag.index import bundle as bundle_io
from rayrag.pipelines.ingest import ingest_fingerprint
from rayrag.ray_runtime import ensure_ray

Progress = Callable[[str], None]
_MAX_ERROR_CHARS = 300


def _stderr(message: str) -> None:
    print(f"[rayrag tune] {message}", file=sys.stderr, flush=True)


def corpus_digest(corpus: Path) -> str:
    """sha256 of the raw corpus input: the same value as `read_corpus(corpus).source_digest`.

    A file is hashed as a byte stream (cheaper than parsing it); a folder goes through
    `read_corpus`, whose digest frames every file's name and bytes.
    """
    corpus = Path(corpus)
    if corpus.is_file():
        digest = hashlib.sha256()
        with corpus.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    from rayrag.data.readers import read_corpus

    return read_corpus(corpus).source_digest


def bundle_key(config: RAGConfig, corpus_digest: str) -> str:
    """sha256 hex of everything that shapes a bundle: the ingest fingerprint (chunking,
    embedder, redaction, KG), the FAISS index settings, which documents are admitted, the
    bundle format and the corpus bytes. Threads, batch sizes, actors and tracking do not
    enter it: they change how fast a bundle is built, not what it holds."""
    parts = {
        "ingest_fingerprint": ingest_fingerprint(config),
        "index": config.index.model_dump(mode="json"),
        "admission": {"strict": config.ingest.strict, "max_doc_chars": config.ingest.max_doc_chars},
        "format_version": bundle_io.FORMAT_VERSION,
        "corpus_digest": corpus_digest,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass
class PrebuildReport:
    """What one `prebuild` did, per bundle key."""

    built: list[str] = field(default_factory=list)  # keys built now
    reused: list[str] = field(default_factory=list)  # keys already complete in the cache
    failed: dict[str, str] = field(default_factory=dict)  # key -> one-line error
    paths: dict[str, Path] = field(default_factory=dict)  # key -> bundle dir, for built + reused
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": {
                "built": len(self.built),
                "reused": len(self.reused),
                "failed": len(self.failed),
            },
            "built": list(self.built),
            "reused": list(self.reused),
            "failed": dict(self.failed),
            "paths": {key: str(path) for key, path in self.paths.items()},
            "seconds": round(self.seconds, 3),
        }


def build_bundle(corpus: str, out: str, config_json: str, num_threads: int) -> dict[str, Any]:
    """Ingest `corpus` into `out` in this process (the body of the prebuild Ray task).

    Tracking is off (a sweep logs its trials, not its cache) and torch gets the task's CPUs.
    """
    import torch

    from rayrag.pipelines.ingest import ingest
    from rayrag.tracking.tracker import Tracker

    torch.set_num_threads(num_threads)
    config = RAGConfig.model_validate_json(config_json).with_overrides(
        [f"embedding.num_threads={num_threads}", "tracking.enabled=false"]
    )
    started = time.perf_counter()
    result = ingest(
        Path(corpus),
        Path(out),
        config,
        engine="local",
        tracker=Tracker(config.tracking),
        progress=lambda _: None,
    )
    return {"chunks": result.counts["chunks"], "seconds": time.perf_counter() - started}


class BundleCache:
    """root/<key[:16]>/ holds one complete bundle (manifest.json present = complete; ingest
    writes bundles atomically, so a killed build leaves no half bundle under that name).

        >>> cache = BundleCache(Path("/tmp/bundles"))
        >>> cache.prebuild(corpus, configs).to_json()["counts"]
        {'built': 2, 'reused': 0, 'failed': 0}
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()  # Ray workers do not share the driver's cwd

    def path_for(self, key: str) -> Path:
        return self.root / key[:16]

    def lookup(self, key: str) -> Path | None:
        path = self.path_for(key)
        return path if (path / bundle_io.MANIFEST).is_file() else None

    def prebuild(
        self,
        corpus: Path,
        configs: Sequence[RAGConfig],
        *,
        num_cpus: float = 1.0,
        progress: Progress = _stderr,
    ) -> PrebuildReport:
        """Build every distinct bundle `configs` need that the cache lacks, concurrently,
        one Ray task of `num_cpus` CPUs each (Ray is started like ingest starts it, if it
        is not running). A build that raises is reported in `failed`; the others go on."""
        if num_cpus <= 0:
            raise ConfigError(f"num_cpus must be > 0, got {num_cpus} (prebuild num_cpus)")
        started = time.perf_counter()
        corpus = Path(corpus).resolve()
        digest = corpus_digest(corpus)
        wanted: dict[str, RAGConfig] = {}
        for config in configs:
            wanted.setdefault(bundle_key(config, digest), config)
        report = PrebuildReport()
        missing = {}
        for key, config in wanted.items():
            found = self.lookup(key)
            if found is not None:
                report.reused.append(key)
                report.paths[key] = found
            else:
                missing[key] = config
        if missing:
            progress(f"building {len(missing)} bundles ({len(report.reused)} reused)")
            self._build(corpus, missing, num_cpus, report, progress)
        report.seconds = time.perf_counter() - started
        return report

    def _build(
        self,
        corpus: Path,
        missing: dict[str, RAGConfig],
        num_cpus: float,
        report: PrebuildReport,
        progress: Progress,
    ) -> None:
        import ray

        ensure_ray(next(iter(missing.values())))
        task = ray.remote(num_cpus=num_cpus)(build_bundle)
        threads = max(1, int(num_cpus))
        self.root.mkdir(parents=True, exist_ok=True)
        pending = {
            task.remote(
                str(corpus), str(self.path_for(key)), config.model_dump_json(), threads
            ): key
            for key, config in missing.items()
        }
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(done[0])
            chunk_size = missing[key].chunking.chunk_size
            try:
                built = ray.get(done[0])
            except Exception as exc:  # any failure is recorded for this bundle; the sweep goes on
                report.failed[key] = _one_line(exc)
                progress(f"bundle {key[:12]} chunk_size={chunk_size} failed: {report.failed[key]}")
                continue
            report.built.append(key)
            report.paths[key] = self.path_for(key)
            progress(
                f"bundle {key[:12]} chunk_size={chunk_size}: {built['chunks']} chunks "
                f"in {built['seconds']:.1f}s"
            )


def _one_line(exc: BaseException) -> str:
    """A failed build as one line: the RayRagError a user can act on, else only the remote
    exception's type (its message could quote a document: it goes to MLflow and the console)."""
    user_error = user_error_in(exc)
    if user_error is not None:
        lines = str(user_error).strip().splitlines()
        return (lines[0] if lines else type(user_error).__name__)[:_MAX_ERROR_CHARS]
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__} (the Ray task's log has the traceback)"
