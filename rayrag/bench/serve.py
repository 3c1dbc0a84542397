"""Bench `serve`: the Ray Serve graph over HTTP vs the same components in one process.

`rayrag bench serve [--quick] --json [--bundle B --model CKPT]` (in Python
`run(quick, bundle, model, demo_dir, overrides)`). Both competitors answer the same demo
questions (hybrid retrieval, greedy decoding) with the same code:

    inprocess  one process, one question at a time: Redactor -> HybridRetriever -> Reader
               -> Guard, exactly the stages' calls without Serve (no HTTP, no handles)
    serve      `build_app` on a local Ray, C concurrent clients (default 8) posting
               `/v1/ask` over loopback HTTP, each waiting for its answer before the next

Each runs in rounds alternating the order (in-process, serve, serve, in-process, ...), so
the machine's noise falls on both; throughput is answered requests per wall second of a
round, latencies are per request. `ratios.serve_vs_inprocess_throughput` (goal >= 0.7) says
what the service costs over calling the components: HTTP, JSON, six processes and their
messages, against what it gains from pipelining the stages and batching decodes across
concurrent requests. `p99_over_p50` (goal <= 3) is the tail under concurrency; `errors`
counts non-200 answers (goal 0). Needs a bundle, a model and questions: `make demo` leaves
them in .rayrag/demo/ (bundle/, model/, data/qa.jsonl), the defaults; `bundle` and `model`
point elsewhere, `demo_dir` is where data/qa.jsonl is read, and `overrides` are extra
`section.key=value` settings on the demo config (a tiny test stack's). The bench reuses a Ray
that is already running (and leaves it running), else starts one and shuts it down.

A third competitor, `serve_traced`, is the same graph as a second application on the same
Serve with MLflow tracing on (`tracking.trace_sample_rate` 1, a SQLite store in a temporary
folder), driven in the same alternating rounds: `tracing.overhead_ms_p50` / `_mean` is what
a trace adds to a request's latency, `ratios.traced_vs_untraced_throughput` what it costs in
throughput, and `tracing.traces_written` checks that every traced request left its trace.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

DEMO_DIR = Path(".rayrag/demo")
FULL = {"requests": 64, "rounds": 2, "clients": 8}
QUICK = {"requests": 16, "rounds": 1, "clients": 4}
BENCH_KEY = "rr-bench-key-not-for-production"
COMPETITORS = ("inprocess", "serve", "serve_traced")


def _log(message: str) -> None:
    print(f"[bench serve] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def questions(demo_dir: Path, n: int) -> list[str]:
    path = demo_dir / "data" / "qa.jsonl"
    rows = [
        json.loads(line)["question"]
        for line in path.read_text(encoding="utf-8").splitlines()
        if line
    ]
    return [rows[i % len(rows)] for i in range(n)]


class InProcess:
    """The stages' plain classes in this process, called the way the Ingress calls them."""

    def __init__(self, config: Any, bundle: Path, model: Path) -> None:
        from rayrag.answering.guard import Guard
        from rayrag.generator.reader import Reader
        from rayrag.governance.privacy.redaction import QueryRedactor
        from rayrag.index.bundle import IndexBundle
        from rayrag.retrieval.hybrid import HybridRetriever
        from rayrag.types import Principal

        self.redactor = QueryRedactor(IndexBundle.load(bundle), config.governance.redaction)
        self.retriever = HybridRetriever(bundle, config)
        self.reader = Reader(model, config)
        self.guard = Guard(config, bundle_path=bundle)
        self.principal = Principal("bench", frozenset({"public"}))
        for part in (self.redactor, self.reader, self.guard):
            part.warm_up()
        self.retriever.warm_up(graph=True)

    def ask(self, question: str) -> None:
        query = self.redactor.redact(question)
        evidence = self.retriever.retrieve(query, self.principal, mode="hybrid")
        self.guard.verify(
            query.text, self.reader.answer(query.text, evidence), evidence, self.principal
        )


