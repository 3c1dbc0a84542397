"""Erasure end to end: ingest a small corpus with a planted canary document (restricted ACL,
sharing entities with a public document), forget it, and find it nowhere: not in a table,
a vector, the graph's provenance, the quarantine, any byte of the new bundle, nor in what
the retrievers return to a principal who may read everything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from rayrag.config import resolve_config
from rayrag.errors import BundleError, DataError
from rayrag.event_log import fingerprint
from rayrag.governance.privacy.audit import AuditLog
from rayrag.governance.privacy.erasure import forget
from rayrag.index.bundle import IndexBundle
from rayrag.index.graph import SYNONYM, KnowledgeGraph
from rayrag.pipelines.ingest import ingest
from rayrag.retrieval.dense import DenseRetriever
from rayrag.retrieval.hybrid import HybridRetriever
from rayrag.types import Principal
from tests.tiny import demo_slice

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
CANARY_ID = "canary-7f3a"
CANARY_TOKEN = "Quintavionix"  # appears in no other document
CANARY = {
    "id": CANARY_ID,
    "title": f"{CANARY_TOKEN} Systems acquisition memo",
    "text": f"{CANARY_TOKEN} Systems acquired Lochmere Chemicals in Denver. Lochmere Chemicals "
    "builds industrial technology products from its headquarters in Denver.",
    "acl": ["legal"],
    "metadata": {"doc_type": "memo"},
    "updated_at": "2024-01-01T00:00:00Z",
}
QUARANTINED = '{"id": "canary-7f3a", "text": 17}\n'  # the same id, also quarantined once


@pytest.fixture(scope="module")
def built(demo_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("erasure")
    corpus = demo_slice(demo_corpus, root, n_questions=3, n_restricted=2)
    # shares entities with the canary
    extra = [] if "profile-000" in corpus.kept else [corpus.docs["profile-000"]]
    with open(root / "corpus.jsonl", "a") as handle:
        handle.writelines(json.dumps(d) + "\n" for d in [*extra, CANARY])
        handle.write(QUARANTINED)
    config = resolve_config("demo", ["tracking.enabled=false"])
    ingest(root / "corpus.jsonl", root / "bundle", config, engine="local", progress=lambda *_: None)
    return root, corpus, config


@pytest.fixture()
def fresh(built, tmp_path):
    """A private copy of the built bundle and a config whose audit log is in tmp_path."""
    root, corpus, config = built
    bundle = tmp_path / "bundle"
    shutil.copytree(root / "bundle", bundle)
    config = config.with_overrides([f"governance.audit_log={tmp_path / 'audit.jsonl'}"])
    return bundle, corpus, config


def _bundle_bytes(bundle: Path) -> bytes:
    """Every file's bytes plus the tables decoded (parquet may compress a string away)."""
    raw = b"".join(p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file())  # lexical/ too
    tables = [
        pq.read_table(bundle / name).to_pandas().to_json()
        for name in ("chunks.parquet", "documents.parquet")
    ]
    return raw + "".join(tables).encode()


def _everyone(bundle: Path) -> Principal:
    groups = {
        g for acl in IndexBundle.load(bundle).documents().column("acl").to_pylist() for g in acl
    }
    return Principal("auditor", frozenset(groups | {"legal", "public"}))


