"""The CLI: RayRagError → one line on stderr and exit 2; results as the last JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def rayrag(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{(cwd or REPO) / 'cli-mlflow.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "rayrag.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=timeout,
    )


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_help_lists_commands():
    proc = rayrag("--help")
    assert proc.returncode == 0
    for command in ("data", "ingest", "ask", "bench", "demo"):
        assert command in proc.stdout


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("chunking.chunk_size=0", "chunking.chunk_size"),
        (
            "embedding.model=bge-large-en",
            "unknown embedder 'bge-large-en'",
        ),  # no label on MiniLM vectors
    ],
)
def test_bad_override_is_one_line(tmp_path, override, needle):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "hello"}\n')
    proc = rayrag(
        "ingest",
        "--corpus",
        str(corpus),
        "--out",
        str(tmp_path / "b"),
        "--set",
        override,
        cwd=tmp_path,
    )
    _one_line_error(proc, needle)
    assert not (tmp_path / "b").exists()


def test_eval_fusion_needs_a_bundle(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"id": "q", "question": "Who?", "answers": ["x"], "supporting_ids": ["a"]}\n')
    _one_line_error(
        rayrag("eval", "fusion", "--dataset", str(qa), cwd=tmp_path),
        "rayrag eval fusion takes --bundle",
    )
    _one_line_error(
        rayrag(
            "eval",
            "fusion",
            "--dataset",
            str(qa),
            "--bundle",
            str(tmp_path),
            "--model",
            "m",
            cwd=tmp_path,
        ),
        "drop --model",
    )


def test_missing_corpus_is_one_line(tmp_path):
    proc = rayrag(
        "ingest",
        "--corpus",
        str(tmp_path / "nope.jsonl"),
        "--out",
        str(tmp_path / "b"),
        cwd=tmp_path,
    )
    _one_line_error(proc, "nope.jsonl")


def test_empty_corpus_is_one_line(tmp_path):
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text("")
    proc = rayrag("ingest", "--corpus", str(corpus), "--out", str(tmp_path / "b"), cwd=tmp_path)
    _one_line_error(proc, "empty")
    assert not (tmp_path / "b").exists()


def test_strict_fails_on_bad_line(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "fine"}\n{not json}\n')
    proc = rayrag(
        "ingest", "--corpus", str(corpus), "--out", str(tmp_path / "b"), "--strict", cwd=tmp_path
    )
    _one_line_error(proc, ":2:")
    assert not (tmp_path / "b").exists()


def test_unknown_bench_and_dataset(tmp_path):
    _one_line_error(rayrag("bench", "nope", cwd=tmp_path), "unknown bench")
    _one_line_error(
        rayrag("data", "import", "nope", str(tmp_path), "--out", str(tmp_path / "o"), cwd=tmp_path),
        "unknown dataset kind",
    )


def test_bench_options_reach_the_bench_that_takes_them(tmp_path):
    _one_line_error(rayrag("bench", "moe", "--bundle", "b", cwd=tmp_path), "takes no option bundle")
    _one_line_error(rayrag("bench", "scale", "--quick", "--docs", cwd=tmp_path), "needs a full run")
    proc = rayrag(
        "bench",
        "serve",
        "--quick",
        "--bundle",
        str(tmp_path / "nb"),
        "--model",
        str(tmp_path / "nm"),
        cwd=tmp_path,
    )
    _one_line_error(proc, "nb")  # serve got the bundle: its error names the folder given
    assert not (tmp_path / "docs").exists() and not (tmp_path / "mlflow.db").exists()


def test_ask_on_missing_bundle(tmp_path):
    proc = rayrag(
        "ask", "anything", "--bundle", str(tmp_path / "none"), "--retrieval-only", cwd=tmp_path
    )
    _one_line_error(proc, "index bundle not found")


def test_data_demo_writes_corpus(tmp_path):
    proc = rayrag("data", "demo", "--out", str(tmp_path / "demo"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["documents"] > 100 and (tmp_path / "demo" / "corpus.jsonl").is_file()


def test_data_pii_writes_a_labelled_set_eval_pii_reads(tmp_path):
    out = tmp_path / "pii.json"
    proc = rayrag("data", "pii", "--out", str(out), "--seed", "3", "--n", "40", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "examples": 40,
        "seed": 3,
        "out": str(out),
    }
    examples = json.loads(out.read_text(encoding="utf-8"))
    assert len(examples) == 40 and {"full_text", "spans"} <= set(examples[0])
    bad = rayrag("data", "pii", "--out", str(out), "--n", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--n" in bad.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_ingest_then_ask(tmp_path):
    corpus = tmp_path / "c.jsonl"
    rows = [
        {
            "id": "d1",
            "title": "Acquisition",
            "text": "Velora Systems acquired Brightwater Labs in 2019. "
            "Contact jane.doe@example.com for details.",
            "acl": ["public"],
        },
        {
            "id": "d2",
            "title": "Payroll",
            "text": "The payroll office of Velora Systems is in Denver.",
            "acl": ["hr"],
        },
        {"id": "d3", "text": "Brightwater Labs manufactures the drug Xelodyne.", "acl": ["public"]},
        "this line is not an object",
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "bundle"
    proc = rayrag(
        "ingest",
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--config",
        "demo",
        "--set",
        "ingest.num_cpus=2",
        "--set",
        "ingest.fuse_text_stages=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for row in rows[:3]:  # progress and logs carry counts, never content
        assert row["text"][:30] not in proc.stderr + proc.stdout
    assert summary["documents"] == 3 and summary["quarantined"] == 1
    assert summary["chunks"] == summary["vectors"] >= 3
    assert summary["bundle"] == str(out)
    assert (out / "quarantine.jsonl").read_text().count("\n") == 1
    import pyarrow.parquet as pq

    texts = " ".join(pq.read_table(out / "chunks.parquet").column("text").to_pylist())
    assert "jane.doe@example.com" not in texts and "<EMAIL_ADDRESS>" in texts

    proc = rayrag(
        "ask",
        "Who acquired Brightwater Labs?",
        "--bundle",
        str(out),
        "--retrieval-only",
        "--json",
        "--config",
        "demo",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    passages = json.loads(proc.stdout.strip().splitlines()[-1])["passages"]
    assert passages[0]["doc_id"] == "d1"
    assert "d2" not in {p["doc_id"] for p in passages}  # hr-only, asker is public


def test_data_import_hotpotqa(tmp_path, fixture_data):
    proc = rayrag(
        "data",
        "import",
        "hotpotqa",
        str(fixture_data / "hotpotqa_sample"),
        "--out",
        str(tmp_path / "hotpot"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == {"documents": 350, "questions": 35, "out": str(tmp_path / "hotpot")}
    first = json.loads((tmp_path / "hotpot" / "qa.jsonl").read_text().splitlines()[0])
    assert first["supporting_ids"] and first["answers"]


def test_missing_hmac_key_fails_before_work(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "hello"}\n')
    env_key = "RAYRAG_TEST_UNSET_KEY"
    proc = rayrag(
        "ingest",
        "--corpus",
        str(corpus),
        "--out",
        str(tmp_path / "b"),
        "--set",
        f"governance.redaction.hmac_key_env={env_key}",
        cwd=tmp_path,
        timeout=120,
    )
    _one_line_error(proc, env_key)
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- eval and ask (retrieval)


def test_eval_missing_dataset_is_one_line(tmp_path):
    proc = rayrag(
        "eval",
        "--retrieval-only",
        "--bundle",
        str(tmp_path / "b"),
        "--dataset",
        str(tmp_path / "nope.jsonl"),
        "--mode",
        "dense",
        "--json",
        cwd=tmp_path,
    )
    _one_line_error(proc, "nope.jsonl")


def test_eval_missing_bundle_is_one_line(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"id": "q1", "question": "Who?", "answers": ["x"], "supporting_ids": ["d1"]}\n')
    proc = rayrag(
        "eval",
        "--retrieval-only",
        "--bundle",
        str(tmp_path / "nope"),
        "--dataset",
        str(qa),
        "--mode",
        "dense",
        cwd=tmp_path,
    )
    _one_line_error(proc, "nope")


def test_eval_needs_retrieval_only_and_a_known_mode(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"id": "q1", "question": "Who?", "answers": ["x"], "supporting_ids": ["d1"]}\n')
    proc = rayrag("eval", "--bundle", str(tmp_path), "--dataset", str(qa), cwd=tmp_path)
    _one_line_error(proc, "--retrieval-only")
    proc = rayrag(
        "eval",
        "--retrieval-only",
        "--bundle",
        str(tmp_path),
        "--dataset",
        str(qa),
        "--set",
        "retrieval.mode=sparse",
        cwd=tmp_path,
    )
    _one_line_error(proc, "retrieval.mode")


def test_ask_unknown_principal_and_conflicting_flags(tmp_path):
    proc = rayrag(
        "ask",
        "Who?",
        "--bundle",
        str(tmp_path),
        "--retrieval-only",
        "--principal",
        "mallory",
        cwd=tmp_path,
    )
    _one_line_error(proc, "mallory")
    proc = rayrag(
        "ask",
        "Who?",
        "--bundle",
        str(tmp_path),
        "--retrieval-only",
        "--principal",
        "admin",
        "--groups",
        "hr",
        cwd=tmp_path,
    )
    _one_line_error(proc, "not both")


def test_shipped_principals_file_validates():
    from rayrag.cli.common import PRINCIPALS_FILE, load_principals, resolve_principal

    principals = load_principals(PRINCIPALS_FILE)
    assert principals["anonymous"] == frozenset({"public"})
    assert principals["admin"] >= {"public", "hr", "finance", "legal"}
    assert all("public" in groups for groups in principals.values())
    assert resolve_principal(None, None).name == "anonymous"
    assert resolve_principal(None, "hr, legal").groups == frozenset({"hr", "legal"})


# ---------------------------------------------------------------- ask with a generator (--model)


def test_ask_without_model_or_retrieval_only_is_one_line(tmp_path):
    proc = rayrag("ask", "Who acquired Brightwater Labs?", "--bundle", str(tmp_path), cwd=tmp_path)
    _one_line_error(proc, "--model")


def test_ask_with_missing_checkpoint_is_one_line(tmp_path):
    proc = rayrag(
        "ask",
        "Who acquired Brightwater Labs?",
        "--bundle",
        str(tmp_path),
        "--model",
        str(tmp_path / "no-ckpt"),
        cwd=tmp_path,
    )
    _one_line_error(proc, "generator checkpoint not found")
    assert "Brightwater" not in proc.stderr  # the question never reaches an error line


def test_ask_with_empty_question_is_one_line(tmp_path):
    proc = rayrag("ask", "  ", "--bundle", str(tmp_path), "--model", str(tmp_path), cwd=tmp_path)
    _one_line_error(proc, "question is empty")


def _tiny_checkpoint(path: Path, texts: list[str]) -> Path:
    """An untrained tiny MoE with a BPE trained on `texts`: enough to exercise `ask --model`."""
    import torch

    from rayrag.config import GeneratorConfig
    from rayrag.generator.checkpoint import save_checkpoint
    from rayrag.generator.model import MoETransformer
    from rayrag.generator.tokenizer import train_tokenizer

    tok = train_tokenizer(texts * 20, vocab_size=400)
    tok_dir = path.parent / "tokenizer"
    tok_dir.mkdir()
    tok.save(tok_dir)
    torch.manual_seed(0)
    config = GeneratorConfig(
        vocab_size=tok.vocab_size,
        d_model=32,
        n_layers=1,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=48,
        n_experts=2,
        experts_per_token=1,
        max_seq_len=512,
        adaptive_softmax_cutoffs=(),
    )
    return save_checkpoint(MoETransformer(config), path, tokenizer_path=tok_dir)


@pytest.mark.slow
@pytest.mark.integration
def test_ingest_then_ask_with_model(tmp_path):
    rows = [
        {
            "id": "d1",
            "title": "Acquisition",
            "text": "Velora Systems acquired Brightwater Labs in 2019.",
            "acl": ["public"],
        },
        {
            "id": "d2",
            "title": "Payroll",
            "text": "The payroll office of Velora Systems is in Denver.",
            "acl": ["hr"],
        },
        {"id": "d3", "text": "Brightwater Labs manufactures the drug Xelodyne.", "acl": ["public"]},
    ]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    bundle = tmp_path / "bundle"
    proc = rayrag(
        "ingest",
        "--corpus",
        str(corpus),
        "--out",
        str(bundle),
        "--config",
        "demo",
        "--set",
        "ingest.num_cpus=2",
        "--set",
        "ingest.fuse_text_stages=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = _tiny_checkpoint(
        tmp_path / "ckpt", [r["text"] for r in rows] + ["question: answer: context: facts:"]
    )

    common = (
        "--bundle",
        str(bundle),
        "--model",
        str(ckpt),
        "--config",
        "demo",
        "--mode",
        "dense",
        "--set",
        "decoding.max_new_tokens=8",
    )
    proc = rayrag("ask", "Who acquired Brightwater Labs?", *common, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) >= {
        "answer",
        "citations",
        "facts",
        "truncated",
        "usage",
        "model_version",
        "config_hash",
    }
    assert isinstance(out["answer"], str)
    cited = [c["doc_id"] for c in out["citations"]]
    assert "d1" in cited and "d2" not in cited  # retrieved, ACL-trimmed (asker is public)
    scores = [c["score"] for c in out["citations"]]
    assert scores == sorted(scores, reverse=True)  # markers follow the ranking
    assert [c["marker"] for c in out["citations"]] == list(range(1, len(cited) + 1))
    assert out["truncated"] == {"chunk_ids": [], "facts_dropped": 0}
    assert out["usage"]["completion_tokens"] <= 8 and out["usage"]["prompt_tokens"] > 0
    assert out["model_version"].startswith("ckpt@") and len(out["config_hash"]) == 64

    # Human-readable: the answer, then numbered citations with title or doc id, ids and score.
    proc = rayrag("ask", "Who acquired Brightwater Labs?", *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "citations:" in lines
    listed = lines[lines.index("citations:") + 1 :][: len(cited)]
    assert all(
        f"[{i}] " in line and f"doc={doc}" in line and "chunk=" in line and "score=" in line
        for i, (line, doc) in enumerate(zip(listed, cited, strict=True), 1)
    )

    # A window one token short of the full prompt: the lowest-ranked passage goes, and it is said.
    window = 512  # _tiny_checkpoint's max_seq_len
    short = window - (out["usage"]["prompt_tokens"] - 1)
    proc = rayrag(
        "ask",
        "Who acquired Brightwater Labs?",
        *common[:-1],
        f"decoding.max_new_tokens={short}",
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cut = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [c["doc_id"] for c in cut["citations"]] == cited[:-1]
    assert cut["truncated"]["chunk_ids"] == [out["citations"][-1]["chunk_id"]]
    assert cut["usage"]["prompt_tokens"] < out["usage"]["prompt_tokens"]


def test_serve_keygen_prints_the_key_once_and_stores_only_its_hash(tmp_path):
    import yaml

    from rayrag.serve.auth import KeyStore, hash_key

    keys = tmp_path / "keys.yaml"
    proc = rayrag(
        "serve",
        "keygen",
        "--principal",
        "ana",
        "--groups",
        "public,hr",
        "--team",
        "web",
        "--keys-file",
        str(keys),
    )
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip().splitlines()[-1]
    assert key.startswith("rr-") and key not in keys.read_text()
    (entry,) = yaml.safe_load(keys.read_text())
    assert entry["sha256"] == hash_key(key) and entry["groups"] == ["public", "hr"]
    caller = KeyStore.from_file(keys).authenticate(f"Bearer {key}")
    assert caller.principal.name == "ana" and caller.team == "web" and caller.role == "user"
    before = keys.read_text()
    _one_line_error(
        rayrag("serve", "keygen", "--principal", "bob", "--role", "boss", "--keys-file", str(keys)),
        "role must be one of user, admin",
    )
    assert keys.read_text() == before  # nothing half-written


def test_serve_without_a_bundle_is_one_line(tmp_path):
    _one_line_error(
        rayrag("serve", "--bundle", str(tmp_path / "missing"), "--model", str(tmp_path)),
        "no index bundle at",
    )