def drive(url: str, batch: list[str], clients: int) -> tuple[list[float], int]:
    """Post every question with `clients` concurrent clients; (latencies ms, errors)."""
    import httpx

    def one(question: str) -> tuple[float, bool]:
        started = time.perf_counter()
        try:
            response = client.post(
                f"{url}/v1/ask",
                json={"question": question, "mode": "hybrid"},
                headers={
                    "Authorization": f"Bearer {BENCH_KEY}",
                    "Cache-Control": "no-cache",
                },  # time the graph, not the cache
                timeout=120,
            )
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        return (time.perf_counter() - started) * 1000, ok

    with httpx.Client() as client, ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, batch))
    return [ms for ms, _ in results], sum(not ok for _, ok in results)


def start_serve(
    config_path: Path,
    bundle: Path,
    model: Path,
    port: int,
    name: str = "bench",
    route_prefix: str = "/",
) -> str:
    """The graph of `config_path` (whose keys file must hold BENCH_KEY) on this process's Ray,
    started if none, at 127.0.0.1:`port` under `route_prefix`; the URL once /readyz answers."""
    import httpx
    import ray
    from ray import serve

    from rayrag.serve.app import build_app

    if not ray.is_initialized():  # a caller's Ray (bench scale) is reused as it is
        ray.init(
            # two graphs (untraced, traced), driven one at a time: each fits the machine alone
            num_cpus=2 * max(2, os.cpu_count() or 2),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app({"config": str(config_path), "bundle": str(bundle), "model": str(model)}),
        name=name,
        route_prefix=route_prefix,
    )
    url = f"http://127.0.0.1:{port}{route_prefix.rstrip('/')}"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("the serve graph did not become ready within 300 s")


def traces_written(config: Any) -> int:
    """The traces in the traced graph's store (`<prefix>-serve`)."""
    from rayrag.tracking.traces import count_traces
    from rayrag.tracking.tracker import Tracker

    client = Tracker(config.tracking).client()
    experiment = client.get_experiment_by_name(f"{config.tracking.experiment_prefix}-serve")
    if experiment is None:
        return 0
    return count_traces(client, experiment.experiment_id)


def stop_serve(shutdown_ray: bool = True) -> None:
    import ray
    from ray import serve

    serve.shutdown()
    if shutdown_ray:
        ray.shutdown()