def test_forget_removes_the_canary_everywhere(fresh, tmp_path):
    bundle, corpus, config = fresh
    before = IndexBundle.load(bundle)
    n_chunks, n_docs = before.chunks().num_rows, before.documents().num_rows  # load before the swap
    everyone = _everyone(bundle)
    canary_chunks = {
        c
        for c, d in zip(
            before.chunks().column("chunk_id").to_pylist(),
            before.chunks().column("doc_id").to_pylist(),
            strict=True,
        )
        if d == CANARY_ID
    }
    assert canary_chunks and CANARY_TOKEN.encode() in _bundle_bytes(bundle)  # the scan can see it
    assert any(q["doc_id"] == CANARY_ID for q in before.quarantine())
    hits = DenseRetriever(bundle, config).retrieve(CANARY["text"], everyone, top_k=3)
    assert hits[0].doc_id == CANARY_ID  # findable before
    lexical_hits = (
        HybridRetriever(bundle, config).retrieve(CANARY["text"], everyone, mode="bm25").passages
    )
    assert lexical_hits[0].doc_id == CANARY_ID  # by its words too
    g0 = before.graph().graph
    shared = {
        (u, v, k): d["doc_ids"]
        for u, v, k, d in g0.edges(keys=True, data=True)
        if CANARY_ID in d["doc_ids"] and len(d["doc_ids"]) > 1
    }
    assert any(k != SYNONYM for _, _, k in shared), (
        "the canary must share a fact with another document"
    )

    report = forget(bundle, [CANARY_ID], config, actor="tester", cache_roots=[]).to_json()

    after = IndexBundle.load(bundle)
    chunks, docs = after.chunks(), after.documents()
    # Tables and quarantine.
    assert CANARY_ID not in chunks.column("doc_id").to_pylist() + docs.column("doc_id").to_pylist()
    assert all(q["doc_id"] != CANARY_ID for q in after.quarantine())
    assert chunks.num_rows == n_chunks - len(canary_chunks)
    assert docs.num_rows == n_docs - 1
    # Vectors: the FAISS ids are exactly the remaining chunks' row ids.
    index = after.vector_index(config.index)
    assert sorted(faiss.vector_to_array(index._index.id_map).tolist()) == sorted(
        chunks.column("row_id").to_pylist()
    )
    # Graph: no provenance left, shared facts kept without it, no orphan entity.
    kg = KnowledgeGraph.load(bundle / "graph.json")
    g = kg.graph
    for _, data in g.nodes(data=True):
        assert data.get("doc_id") != CANARY_ID and CANARY_ID not in data.get("doc_ids", [])
        assert not canary_chunks & set(data.get("chunk_ids", [])) and not canary_chunks & set(
            data.get("support", {})
        )
    for *_, data in g.edges(data=True):
        assert CANARY_ID not in data.get("doc_ids", []) and not canary_chunks & set(
            data.get("chunk_ids", [])
        )
        assert not canary_chunks & set(data.get("support", {}))
    for (u, v, k), doc_ids in shared.items():
        if k == SYNONYM:
            continue
        assert g.has_edge(u, v, k), (u, v, k)
        assert g.edges[u, v, k]["doc_ids"] == sorted(set(doc_ids) - {CANARY_ID})
    assert not [n for n, d in g.nodes(data=True) if d["kind"] == "entity" and g.degree(n) == 0]
    # No byte of the new bundle names it.
    scanned = _bundle_bytes(bundle)
    assert CANARY_TOKEN.encode() not in scanned and CANARY_ID.encode() not in scanned
    # Retrieval as a principal who may read everything: none of its chunks.
    dense = DenseRetriever(bundle, config).retrieve(CANARY["text"], everyone, top_k=chunks.num_rows)
    assert dense and all(p.doc_id != CANARY_ID for p in dense)
    hybrid = HybridRetriever(bundle, config)
    for mode in ("dense", "bm25", "graph", "hybrid"):
        evidence = hybrid.retrieve(CANARY["text"], everyone, mode=mode)
        assert all(p.doc_id != CANARY_ID for p in evidence.passages)
        assert all(CANARY_ID not in f.doc_ids for f in evidence.facts)
    # It still answers.
    question = corpus.questions[0]
    evidence = hybrid.retrieve(question["question"], everyone, mode="hybrid")
    assert evidence.passages and {p.doc_id for p in evidence.passages} & set(
        question["supporting_ids"]
    )
    # Manifest and reports.
    m0, m1 = before.manifest, after.manifest
    assert m1["bundle_id"] == report["bundle_id"] != m0["bundle_id"] == report["previous_bundle_id"]
    assert m1["parent_bundle_id"] == m0["bundle_id"]
    assert m1["erasures"] == [
        {"audit_id": report["audit_id"], "n_docs": 1, "at": m1["erasures"][0]["at"]}
    ]
    assert (
        m1["counts"]["chunks"]
        == m1["counts"]["vectors"]
        == chunks.num_rows
        == m1["lexical"]["documents"]
    )
    assert after.lexical_index().row_ids.tolist() == chunks.column("row_id").to_pylist()
    assert m1["counts"]["documents"] == docs.num_rows and m1["counts"]["quarantined"] == len(
        after.quarantine()
    )
    for key in (
        "config_hash",
        "embedder",
        "faiss_factory",
        "ingest_fingerprint",
        "format_version",
        "created_at",
    ):
        assert m1[key] == m0[key], key
    pii = after.pii_report()
    totals: dict[str, int] = {}
    for raw in docs.column("pii_counts").to_pylist():
        for kind, n in json.loads(raw).items():
            totals[kind] = totals.get(kind, 0) + n
    assert pii["counts"] == dict(sorted(totals.items()))
    assert report["chunks_removed"] == report["vectors_removed"] == len(canary_chunks)
    assert (
        report["edges_removed"] > 0
        and report["edges_updated"] > 0
        and report["nodes_removed"] >= len(canary_chunks)
    )
    assert report["quarantine_removed"] == 1 and report["doc_ids"] == [CANARY_ID]
    # Audit: ids and counts only.
    records = AuditLog(tmp_path / "audit.jsonl").read()
    assert len(records) == 1
    audit = records[0]
    assert audit["action"] == "forget" and audit["audit_id"] == report["audit_id"]
    assert audit["doc_ids"] == [CANARY_ID] and audit["actor_hash"] == fingerprint("tester")
    assert audit["bundle_id"] == report["bundle_id"] and audit["chunks_removed"] == len(
        canary_chunks
    )
    assert CANARY_TOKEN not in (
        tmp_path / "audit.jsonl"
    ).read_text() and "tester" not in json.dumps(audit)
    assert not list(bundle.parent.glob(".bundle.old-*")) and not list(
        bundle.parent.glob(".bundle.tmp-*")
    )


