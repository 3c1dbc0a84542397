"""The admin routes (`/v1/admin/*`, keys with role `admin` only): erasure, retention,
request events, escalations (and their resolution), the model registry's aliases, the last
readiness report and what the deployment enforces.

Each action is audited as a content-free `admin` event (who as a fingerprint, what as ids
and counts). Slow work (erasure, purge, MLflow) runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as Path_

from rayrag.errors import ConfigError, DataError
from rayrag.event_log import fingerprint
from rayrag.serve.api import RequestId, current_ingress
from rayrag.serve.auth import ApiPrincipal
from rayrag.serve.errors import AdminOnly, HTTPFailure
from rayrag.serve.schemas import (
    AliasRequest,
    ForgetRequest,
    GuardProbeRequest,
    PurgeRequest,
    ResolveRequest,
)

router = APIRouter(prefix="/v1/admin", tags=["admin"])
Ingress = Annotated[Any, Depends(current_ingress)]
MAX_RECORDS = 1000  # escalation records returned at most (the newest)


def admin_caller(request: Request, ingress: Ingress) -> ApiPrincipal:
    """The caller, when its key has role admin (401 without a key, 403 for a user key)."""
    caller = ingress.keys.authenticate(request.headers.get("authorization"))
    if not caller.is_admin:
        raise AdminOnly("this key's role may not use /v1/admin routes (admin only)")
    return caller


Admin = Annotated[ApiPrincipal, Depends(admin_caller)]


def audit(ingress: Any, action: str, caller: ApiPrincipal, rid: str, **fields: Any) -> None:
    ingress.events.info(
        "admin",
        extra={
            "fields": {
                "request_id": rid,
                "action": action,
                "user": fingerprint(caller.principal.name),
                "key_id": caller.key_id,
                **fields,
            }
        },
    )


def events_for(path: Path, rid: str) -> list[dict[str, Any]]:
    """The events of one request id in the event log and its rotated files (oldest first)."""
    rotated = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    files = sorted(rotated, key=lambda p: int(p.suffix[1:]), reverse=True) + [
        path
    ]  # .5 is the oldest
    found = []
    for file in files:
        if not file.is_file():
            continue
        with file.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if rid in line:
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if event.get("request_id") == rid:
                        found.append(event)
    return found


@router.post("/forget")
async def forget(
    body: ForgetRequest, caller: Admin, ingress: Ingress, rid: RequestId
) -> dict[str, Any]:
    """Erase documents from the served bundle: chunks, vectors, graph, caches; audited."""
    if ingress.bundle is None:
        raise HTTPFailure(
            409, "conflict", "this graph was built without a bundle path; use `rayrag forget`"
        )
    from rayrag.governance.privacy.erasure import forget as erase
    from rayrag.index.bundle import IndexBundle

    known = set(IndexBundle.load(ingress.bundle).documents().column("doc_id").to_pylist())
    missing = sorted(set(body.doc_ids) - known)
    if missing:
        raise HTTPFailure(
            404,
            "not_found",
            f"{len(missing)} of {len(set(body.doc_ids))} document id(s) "
            "are not in the served bundle",
        )
    report = await asyncio.to_thread(
        erase,
        ingress.bundle,
        body.doc_ids,
        ingress.config,
        actor=fingerprint(caller.principal.name),
    )
    ingress.check_bundle()  # clears the answer cache now; the stages reload on their next call
    ingress.cache.clear()
    result = {**report.to_json(), "request_id": rid}
    audit(
        ingress,
        "forget",
        caller,
        rid,
        docs=len(set(body.doc_ids)),
        bundle_id=result.get("bundle_id", ""),
    )
    return result


@router.post("/purge")
async def purge(
    body: PurgeRequest, caller: Admin, ingress: Ingress, rid: RequestId
) -> dict[str, Any]:
    """Delete records past their retention (or older than `older_than_days`)."""
    report = await asyncio.to_thread(run_purge, ingress, body.older_than_days, body.dry_run)
    audit(ingress, "purge", caller, rid, dry_run=body.dry_run)
    return {**report, "request_id": rid}


@router.get("/events")
async def events(
    caller: Admin,
    ingress: Ingress,
    rid: RequestId,
    request_id_: str = Query(..., alias="request_id", min_length=1, max_length=64),
) -> dict[str, Any]:
    """The content-free request events of one request id (tracing, audits)."""
    found = await asyncio.to_thread(events_for, Path(ingress.config.serve.event_log), request_id_)
    return {"events": found, "request_id": rid}


@router.get("/escalations")
async def escalations(
    caller: Admin,
    ingress: Ingress,
    rid: RequestId,
    request_id_: str | None = Query(None, alias="request_id", min_length=1, max_length=64),
) -> dict[str, Any]:
    """The escalation queue (ids, reason codes, scores, `resolved`), or one request's records."""
    records = await asyncio.to_thread(ingress.escalations.escalations)
    if request_id_ is not None:
        records = [r for r in records if r.get("request_id") == request_id_]
    return {"records": records[-MAX_RECORDS:], "request_id": rid}


