"""Ingest's plots for its MLflow run: chunks per document and PII found by entity type.

Counts only (how a corpus was cut and what was redacted), never text: the two charts a
reviewer looks at first when a bundle's retrieval or redaction changes.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def plot_ingest(
    chunk_doc_ids: Sequence[str], pii_counts: Mapping[str, int], out: Path
) -> list[Path]:
    """chunks_per_document.png (histogram) and pii_by_entity.png (bars) under `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    per_doc = list(Counter(chunk_doc_ids).values())
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(per_doc or [0], bins=range(0, max(per_doc or [0]) + 2), color="#4c72b0", align="left")
    ax.set_xlabel("chunks per document")
    ax.set_ylabel("documents")
    ax.set_title(f"{len(per_doc)} documents, {len(chunk_doc_ids)} chunks", fontsize=9)
    fig.tight_layout()
    paths.append(out / "chunks_per_document.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    entities = sorted(pii_counts, key=lambda e: -pii_counts[e])
    fig, ax = plt.subplots(figsize=(5, 0.8 + 0.3 * max(len(entities), 1)))
    ax.barh(entities or ["(none)"], [pii_counts[e] for e in entities] or [0], color="#c44e52")
    ax.invert_yaxis()
    ax.set_xlabel("spans redacted")
    ax.set_title("PII found at ingest, by entity type", fontsize=9)
    fig.tight_layout()
    paths.append(out / "pii_by_entity.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def log_ingest_plots(run: Any, chunk_doc_ids: Sequence[str], pii_counts: Mapping[str, int]) -> None:
    """Both charts to the run's `plots/` (nothing when tracking is off)."""
    if run.run_id is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for path in plot_ingest(chunk_doc_ids, pii_counts, Path(tmp)):
            run.log_artifact(path, artifact_path="plots")