def bench(
    plan: dict[str, Any],
    bundle: Path,
    model: Path,
    config_name: str = "demo",
    demo_dir: Path = DEMO_DIR,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    import socket

    import ray
    import yaml

    from rayrag.config import resolve_config
    from rayrag.serve.auth import key_entry
    from rayrag.serve.demo_env import ensure_demo_secrets

    config = resolve_config(config_name, ["tracking.enabled=false", *overrides])
    ensure_demo_secrets(config)  # the demo bundle's pseudonyms were made with the demo key
    batch = questions(demo_dir, plan["requests"])  # the demo's questions, whatever the bundle
    inprocess = InProcess(config, bundle, model)
    inprocess.ask(batch[0])  # warm
    started_ray = not ray.is_initialized()
    with tempfile.TemporaryDirectory() as tmp:
        # A keys file, not $RAYRAG_API_KEYS: replicas of a Ray started before this call never
        # see the driver's later environment.
        keys_file = Path(tmp) / "api_keys.yaml"
        keys_file.write_text(
            yaml.safe_dump([key_entry(BENCH_KEY, "bench", ["public"], "bench", "user")])
        )
        config_path = Path(tmp) / "serve.yaml"
        served = config.with_overrides(
            [
                f"serve.keys_file={keys_file}",
                f"serve.event_log={Path(tmp) / 'events.jsonl'}",
                f"serve.escalation_queue={Path(tmp) / 'escalations.jsonl'}",
            ]
        )
        config_path.write_text(served.to_yaml())
        traced = served.with_overrides(  # the same graph, tracing every request
            [
                "tracking.enabled=true",
                f"tracking.tracking_uri=sqlite:///{Path(tmp) / 'mlflow.db'}",
                "tracking.trace_sample_rate=1",
                f"tracking.model_cache={Path(tmp) / 'models'}",
            ]
        )
        traced_path = Path(tmp) / "serve-traced.yaml"
        traced_path.write_text(traced.to_yaml())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            urls = {
                "serve": start_serve(config_path, bundle, model, port),
                "serve_traced": start_serve(
                    traced_path, bundle, model, port, "bench-traced", "/traced"
                ),
            }
            for url in urls.values():
                drive(url, batch[: plan["clients"]], plan["clients"])  # warm every stage
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in COMPETITORS}
            for r in range(plan["rounds"]):
                for name in COMPETITORS if r % 2 == 0 else COMPETITORS[::-1]:
                    started = time.perf_counter()
                    if name == "inprocess":
                        latencies = []
                        for question in batch:
                            t = time.perf_counter()
                            inprocess.ask(question)
                            latencies.append((time.perf_counter() - t) * 1000)
                        errors = 0
                    else:
                        latencies, errors = drive(urls[name], batch, plan["clients"])
                    seconds = time.perf_counter() - started
                    runs[name].append(
                        {"seconds": seconds, "latencies": latencies, "errors": errors}
                    )
                    _log(
                        f"round {r + 1} {name}: {len(batch) / seconds:.2f} req/s, "
                        f"p50 {percentile(latencies, 50):.0f} ms, errors {errors}"
                    )
        finally:
            stop_serve(shutdown_ray=started_ray)  # a replica writes its last traces as it stops
        written = traces_written(traced)
    report = {}
    for name, rounds in runs.items():
        latencies = [ms for run in rounds for ms in run["latencies"]]
        report[name] = {
            "throughput_rps": round(
                len(batch) * len(rounds) / sum(run["seconds"] for run in rounds), 3
            ),
            "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
            "mean_ms": round(sum(latencies) / max(len(latencies), 1), 1),
            "errors": sum(run["errors"] for run in rounds),
            "requests": len(latencies),
        }
    serve_report, traced_report = report["serve"], report["serve_traced"]
    served_traced = traced_report["requests"] + plan["clients"]  # with the warm-up requests
    return {
        "plan": plan,
        "config": config_name,
        "model": str(model),
        "bundle": str(bundle),
        "questions": str(demo_dir / "data" / "qa.jsonl"),
        "overrides": list(overrides),
        "competitors": report,
        "throughput_rps": serve_report["throughput_rps"],
        "p50_ms": serve_report["p50_ms"],
        "p99_ms": serve_report["p99_ms"],
        "errors": serve_report["errors"],
        "tracing": {
            "overhead_ms_p50": round(traced_report["p50_ms"] - serve_report["p50_ms"], 1),
            "overhead_ms_mean": round(traced_report["mean_ms"] - serve_report["mean_ms"], 1),
            "traces_written": written,
            "requests_traced": served_traced,
        },
        "ratios": {
            "serve_vs_inprocess_throughput": round(
                serve_report["throughput_rps"] / report["inprocess"]["throughput_rps"], 3
            ),
            "p99_over_p50": round(serve_report["p99_ms"] / max(serve_report["p50_ms"], 1e-9), 3),
            "traced_vs_untraced_throughput": round(
                traced_report["throughput_rps"] / serve_report["throughput_rps"], 3
            ),
        },
    }


def run(
    quick: bool = False,
    bundle: str | Path | None = None,
    model: str | Path | None = None,
    demo_dir: str | Path | None = None,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The bench record; bundle, model and the questions' folder default to `make demo`'s."""
    from rayrag.errors import ConfigError

    demo = Path(demo_dir or DEMO_DIR)
    bundle_path, model_path = Path(bundle or demo / "bundle"), Path(model or demo / "model")
    missing = [
        str(p)
        for p in (
            bundle_path / "manifest.json",
            model_path / "config.json",
            demo / "data" / "qa.jsonl",
        )
        if not p.is_file()
    ]
    if missing:
        raise ConfigError(
            f"bench serve needs a bundle, a model and questions; missing {', '.join(missing)}: "
            "run `make demo` first, or pass --bundle and --model"
        )
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    result = bench(plan, bundle_path, model_path, demo_dir=demo, overrides=tuple(overrides))
    return {
        "bench": "serve",
        "quick": quick,
        **result,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