@router.post("/escalations/{escalated_id}/resolve")
async def resolve_escalation(
    escalated_id: Annotated[str, Path_(min_length=1, max_length=64)],
    caller: Admin,
    ingress: Ingress,
    rid: RequestId,
    body: ResolveRequest | None = None,
) -> dict[str, Any]:
    """Close an escalated request (appended to the queue: who as a hash, a code), audited."""
    resolution = body.resolution if body is not None else "resolved"
    who = fingerprint(caller.principal.name)
    try:
        record = await asyncio.to_thread(ingress.escalations.resolve, escalated_id, who, resolution)
    except (KeyError, DataError):
        raise HTTPFailure(404, "not_found", "no escalation has this request id") from None
    audit(ingress, "resolve", caller, rid, escalated=escalated_id, resolution=resolution)
    return {**record, "request_id": rid, "escalated_request_id": escalated_id}


def newest_report(folder: Path) -> dict[str, Any] | None:
    """The newest `readiness-*.json` in `folder` (by name: a UTC stamp), parsed; None if none."""
    reports = sorted(folder.glob("readiness-*.json")) if folder.is_dir() else []
    for report in reversed(reports):
        try:
            return {**json.loads(report.read_text(encoding="utf-8")), "file": report.name}
        except (OSError, json.JSONDecodeError):
            continue  # a partial or foreign file: the one before it
    return None


@router.get("/readiness")
async def readiness(caller: Admin, ingress: Ingress, rid: RequestId) -> dict[str, Any]:
    """The last `rayrag readiness` report (serve.readiness_reports): checks and evidence."""
    report = await asyncio.to_thread(newest_report, Path(ingress.config.serve.readiness_reports))
    if report is None:
        raise HTTPFailure(404, "not_found", "no readiness report yet: run `rayrag readiness`")
    return {"report": report, "request_id": rid}


def _registry(ingress: Any) -> Any:
    if not ingress.config.tracking.enabled:
        raise HTTPFailure(
            409, "conflict", "the model registry is off in this deployment (tracking.enabled)"
        )
    from rayrag.tracking.model_registry import ModelRegistry
    from rayrag.tracking.tracker import Tracker

    return ModelRegistry(Tracker(ingress.config.tracking))


@router.get("/registry")
async def registry(caller: Admin, ingress: Ingress, rid: RequestId) -> dict[str, Any]:
    """The served model name's versions and aliases."""

    def read() -> dict[str, Any]:
        models = _registry(ingress)
        versions = models.versions()
        aliases = {alias: v.version for v in versions for alias in v.aliases}
        return {"model": models.name, "aliases": aliases, "versions": [v.version for v in versions]}

    return {**await asyncio.to_thread(read), "request_id": rid}