def test_forget_purges_tune_cache_entries(fresh, tmp_path):
    bundle, _, config = fresh
    cache = tmp_path / "tune-cache"
    shutil.copytree(bundle, cache / "aaaa")  # holds the canary: goes
    clean = cache / "bbbb"
    shutil.copytree(bundle, clean)
    table = pq.read_table(clean / "documents.parquet")
    pq.write_table(
        table.filter(np.array(table.column("doc_id").to_pylist()) != CANARY_ID),
        clean / "documents.parquet",
    )
    report = forget(bundle, [CANARY_ID], config, cache_roots=[cache])
    assert report.cache_entries_removed == 1
    assert sorted(p.name for p in cache.iterdir()) == ["bbbb"]


def test_unknown_doc_id_changes_nothing(fresh, tmp_path):
    bundle, _, config = fresh
    snapshot = {
        str(p.relative_to(bundle)): p.read_bytes() for p in bundle.rglob("*") if p.is_file()
    }
    secret = "Maria Lopez diagnosis"
    with pytest.raises(DataError) as info:
        forget(bundle, [CANARY_ID, "no-such-doc", "nor-this"], config)
    assert "2 of 3" in str(info.value) and "no-such-doc" not in str(info.value)
    with pytest.raises(DataError) as info:
        forget(bundle, [secret], config)
    assert "Maria" not in str(info.value)
    with pytest.raises(DataError):
        forget(bundle, [], config)
    with pytest.raises(BundleError, match="not found"):
        forget(tmp_path / "nope", [CANARY_ID], config)
    assert {
        str(p.relative_to(bundle)): p.read_bytes() for p in bundle.rglob("*") if p.is_file()
    } == snapshot
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["bundle"]  # not even a lock file


