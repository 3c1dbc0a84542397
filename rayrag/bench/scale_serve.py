"""Scale curve `serve`: HTTP throughput of the serve graph against its number of replicas.

One curve for `rayrag bench scale` (format in `rayrag.bench.scale`): x = replicas of every
stage (`serve.num_replicas`: `build_app` gives each of the six deployments — Ingress,
Redactor, Retriever, KGEnricher, Generator, Guard — that many replicas), y = answered
requests per wall second, series `requests_per_s`. The machinery is `rayrag.bench.serve`'s:
`build_app` on a local Ray, C concurrent clients posting `/v1/ask` over loopback with
`Cache-Control: no-cache` (the graph is timed, not the answer cache), each waiting for its
answer before sending the next.

The CPU reservations (`serve.stage_num_cpus`, `serve.generator_num_cpus`) are scaled down
when `replicas` copies of the six stages would not fit Ray's CPUs, so 2 replicas schedule on
2 cores; a reservation is only a scheduling label (each replica still gets one torch thread),
so on 2 cores a second replica can only help by overlapping one stage's wait with another's
work. The number is measured, not assumed: the cores are in `meta`.

Defaults to the bundle, model and questions `make demo` leaves in .rayrag/demo/.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rayrag.bench.serve import (
    BENCH_KEY,
    DEMO_DIR,
    drive,
    percentile,
    questions,
    start_serve,
    stop_serve,
)

FULL = {"requests": 32, "rounds": 2, "clients": 8}
QUICK = {"requests": 12, "rounds": 1, "clients": 4}


def _log(message: str) -> None:
    print(f"[bench scale serve] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fitted_cpus(
    stage_cpus: float, generator_cpus: float, replicas: int, cpus: float
) -> tuple[float, float]:
    """(stage, generator) CPU reservations, scaled down so `replicas` x (5 stages + Generator)
    fit `cpus`; the defaults when they already fit. Rounded down so the sum never exceeds."""
    needed = replicas * (5 * stage_cpus + generator_cpus)
    if needed <= cpus:
        return stage_cpus, generator_cpus
    scale = cpus / needed
    return (
        math.floor(stage_cpus * scale * 1000) / 1000,
        math.floor(generator_cpus * scale * 1000) / 1000,
    )


def _check_inputs(bundle: Path, model: Path, demo_dir: Path) -> None:
    from rayrag.errors import ConfigError

    if not all(
        p.is_file()
        for p in (bundle / "manifest.json", model / "config.json", demo_dir / "data" / "qa.jsonl")
    ):
        raise ConfigError(
            f"bench scale serve needs a bundle, a model and {demo_dir}/data/qa.jsonl "
            f"(bundle={bundle}, model={model}): run `make demo` or pass bundle/model"
        )


def _measure(
    config: Any,
    replicas: int,
    cpus: float,
    args: dict[str, str],
    tmp: Path,
    batch: list[str],
    plan: dict[str, int],
) -> dict[str, Any]:
    """One replica count: deploy, warm every replica, drive the batch `rounds` times, tear
    Serve down. Throughput = answered requests / wall seconds over all rounds."""
    stage_cpus, generator_cpus = fitted_cpus(
        config.serve.stage_num_cpus, config.serve.generator_num_cpus, replicas, cpus
    )
    config_path = tmp / f"serve-{replicas}.yaml"
    config_path.write_text(
        config.with_overrides(
            [
                f"serve.num_replicas={replicas}",
                f"serve.stage_num_cpus={stage_cpus}",
                f"serve.generator_num_cpus={generator_cpus}",
            ]
        ).to_yaml()
    )
    started = time.perf_counter()
    url = start_serve(config_path, Path(args["bundle"]), Path(args["model"]), _free_port())
    try:
        deploy_seconds = time.perf_counter() - started
        # Warm: enough concurrent requests that every replica of every stage answers once.
        clients = plan["clients"]
        drive(url, [batch[i % len(batch)] for i in range(clients * replicas)], clients * replicas)
        latencies, errors, round_seconds = [], 0, []
        for _ in range(plan["rounds"]):
            t = time.perf_counter()
            round_latencies, round_errors = drive(url, batch, clients)
            round_seconds.append(time.perf_counter() - t)
            latencies += round_latencies
            errors += round_errors
    finally:
        stop_serve(shutdown_ray=False)
    seconds = sum(round_seconds)
    rps = (len(latencies) - errors) / seconds
    _log(
        f"{replicas} replica(s): {rps:.2f} req/s, p50 "
        f"{percentile(latencies, 50):.0f} ms, errors {errors}"
    )
    return {
        "replicas": replicas,
        "requests_per_s": round(rps, 3),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "errors": errors,
        "requests": len(latencies),
        "round_requests_per_s": [round(len(batch) / s, 3) for s in round_seconds],
        "seconds": round(seconds, 2),
        "deploy_s": round(deploy_seconds, 1),
        "stage_num_cpus": stage_cpus,
        "generator_num_cpus": generator_cpus,
    }


def curve(
    quick: bool = False,
    replicas: tuple[int, ...] = (1, 2),
    bundle: str | Path | None = None,
    model: str | Path | None = None,
    demo_dir: str | Path | None = None,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Throughput at each replica count. `demo_dir` holds data/qa.jsonl (the questions asked);
    `overrides` are extra `section.key=value` settings on the demo config (a tiny test stack's)."""
    demo = Path(demo_dir or DEMO_DIR)
    bundle_path, model_path = Path(bundle or demo / "bundle"), Path(model or demo / "model")
    _check_inputs(bundle_path, model_path, demo)  # before the heavy imports: a typo fails fast
    import ray
    import yaml

    from rayrag.config import resolve_config
    from rayrag.errors import ConfigError
    from rayrag.serve.auth import key_entry
    from rayrag.serve.demo_env import ensure_demo_secrets

    replicas = tuple(sorted(replicas))
    if not replicas or replicas[0] < 1:
        raise ConfigError(f"replicas must be counts >= 1, got {replicas}")
    plan = QUICK if quick else FULL
    config = resolve_config("demo", ["tracking.enabled=false", *overrides])
    ensure_demo_secrets(config)  # the demo bundle's pseudonyms were made with the demo key
    batch = questions(demo, plan["requests"])
    load_start = os.getloadavg()[0]  # other work on the machine, for reading the figures
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(
            num_cpus=max(2, os.cpu_count() or 2),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    cpus = float(ray.cluster_resources().get("CPU", 0))
    points = []
    try:
        with tempfile.TemporaryDirectory(prefix="rayrag-scale-serve-") as tmp_name:
            tmp = Path(tmp_name)
            # A keys file, not $RAYRAG_API_KEYS: replicas of a Ray started before this call
            # never see the driver's later environment.
            keys_file = tmp / "api_keys.yaml"
            keys_file.write_text(
                yaml.safe_dump([key_entry(BENCH_KEY, "bench", ["public"], "bench", "user")])
            )
            config = config.with_overrides(
                [
                    f"serve.keys_file={keys_file}",
                    f"serve.event_log={tmp / 'events.jsonl'}",
                    f"serve.escalation_queue={tmp / 'escalations.jsonl'}",
                ]
            )
            args = {"bundle": str(bundle_path), "model": str(model_path)}
            for count in replicas:
                points.append(_measure(config, count, cpus, args, tmp, batch, plan))
    finally:
        if started_ray:
            ray.shutdown()
    by_count = {p["replicas"]: p for p in points}
    first, last = by_count[replicas[0]], by_count[replicas[-1]]
    per_unit = {
        "serve_requests_per_s_per_replica_set": round(last["requests_per_s"] / last["replicas"], 3),
        "serve_s_per_request": round(1 / max(first["requests_per_s"], 1e-9), 4),
    }
    return {
        "name": "serve",
        "x": "replicas",
        "y": "requests_per_s",
        "series": {"requests_per_s": [[p["replicas"], p["requests_per_s"]] for p in points]},
        "per_unit": per_unit,
        "meta": {
            "points": points,
            "clients": plan["clients"],
            "requests_per_round": plan["requests"],
            "rounds": plan["rounds"],
            "load_avg_1m_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            "ray_cpus": cpus,
            "machine_cores": os.cpu_count(),
            "bundle": str(bundle_path),
            "model": str(model_path),
            "quick": quick,
            "replicated": "every stage (serve.num_replicas): Ingress, Redactor, Retriever, "
            "KGEnricher, Generator, Guard",
            "p50_ms": {str(p["replicas"]): p["p50_ms"] for p in points},
            "p99_ms": {str(p["replicas"]): p["p99_ms"] for p in points},
            "errors": sum(p["errors"] for p in points),
            "note": (
                "cache bypassed (Cache-Control: no-cache); CPU reservations scaled to fit ray_cpus"
            ),
        },
    }


if __name__ == "__main__":
    import json

    print(json.dumps(curve(quick="--quick" in sys.argv)))