@router.post("/registry/alias")
async def alias(
    body: AliasRequest, caller: Admin, ingress: Ingress, rid: RequestId
) -> dict[str, Any]:
    """Move `champion` or `challenger` to a version (a promotion or a rollback), audited."""

    def move() -> dict[str, Any]:
        models = _registry(ingress)
        try:
            models.get(body.version)
        except ConfigError:
            raise HTTPFailure(
                404, "not_found", f"model {models.name} has no version {body.version}"
            ) from None
        before = models.version_for_alias(body.alias)
        try:
            if body.alias == "champion":
                models.promote(
                    body.version, who=fingerprint(caller.principal.name), why=f"admin api {rid}"
                )
            else:
                models.set_challenger(body.version)
        except (
            ConfigError
        ) as exc:  # e.g. "version N is the champion; a challenger must be another version"
            raise HTTPFailure(409, "conflict", str(exc)) from None
        return {
            "alias": body.alias,
            "version": body.version,
            "previous": before.version if before is not None else None,
        }

    result = await asyncio.to_thread(move)
    audit(
        ingress,
        "alias",
        caller,
        rid,
        alias=body.alias,
        version=body.version,
        previous=result["previous"],
    )
    return {**result, "request_id": rid}


@router.post("/guard-probe")
async def guard_probe(
    body: GuardProbeRequest, caller: Admin, ingress: Ingress, rid: RequestId
) -> dict[str, Any]:
    """The deployed Guard's verdict on a planted answer (no evidence: the strictest policy),
    so the readiness probe can show PII on the answer path comes back redacted."""
    from rayrag.types import Evidence

    report = await ingress.handles["guard"].check.remote(
        "readiness probe", body.answer, Evidence(passages=()), caller.principal, None
    )
    audit(ingress, "guard_probe", caller, rid, redactions=sum(report.redactions.values()))
    return {
        "answer": report.text,
        "redactions": report.redactions,
        "reasons": report.reasons,
        "escalated": report.escalated,
        "request_id": rid,
    }


@router.get("/governance")
async def governance(caller: Admin, ingress: Ingress, rid: RequestId) -> dict[str, Any]:
    """What this deployment enforces, as configured and as loaded (no secrets)."""
    ingress.check_bundle()
    gov, serve_cfg = ingress.config.governance, ingress.config.serve
    return {
        "redaction": {"enabled": gov.redaction.enabled, "entities": list(gov.redaction.entities)},
        "input_safety": {**gov.input_safety.model_dump(), "loaded": ingress.pipeline.screens},
        "retention": gov.retention.model_dump(),
        "last_purge": ingress.last_purge,
        "guard": {"confidence_threshold": serve_cfg.confidence_threshold},
        "bundle_id": ingress.bundle_id,
        "model_version": ingress.pipeline.model_version,
        "config_hash": ingress.config.config_hash,
        "prompt_version": ingress.pipeline.prompt_version,
        "answer_cache_size": serve_cfg.answer_cache_size,
        "answer_cache_entries": len(ingress.cache),
        "request_id": rid,
    }


def run_purge(ingress: Any, older_than_days: float | None, dry_run: bool) -> dict[str, Any]:
    """`rayrag purge` inside the graph; the outcome is logged as counts, a failure by type."""
    from rayrag.governance.privacy.retention import purge as purge_records

    try:
        report = purge_records(
            ingress.config, older_than_days=older_than_days, dry_run=dry_run
        ).to_json()
    except Exception as exc:  # a purge error is logged by type only (its text may name files)
        ingress.events.warning("purge_failed", extra={"fields": {"error": type(exc).__name__}})
        raise
    if not dry_run:
        ingress.last_purge = {"ts": round(time.time(), 3), "purged": report.get("purged", {})}
        ingress.events.info("purge", extra={"fields": ingress.last_purge})
    return report


def start_purge_loop(ingress: Any) -> threading.Event:
    """Retention run by the serve graph itself every `retention.purge_interval_s` (0: never);
    set the returned event to stop it."""
    stop = threading.Event()
    interval = ingress.config.governance.retention.purge_interval_s
    if interval > 0:

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    run_purge(ingress, None, False)
                except Exception:  # noqa: BLE001 - logged by type in run_purge; the next round retries
                    continue

        threading.Thread(target=loop, name="rayrag-purge", daemon=True).start()
    return stop
