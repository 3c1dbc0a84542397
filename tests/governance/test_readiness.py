"""`rayrag readiness`: the dashboard, the report, the CLI's errors, and one run on a tiny stack.

The unit tests need no Ray: the shipped Grafana dashboard against the metric names the
serve graph defines, the report's formats, a probe whose failure must not leak its text,
and the CLI's one-line errors. The slow test starts the whole graph with `--local` on a
tiny stack (a demo slice with the restricted canary `hr-000`, a model trained for a few
steps, registered twice so there is a champion and a challenger, and the champion's
baseline evaluation) and checks that all sixteen checks report without content.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rayrag.governance.readiness.probes import ReadinessProbe
from rayrag.governance.readiness.report import (
    CHECKS,
    DASHBOARD,
    Check,
    ReadinessReport,
    dashboard_metrics,
    exposed_metrics,
)
from rayrag.governance.readiness.session import Canary

REPO = Path(__file__).resolve().parents[2]
_DEFINED = re.compile(r'\b(Counter|Histogram|Gauge)\(\s*"(rayrag_[a-z0-9_]+)"')
_SUFFIX = {"Counter": ("_total",), "Histogram": ("_bucket", "_count", "_sum"), "Gauge": ("",)}


def defined_metrics() -> set[str]:
    """The Prometheus series the serve graph's Ray metrics export (`ray_` prefix, type suffixes)."""
    names = set()
    for source in (REPO / "rayrag" / "serve").glob("*.py"):
        for kind, name in _DEFINED.findall(source.read_text(encoding="utf-8")):
            names |= {f"ray_{name}{suffix}" for suffix in _SUFFIX[kind]}
    return names


def test_the_dashboard_is_grafana_json_with_the_slo_panels():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for wanted in ("request rate", "error rate", "p50", "p99", "imbalance", "cost"):
        assert wanted in titles, wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"].strip() and t["refId"] for t in panel["targets"])
        assert panel["datasource"]["type"] == "prometheus"


def test_the_dashboard_queries_only_metrics_the_serve_graph_defines():
    referenced = dashboard_metrics(DASHBOARD)
    assert {"ray_rayrag_requests_total", "ray_rayrag_stage_latency_ms_bucket"} <= referenced
    missing = referenced - defined_metrics()
    assert not missing, (
        f"dashboard queries series nothing in rayrag/serve exports: {sorted(missing)}"
    )


def test_exposed_metrics_reads_the_prometheus_text_format():
    text = "\n".join(
        [
            "# HELP ray_rayrag_requests_total Requests by route and HTTP status.",
            "# TYPE ray_rayrag_requests_total counter",
            'ray_rayrag_requests_total{route="/v1/ask",status="200"} 3.0',
            'ray_rayrag_stage_latency_ms_bucket{stage="guard",le="5.0"} 1.0',
            "ray_rayrag_expert_shard_imbalance 0.25",
        ]
    )
    assert exposed_metrics(text) == {
        "ray_rayrag_requests_total",
        "ray_rayrag_stage_latency_ms_bucket",
        "ray_rayrag_expert_shard_imbalance",
    }


def _report() -> ReadinessReport:
    return ReadinessReport(
        [
            Check(name, area, i % 3 != 0, f"rid=r{i} status=200 | n={i}")
            for i, (name, area) in enumerate(CHECKS)
        ],
        target="local",
    )


def test_the_report_has_sixteen_checks_four_per_area_and_reads_as_markdown():
    assert len(CHECKS) == 16 and len({n for n, _ in CHECKS}) == 16
    assert {area: sum(a == area for _, a in CHECKS) for _, area in CHECKS} == dict.fromkeys(
        ("privacy", "quality", "safety", "operations"), 4
    )
    report = _report()
    body = report.to_json()
    assert set(body) == {"passed", "total", "checks"} and body["total"] == 16
    assert (
        body["passed"] == report.passed == sum(c["passed"] for c in body["checks"])
        and not report.ok
    )
    assert all(set(c) == {"name", "area", "passed", "evidence"} for c in body["checks"])
    markdown = report.markdown()
    assert markdown.startswith(f"# rayrag readiness: {report.passed}/16")
    assert [line for line in markdown.splitlines() if line.startswith("## ")] == [
        "## privacy",
        "## quality",
        "## safety",
        "## operations",
    ]
    assert markdown.count("| PASS |") + markdown.count("| FAIL |") == 16
    assert "status=200 \\| n=1" in markdown  # a pipe in evidence does not break the table