def _rayrag(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAYRAG_OPERATOR": "tester"}
    return subprocess.run(
        [sys.executable, "-m", "rayrag.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert proc.stdout == ""


def test_cli_forget_and_purge(fresh, tmp_path):
    bundle, _, _ = fresh
    snapshot = {
        str(p.relative_to(bundle)): p.read_bytes() for p in bundle.rglob("*") if p.is_file()
    }
    audit = tmp_path / "audit.jsonl"
    common = [
        "--config",
        "demo",
        "--set",
        "tracking.enabled=false",
        "--set",
        f"governance.audit_log={audit}",
    ]
    _one_line_error(
        _rayrag(
            "forget", "--doc-id", "no-such-doc", "--bundle", str(bundle), *common, cwd=tmp_path
        ),
        "1 of 1 document ids",
    )
    _one_line_error(
        _rayrag(
            "forget",
            "--doc-id",
            CANARY_ID,
            "--bundle",
            str(tmp_path / "nope"),
            *common,
            cwd=tmp_path,
        ),
        "not found",
    )
    _one_line_error(
        _rayrag("purge", "--older-than", "30 days", *common, cwd=tmp_path), "--older-than"
    )
    assert {
        str(p.relative_to(bundle)): p.read_bytes() for p in bundle.rglob("*") if p.is_file()
    } == snapshot and not audit.exists()

    done = _rayrag(
        "forget", "--doc-id", CANARY_ID, "--bundle", str(bundle), "--json", *common, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (
        report["doc_ids"] == [CANARY_ID]
        and report["bundle_id"] == IndexBundle.load(bundle).bundle_id
    )
    assert AuditLog(audit).read()[0]["actor_hash"] == fingerprint("tester")

    purged = _rayrag(
        "purge",
        "--older-than",
        "12h",
        "--dry-run",
        "--json",
        *common,
        "--set",
        f"serve.event_log={tmp_path / 'events.jsonl'}",
        "--set",
        f"serve.escalation_queue={tmp_path / 'esc.jsonl'}",
        cwd=tmp_path,
    )
    assert purged.returncode == 0, purged.stderr
    summary = json.loads(purged.stdout.strip().splitlines()[-1])
    assert (
        summary["dry_run"]
        and summary["ttl_days"]["events"] == 0.5
        and summary["kept"]["audit"] == 1
    )


@pytest.mark.parametrize("factory", ["HNSW8,Flat", "IVF1,Flat"])
def test_forget_keeps_row_ids_on_approximate_indexes(fresh, factory):
    """HNSW cannot delete in place (rebuilt from its own storage), IVF removes from its lists:
    either way the FAISS ids stay the remaining chunks' row ids and search still works."""
    from rayrag.config import IndexConfig
    from rayrag.index.vector import VectorIndex

    bundle, _, config = fresh
    flat = VectorIndex.load(bundle / "vectors.faiss")
    ids = faiss.vector_to_array(flat._index.id_map)
    vectors = faiss.downcast_index(flat._index.index).reconstruct_n(0, flat.ntotal)
    VectorIndex(IndexConfig(factory=factory, use_gpu="never"), dim=vectors.shape[1]).build(
        vectors, ids
    ).save(bundle / "vectors.faiss")
    report = forget(bundle, [CANARY_ID], config, cache_roots=[])
    after = IndexBundle.load(bundle)
    index = VectorIndex.load(bundle / "vectors.faiss")
    row_ids = sorted(after.chunks().column("row_id").to_pylist())
    assert sorted(_faiss_ids(index._index)) == row_ids and report.vectors_removed == 1
    hits = DenseRetriever(bundle, config).retrieve(
        CANARY["text"], _everyone(bundle), top_k=len(row_ids)
    )
    assert len(hits) == len(row_ids) and all(p.doc_id != CANARY_ID for p in hits)


def _faiss_ids(index: faiss.Index) -> list[int]:
    """The ids an index holds: IndexIDMap's map, or every IVF inverted list's ids."""
    if isinstance(index, faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map).tolist()
    ivf = faiss.extract_index_ivf(index)
    return [
        int(i)
        for lst in range(ivf.nlist)
        for i in faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), ivf.invlists.list_size(lst))
    ]
