"""Ingest end to end on Ray Data over the demo corpus: the bundle is complete, consistent,
redacted, carries ACLs and metadata everywhere, is tracked in MLflow, and updates
incrementally."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from rayrag.config import TrackingConfig, resolve_config
from rayrag.data.readers import read_corpus
from rayrag.index.bundle import IndexBundle
from rayrag.pipelines.ingest import ingest
from rayrag.tracking.tracker import Tracker

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return Tracker(
        TrackingConfig(tracking_uri=f"sqlite:///{root / 'mlflow.db'}"),
        artifact_root=root / "artifacts",
    )


@pytest.fixture(scope="module")
def built(ray_local, demo_corpus, tmp_path_factory, tracker):
    config = resolve_config("demo")
    out = tmp_path_factory.mktemp("bundles") / "bundle"
    result = ingest(demo_corpus.corpus_path, out, config, tracker=tracker)
    return config, result, IndexBundle.load(out)


def test_counts_agree(built, demo_corpus):
    _, result, bundle = built
    counts = result.counts
    chunks = bundle.chunks()
    assert counts["documents"] == demo_corpus.documents == bundle.documents().num_rows
    assert counts["chunks"] == chunks.num_rows == counts["vectors"]
    assert bundle.vector_index(resolve_config("demo").index).ntotal == chunks.num_rows
    assert counts["entities"] > 50 and counts["edges"] > counts["entities"]
    row_ids = chunks.column("row_id").to_pylist()
    assert len(set(row_ids)) == len(row_ids)
    assert set(chunks.column("doc_id").to_pylist()) == set(
        bundle.documents().column("doc_id").to_pylist()
    )
    manifest = bundle.manifest
    for key in (
        "config_hash",
        "corpus_digest",
        "embedder",
        "faiss_factory",
        "package_versions",
        "created_at",
    ):
        assert manifest[key], key
    assert manifest["embedder"]["dim"] == 384


def test_planted_pii_appears_nowhere(built, demo_corpus):
    _, _, bundle = built
    chunk_text = "\n".join(
        t or ""
        for t in bundle.chunks().column("text").to_pylist()
        + bundle.chunks().column("title").to_pylist()
    )
    graph_text = (bundle.path / "graph.json").read_text(encoding="utf-8")
    docs_text = pq.read_table(bundle.path / "documents.parquet").to_pandas().to_json()
    leaks = {
        kind: [v for v in values if v in chunk_text or v in graph_text or v in docs_text]
        for kind, values in demo_corpus.planted_pii.items()
    }
    assert sum(len(v) for v in demo_corpus.planted_pii.values()) > 20
    assert {k: v for k, v in leaks.items() if v} == {}
    report = bundle.pii_report()
    assert report["counts"].get("EMAIL_ADDRESS", 0) > 0 and report["counts"].get("PERSON", 0) > 0
    assert not any(
        v in json.dumps(report) for values in demo_corpus.planted_pii.values() for v in values
    )


def test_acl_and_metadata_reach_every_chunk_and_edge(built, demo_corpus):
    _, _, bundle = built
    source = {d.id: d for d in read_corpus(demo_corpus.corpus_path).documents}
    chunks = bundle.chunks().to_pylist()
    for chunk in chunks:
        doc = source[chunk["doc_id"]]
        assert tuple(chunk["acl"]) == doc.acl
        # ... plus the policy that redacted it: the demo corpus is personal data throughout.
        assert json.loads(chunk["metadata"]) == {**doc.metadata, "redaction_policy": "personal"}
    assert bundle.manifest["redaction"]["documents"] == {"personal": len(source)}
    assert bundle.policies_used() == ("personal",)
    doc_acl = {d: set(a) for d, a in ((c["doc_id"], c["acl"]) for c in chunks)}
    graph = json.loads((bundle.path / "graph.json").read_text(encoding="utf-8"))
    assert graph["edges"]
    for edge in graph["edges"]:
        assert edge["doc_ids"] and edge["chunk_ids"] and edge["acl"] and edge["extracted_at"]
        assert "confidence" in edge
        allowed = set().union(*(doc_acl[d] for d in edge["doc_ids"]))
        assert set(edge["acl"]) <= allowed


def test_mlflow_run_recorded(built, tracker):
    config, result, _ = built
    runs = tracker.find_runs("ingest")
    run = next(r for r in runs if r["run_id"] == result.manifest["mlflow_run_id"])
    assert run["tags.config_hash"] == config.config_hash
    assert run["tags.bundle_id"] == result.manifest["bundle_id"]
    assert run["metrics.count_chunks"] == result.counts["chunks"]
    assert run["params.chunking.chunk_size"] == str(config.chunking.chunk_size)


def test_incremental_replaces_changed_document_only(built, tmp_path, tracker):
    config, result, bundle = built
    old_chunks = bundle.chunks().to_pylist()
    target = old_chunks[0]["doc_id"]
    changed = tmp_path / "changed.jsonl"
    changed.write_text(
        json.dumps(
            {
                "id": target,
                "title": "Revised notice",
                "text": "Zentrova Dynamics acquired Quillfeather Robotics in 2031. "
                "The combined company is based in Lisbon.",
                "acl": ["public"],
                "metadata": {"doc_type": "press_release"},
            }
        )
        + "\n"
        + json.dumps(
            {
                "id": "brand-new-doc",
                "text": "Orvanta Pharma manufactures Zelvimab.",
                "acl": ["legal"],
            }
        )
        + "\n"
    )
    out = tmp_path / "bundle-v2"
    new = ingest(changed, out, config, previous=bundle.path, tracker=tracker)
    new_bundle = IndexBundle.load(out)
    assert new.counts["processed_documents"] == 2
    assert new.counts["reused_documents"] == result.counts["documents"] - 1
    assert new.counts["documents"] == result.counts["documents"] + 1
    assert new_bundle.manifest["parent_bundle_id"] == bundle.bundle_id
    new_chunks = new_bundle.chunks().to_pylist()
    old_target_ids = {c["row_id"] for c in old_chunks if c["doc_id"] == target}
    target_chunks = [c for c in new_chunks if c["doc_id"] == target]
    assert target_chunks and all(
        "Quillfeather" in c["text"] or "Lisbon" in c["text"] for c in target_chunks
    )
    assert not old_target_ids & {c["row_id"] for c in new_chunks}
    assert new.counts["vectors"] == new.counts["chunks"] == len(new_chunks)
    untouched = {c["chunk_id"]: c["text"] for c in old_chunks if c["doc_id"] != target}
    assert {
        c["chunk_id"]: c["text"]
        for c in new_chunks
        if c["doc_id"] != target and c["doc_id"] != "brand-new-doc"
    } == untouched
    # Entities only the old version of the document mentioned are gone with it.
    old_graph = json.loads((bundle.path / "graph.json").read_text(encoding="utf-8"))
    only_old = {
        n["id"]
        for n in old_graph["nodes"]
        if n.get("kind") == "entity" and set(n.get("doc_ids", [])) == {target}
    }
    graph = json.loads((out / "graph.json").read_text(encoding="utf-8"))
    new_nodes = {n["id"]: n for n in graph["nodes"]}
    new_text = " ".join(c["text"] for c in target_chunks).casefold()
    survivors = [
        i
        for i in only_old
        if i in new_nodes and new_nodes[i].get("name", "").casefold() not in new_text
    ]
    assert survivors == []
    for edge in graph["edges"]:
        if target in edge["doc_ids"]:
            assert set(edge["chunk_ids"]) & {c["chunk_id"] for c in target_chunks}
    assert any("zentrova" in n.get("name", "").casefold() for n in graph["nodes"])
    # the old bundle is untouched
    assert IndexBundle.load(bundle.path).bundle_id == bundle.bundle_id


def test_delete_missing_drops_documents_absent_from_corpus(built, tmp_path, tracker, demo_corpus):
    config, result, bundle = built
    keep = [
        json.loads(line)
        for line in demo_corpus.corpus_path.read_text(encoding="utf-8").splitlines()[:5]
    ]
    corpus = tmp_path / "keep.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in keep), encoding="utf-8")
    out = tmp_path / "bundle-pruned"
    pruned = ingest(corpus, out, config, previous=bundle.path, delete_missing=True, tracker=tracker)
    assert pruned.counts["processed_documents"] == 0  # unchanged documents are reused as they are
    assert pruned.counts["documents"] == 5
    assert pruned.counts["removed_documents"] == result.counts["documents"] - 5
    kept_ids = {row["id"] for row in keep}
    new_bundle = IndexBundle.load(out)
    assert set(new_bundle.chunks().column("doc_id").to_pylist()) == kept_ids
    assert pruned.counts["vectors"] == pruned.counts["chunks"]
    graph = json.loads((out / "graph.json").read_text(encoding="utf-8"))
    assert all(set(edge["doc_ids"]) <= kept_ids for edge in graph["edges"])


def _without_timestamps(value):
    """graph.json minus `extracted_at` (each build's own clock)."""
    if isinstance(value, dict):
        return {k: _without_timestamps(v) for k, v in value.items() if k != "extracted_at"}
    if isinstance(value, list):
        return [_without_timestamps(v) for v in value]
    return value


def _bundle_content(bundle):
    return {
        "chunks": bundle.chunks().to_pylist(),
        "documents": bundle.documents().to_pylist(),
        "pii_report": bundle.pii_report(),
        "graph": _without_timestamps(
            json.loads((bundle.path / "graph.json").read_text(encoding="utf-8"))
        ),
        "fingerprint": bundle.manifest["ingest_fingerprint"],
    }


def test_every_engine_and_the_plain_stages_build_the_same_bundle(ray_local, demo_corpus, tmp_path):
    """Ray Data with two redaction actors (batches interleave), the local engine and the bench's
    sequential path (the plain classes, no row conversion) give the same bundle content."""
    import faiss
    import numpy as np

    from rayrag.index.embedder import Embedder
    from rayrag.index.graph import KnowledgeGraph
    from rayrag.index.kg_extract import TripleExtractor
    from rayrag.pipelines.ingest_stages import DocumentPreparer

    # Small chunks and batches: several chunks per document, batches that split documents.
    overrides = [
        "tracking.enabled=false",
        "chunking.chunk_size=32",
        "chunking.chunk_overlap=8",
        "ingest.read_batch_size=3",
        "embedding.batch_size=5",
    ]
    config = resolve_config("demo", overrides)
    corpus = tmp_path / "nine.jsonl"
    corpus.write_text(
        "".join(
            line + "\n"
            for line in demo_corpus.corpus_path.read_text(encoding="utf-8").splitlines()[:9]
        ),
        encoding="utf-8",
    )
    runs = {
        "ray_data_two_actors": ("ray_data", ["ingest.prepare_actors_min=2"]),
        "ray_data_autoscaling": ("ray_data", ["ingest.prepare_actors_max=3"]),
        "local": ("local", []),
    }
    bundles = {}
    for name, (engine, extra) in runs.items():
        ingest(
            corpus,
            tmp_path / name,
            resolve_config("demo", overrides + extra),
            engine=engine,
            progress=lambda _: None,
        )
        bundles[name] = IndexBundle.load(tmp_path / name)
    reference = _bundle_content(bundles["local"])
    assert len(reference["chunks"]) > 18 and reference["graph"]["edges"]
    assert sum(json.loads(d["pii_counts"]) != {} for d in reference["documents"]) >= 1
    for name in ("ray_data_two_actors", "ray_data_autoscaling"):
        assert _bundle_content(bundles[name]) == reference, name
    indexes = {name: faiss.read_index(str(b.path / "vectors.faiss")) for name, b in bundles.items()}
    vectors = {
        name: np.stack([index.reconstruct(c["row_id"]) for c in reference["chunks"]])
        for name, index in indexes.items()
    }

    # The plain classes, batch by batch as the bench's sequential competitor runs them.
    documents = read_corpus(corpus).documents
    preparer, extractor, embedder = (
        DocumentPreparer(config),
        TripleExtractor(config.kg),
        Embedder(config.embedding),
    )
    chunks, pii = [], {}
    for first in range(0, len(documents), config.ingest.read_batch_size):
        prepared = preparer(documents[first : first + config.ingest.read_batch_size])
        chunks.extend(prepared.chunks)
        pii.update(prepared.pii_counts)
    assert [(c.chunk_id, c.text, c.start, c.end) for c in chunks] == [
        (c["chunk_id"], c["text"], c["start"], c["end"]) for c in reference["chunks"]
    ]
    assert {d["doc_id"]: json.loads(d["pii_counts"]) for d in reference["documents"]} == pii
    plain = embedder.encode([c.text for c in chunks])
    for name, found in vectors.items():
        assert np.allclose(found, plain, atol=1e-5), name
    graph = KnowledgeGraph.build(
        extractor(chunks), config=config.kg, embed_fn=embedder.encode, extracted_at="now"
    )
    graph.save(tmp_path / "plain-graph.json")
    plain_graph = json.loads((tmp_path / "plain-graph.json").read_text(encoding="utf-8"))
    assert _without_timestamps(plain_graph) == reference["graph"]


def test_unknown_engine_is_a_one_line_config_error(tmp_path):
    from rayrag.errors import ConfigError

    with pytest.raises(ConfigError, match="engine must be 'ray_data' or 'local', got 'spark'"):
        ingest(tmp_path / "none.jsonl", tmp_path / "out", resolve_config("demo"), engine="spark")


def test_chunks_are_embedded_and_indexed_with_their_title(ray_local, demo_corpus, tmp_path):
    import faiss
    import numpy as np

    from rayrag.index.embedder import Embedder, passage_text

    config = resolve_config("demo", ["tracking.enabled=false", "embedding.text_format=title_chunk"])
    corpus = tmp_path / "eight.jsonl"
    corpus.write_text(
        "".join(
            line + "\n"
            for line in demo_corpus.corpus_path.read_text(encoding="utf-8").splitlines()[:8]
        ),
        encoding="utf-8",
    )
    ingest(corpus, tmp_path / "b", config, engine="local", progress=lambda _: None)
    bundle = IndexBundle.load(tmp_path / "b")
    assert (
        bundle.text_format() == "title_chunk"
        and bundle.manifest["embedder"]["text_format_version"] == 1
    )
    chunks = bundle.chunks().to_pylist()
    index = faiss.read_index(str(bundle.path / "vectors.faiss"))
    embedder = Embedder(config.embedding)
    contextual = embedder.encode(
        [
            passage_text(c["text"], c["title"], json.loads(c["metadata"]), "title_chunk")
            for c in chunks
        ]
    )
    plain = embedder.encode([c["text"] for c in chunks])
    stored = np.stack([index.reconstruct(c["row_id"]) for c in chunks])
    assert all(c["title"] for c in chunks) and not any(
        c["text"].startswith(c["title"] + ":") for c in chunks
    )
    np.testing.assert_allclose(stored, contextual, atol=1e-4)  # the title is in the vector ...
    assert (stored * plain).sum(
        axis=1
    ).max() < 0.995  # ... not the chunk's alone (unit vectors: cosines)
    # ... and in the BM25 index: a word only the title holds finds the chunk there, not without it.
    from rayrag.index.lexical import LexicalIndex, tokenize

    lexical, plain_lexical = (
        bundle.lexical_index(),
        LexicalIndex.from_chunks(bundle.chunks(), "chunk"),
    )
    title_only, word = next(
        (c, w)
        for c in chunks
        for w in tokenize([c["title"]])[0]
        if w not in tokenize([c["text"]])[0]
    )
    everything = np.ones(lexical.ntotal, np.float32)
    assert title_only["row_id"] in [r for r, _ in lexical.search(word, lexical.ntotal, everything)]
    assert title_only["row_id"] not in [
        r for r, _ in plain_lexical.search(word, lexical.ntotal, everything)
    ]


def test_bm25_finds_identifier_records_inside_the_acl(built, demo_corpus):
    import numpy as np

    from rayrag.errors import AccessDenied
    from rayrag.retrieval.hybrid import HybridRetriever
    from rayrag.types import Principal

    config, result, bundle = built
    assert (
        bundle.manifest["lexical"]["documents"]
        == result.counts["chunks"]
        == bundle.lexical_index().ntotal
    )
    for name in sorted(
        p.name for p in (bundle.path / "lexical").iterdir()
    ):  # no planted PII in its vocabulary
        text = (bundle.path / "lexical" / name).read_bytes().decode("utf-8", errors="ignore")
        assert not [
            v for values in demo_corpus.planted_pii.values() for v in values if v in text
        ], name
    records = [c for c in bundle.chunks().to_pylist() if "EMP-" in (c["title"] or "")]
    retriever = HybridRetriever(bundle.path, config)
    hr = Principal("hr-officer", frozenset({"public", "hr"}))
    hits = 0
    for record in records[:20]:
        emp = record["title"].split()[-1]
        evidence = retriever.retrieve(
            f"What position does employee {emp} hold?", hr, mode="bm25", top_k=3
        )
        hits += evidence.passages[0].doc_id == record["doc_id"]
    assert len(records) >= 20 and hits >= 19  # the id is an exact join key for BM25
    public = Principal("anon", frozenset({"public"}))
    emp = records[0]["title"].split()[-1]
    passages = retriever.retrieve(
        f"What position does employee {emp} hold?", public, mode="bm25", top_k=10
    ).passages
    assert all(
        "hr" not in c["acl"]
        for c in bundle.chunks().to_pylist()
        if c["chunk_id"] in {p.chunk_id for p in passages}
    )
    lexical = bundle.lexical_index()
    hr_rows = [c["row_id"] for c in bundle.chunks().to_pylist() if set(c["acl"]) == {"hr"}]
    assert lexical.search(emp, 5, lexical.allowed_mask(np.array(hr_rows))) != []
    with pytest.raises(AccessDenied):
        retriever.retrieve("anything", Principal("nobody", frozenset({"nothing"})), mode="bm25")
    from rayrag.errors import DataError

    for bad in ("", "   ", "x" * 5000):  # the same one-line errors as a dense search
        with pytest.raises(DataError, match="question is (empty|too long)"):
            retriever.retrieve(bad, hr, mode="bm25")


def test_fusion_calibration_chooses_on_dev_and_reports_heldout(built, demo_corpus, tmp_path):
    from rayrag.evaluation.fusion_eval import calibrate_fusion, choose
    from rayrag.types import Principal

    config, _, bundle = built
    rows = demo_corpus.qa_path.read_text(encoding="utf-8").splitlines()
    qa = tmp_path / "qa.jsonl"
    # one-hop questions, ids among them
    qa.write_text("\n".join(rows[70:82]) + "\n", encoding="utf-8")
    admin = Principal("admin", frozenset({"public", "hr", "finance", "legal"}))
    report = calibrate_fusion(bundle.path, qa, config, admin, grid=(0.0, 1.0))
    assert report["counts"] == {"dev": 6, "heldout": 6} and len(report["grid"]) == 4
    assert report["chosen"] in report["grid"] and set(report["heldout"]) == {
        "dense",
        "bm25",
        "graph",
        "hybrid",
        "hybrid_configured",
    }
    assert all(0.0 <= m["recall_at_5"] <= 1.0 for m in report["heldout"].values())
    # The choice: the best on dev, or one within a question of it nearer equal weights.
    flat = [
        {
            "weights": {"dense": 1.0, "graph": g, "bm25": b},
            "dev": {"recall_at_2": r2, "recall_at_5": 0.8, "mrr": 0.5},
        }
        for g, b, r2 in ((0.0, 2.0, 0.60), (1.0, 1.0, 0.58), (2.0, 0.5, 0.40))
    ]
    assert choose(flat, n_dev=50)["weights"] == {"dense": 1.0, "graph": 1.0, "bm25": 1.0}
    # 0.02 is more than one question of 200
    assert choose(flat, n_dev=200)["weights"]["bm25"] == 2.0


def test_the_text_actor_pool_fills_the_cpus_the_embedders_do_not_reserve():
    from rayrag.pipelines.ingest import text_actor_range

    demo = resolve_config("demo")
    # This 2-core laptop: one embedding actor of 1 CPU, so one spaCy actor on the other core.
    assert text_actor_range(demo, 2.0) == (1, 1)
    assert text_actor_range(demo, 16.0) == (1, 15)  # a node: the stage grows while batches wait
    two_embedders = resolve_config("demo", ["embedding.num_actors=2", "embedding.num_cpus=2"])
    assert text_actor_range(two_embedders, 16.0) == (1, 12)
    # Never below the minimum, and an explicit maximum is kept as given.
    assert text_actor_range(resolve_config("demo", ["ingest.prepare_actors_min=2"]), 1.0) == (2, 2)
    pinned = resolve_config("demo", ["ingest.prepare_actors_max=3"])
    assert text_actor_range(pinned, 64.0) == (1, 3)