class _Leaky(ReadinessProbe):
    def check_tracing(self) -> str:
        raise ValueError("the question was: what is Jane Roe's SSN 512-34-5678?")


def test_a_failing_probe_reports_a_type_name_never_the_exception_text(tmp_path):
    from rayrag.config import resolve_config

    config = resolve_config("demo", ["tracking.enabled=false"])
    probe = _Leaky("http://127.0.0.1:9", "rr-admin", "rr-user", config=config, timeout_s=2)
    report = probe.run(only=["tracing", "ab_plan", "red_team", "slo_metrics"])
    checks = {c.name: c for c in report.checks}
    assert checks["tracing"].evidence == "probe error ValueError" and not checks["tracing"].passed
    assert not checks["ab_plan"].passed and checks["ab_plan"].evidence == "probe error ConnectError"
    # nothing passes by default
    assert not checks["red_team"].passed and not checks["slo_metrics"].passed
    assert "512-34-5678" not in json.dumps(report.to_json()) and "rr-admin" not in report.markdown()


def _rayrag(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rayrag.cli", "readiness", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0] and "Traceback" not in proc.stderr


def test_cli_errors_are_one_line(tmp_path):
    _one_line_error(_rayrag(cwd=tmp_path), "pass --url URL")
    _one_line_error(
        _rayrag(
            "--local", "--bundle", str(tmp_path / "nope"), "--model", str(tmp_path), cwd=tmp_path
        ),
        "no index bundle at",
    )
    proc = _rayrag(
        "--url",
        "http://127.0.0.1:9",
        cwd=tmp_path,
        env={"RAYRAG_READINESS_ADMIN_KEY": "rr-secret-admin", "RAYRAG_READINESS_USER_KEY": ""},
    )
    _one_line_error(proc, "RAYRAG_READINESS_USER_KEY")
    assert "rr-secret-admin" not in proc.stderr + proc.stdout
    _one_line_error(
        _rayrag(
            "--local",
            "--canary-question",
            "What is in EMP-1?",
            "--canary-phrase",
            "EMP-1",
            cwd=tmp_path,
        ),
        "--canary-phrase",
    )


# ---------------------------------------------------------------- the whole thing, on a tiny stack


@pytest.fixture(scope="module")
def tiny_stack(ray_local, demo_corpus, tmp_path_factory):
    """A demo slice plus the canary `hr-000`, a tiny model as champion (v1) and challenger (v2),
    and the champion's baseline evaluation on the slice's questions (the gate's reference)."""
    import yaml

    from rayrag.config import resolve_config
    from rayrag.evaluation.answer_eval import evaluate_answers
    from rayrag.pipelines.ingest import ingest
    from rayrag.pipelines.train import train
    from rayrag.tracking.model_registry import ModelRegistry
    from rayrag.tracking.tracker import Tracker
    from rayrag.types import Principal
    from tests.tiny import TINY_MODEL, demo_slice

    root = tmp_path_factory.mktemp("readiness")
    corpus = demo_slice(demo_corpus, root, n_questions=3, n_restricted=2)
    canary = Canary()
    with (root / "corpus.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(corpus.docs[canary.doc_id]) + "\n")
    qa = root / "qa.jsonl"
    qa.write_text("".join(json.dumps(q) + "\n" for q in corpus.questions), encoding="utf-8")
    config = resolve_config(
        "demo",
        [
            f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            f"tracking.model_cache={root / 'cache'}",
            "evaluation.bootstrap_samples=10",
            "serve.stage_num_cpus=0.1",
            "serve.generator_num_cpus=0.3",
            "serve.max_question_chars=500",
            *TINY_MODEL,
        ],
    )
    config_path = root / "config.yaml"
    config_path.write_text(config.to_yaml(), encoding="utf-8")
    ingest(root / "corpus.jsonl", root / "bundle", config, progress=lambda *_: None)
    train(config, root / "model", bundle=root / "bundle", progress=False)
    tracker = Tracker(config.tracking, artifact_root=root / "artifacts")
    registry = ModelRegistry(tracker)
    if registry.version_for_alias("champion") is None:
        registry.register(root / "model")
    shutil.copytree(root / "model", root / "model-b")
    registry.set_challenger(registry.register(root / "model-b").version)
    everyone = Principal("admin", frozenset({"public", "hr", "finance", "legal"}))
    evaluate_answers(
        qa,
        config,
        bundle=root / "bundle",
        model=root / "model",
        principal=everyone,
        canaries=[],
        tracker=tracker,
    )
    assert yaml.safe_load(config_path.read_text())["tracking"]["enabled"] is True
    return root, config_path, qa, corpus, canary


@pytest.mark.slow
@pytest.mark.integration
def test_readiness_local_runs_sixteen_content_free_probes(tiny_stack, capsys):
    """`rayrag readiness --local --json` on the tiny stack: 16 checks, evidence with no question,
    canary or document text, and a markdown report in the readiness experiment."""
    import typer

    from rayrag.cli.readiness import readiness_command
    from rayrag.tracking.tracker import Tracker

    root, config_path, qa, corpus, canary = tiny_stack
    code = 0
    try:
        readiness_command(
            local=True,
            bundle=root / "bundle",
            model=root / "model",
            config=str(config_path),
            overrides=None,
            qa=qa,
            qa_limit=0,
            metrics_url=None,
            canary_doc=None,
            canary_question=None,
            canary_phrase=None,
            as_json=True,
            url=None,
        )
    except typer.Exit as stop:
        code = stop.exit_code
    out = capsys.readouterr()
    result = json.loads(out.out.strip().splitlines()[-1])
    assert result["total"] == 16 and len(result["checks"]) == 16
    assert code == (0 if result["passed"] == 16 else 1)
    checks = {c["name"]: c for c in result["checks"]}
    print({name: (c["passed"], c["evidence"]) for name, c in checks.items()})  # shown with -s
    failed = {name: c["evidence"] for name, c in checks.items() if not c["passed"]}
    assert not failed and code == 0  # every probe passes on a healthy stack
    # Retention deleted a record planted past its TTL and kept a fresh one; PII planted on the
    # answer path came back redacted from the deployed Guard.
    assert (
        "planted_expired_gone=True planted_fresh_kept=True"
        in checks["retention_configured"]["evidence"]
    )
    assert "planted_left=0" in checks["output_moderation"]["evidence"]
    assert "pii_reason=True" in checks["output_moderation"]["evidence"]
    text = out.out + out.err
    forbidden = [
        canary.phrase,
        canary.question,
        *(q["question"] for q in corpus.questions),
        *(corpus.docs[d]["text"][:40] for d in corpus.kept),
        corpus.docs[canary.doc_id]["title"],
    ]
    assert not [f for f in forbidden if f in text]
    assert not re.search(r"\b\d{3}-\d{2}-\d{4}\b", text)  # no canary SSN
    assert not re.search(r"rr-[A-Za-z0-9_-]{40,}", text)  # no API key
    runs = Tracker(json_config(config_path).tracking).find_runs("readiness")
    assert runs and runs[0]["metrics.total"] == 16 and runs[0]["metrics.passed"] == result["passed"]


def json_config(path: Path):
    from rayrag.config import resolve_config

    return resolve_config(str(path), [])


def test_a_saved_report_is_the_newest_one_the_admin_route_reads(tmp_path):
    from rayrag.cli.readiness import save_report
    from rayrag.serve.admin import newest_report

    folder = tmp_path / "readiness"
    assert newest_report(folder) is None
    (folder).mkdir()
    (folder / "readiness-20000101T000000Z.json").write_text('{"passed": 1, "total": 16}')
    report = _report()
    report.run_id = "abc123"
    path = save_report(report, folder)
    (folder / "readiness-99991231T235959Z.json").write_text('{"passed": 16, "tot')  # torn
    newest = newest_report(folder)
    assert newest == {
        **report.to_json(),
        "ts": newest["ts"],
        "target": "local",
        "run_id": "abc123",
        "file": path.name,
    }
    assert not list(folder.glob(".*.tmp"))  # written atomically
