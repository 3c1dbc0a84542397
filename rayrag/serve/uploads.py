"""Document upload through the admin API: `POST /v1/admin/documents` and
`GET /v1/admin/ingest/{ingest_id}` (admin keys only, like every `/v1/admin` route).

An upload streams into its own staging folder (`serve.upload_files`, limits while it
streams), is queued as an ingest job and answered 202 at once with the job's id; the job
(`serve.ingest_jobs`) ingests it incrementally into the served bundle on a worker thread,
one job at a time, and then does what `forget` does: `check_bundle()` and the answer cache
cleared, so the stages hot-reload the new version (`BundleWatch`) on their next call. A failed
job leaves the served bundle as it was.

Audited as content-free `admin` events: the upload with its file count and byte total (file
names can be personal data, so none are logged), and each job's end with its state and counts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as Path_
from fastapi.responses import JSONResponse

from rayrag.data.readers import FOLDER_SUFFIXES
from rayrag.serve.admin import Admin, Ingress, audit
from rayrag.serve.api import UPLOAD_PATH, RequestId
from rayrag.serve.errors import HTTPFailure
from rayrag.serve.ingest_jobs import (
    IngestQueue,
    JobStore,
    ingest_upload,
    new_job_id,
    remove_staging,
)
from rayrag.serve.upload_files import receive_upload

router = APIRouter(prefix="/v1/admin", tags=["admin"])
STATUS_PATH = "/v1/admin/ingest/{ingest_id}"


def upload_dir(serve_cfg: Any) -> Path:
    """`serve.upload.dir`, else `uploads/` beside the event log (the graph's other state)."""
    configured = serve_cfg.upload.dir
    return Path(configured) if configured else Path(serve_cfg.event_log).parent / "uploads"


class Uploads:
    """One Ingress replica's upload state: where files are staged, the job records, the
    queue. Made on the first upload route call, so a graph nobody uploads to starts no
    thread and creates no folder."""

    def __init__(self, ingress: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.ingress, self.loop = ingress, loop
        root = upload_dir(ingress.config.serve)
        self.staging = root / "staging"
        self.store = JobStore(root / "jobs", keep=ingress.config.serve.upload.jobs_kept)
        self.queue = IngestQueue(
            self.store, self._run, done=self._done, cleanup=remove_staging(self.staging)
        )

    def _run(self, job_id: str, progress: Any) -> dict[str, Any]:
        return ingest_upload(
            self.staging / job_id, self.ingress.bundle, self.ingress.config, progress
        )

    def _done(self, record: dict[str, Any]) -> None:
        """A finished job: the graph picks up the new bundle (on the event loop, as a request
        would) and the outcome is logged as ids and counts."""
        if record["state"] == "succeeded":
            try:
                self.loop.call_soon_threadsafe(self._reload)
            except RuntimeError:  # the replica is stopping: the next one reads the new bundle
                pass
        counts = record.get("counts") or {}
        fields = {
            "action": "ingest_job",
            "ingest_id": record["ingest_id"],
            "state": record["state"],
            "files": len(record.get("files") or []),
            "processed": counts.get("processed", 0),
            "chunks": counts.get("chunks", 0),
            "quarantined": len(record.get("quarantined") or []),
            "bundle_id": record.get("bundle_id") or "",
            "seconds": record.get("seconds", 0),
        }
        if record["state"] == "failed":
            fields["error"] = str(record.get("error") or "").split(":", 1)[0].split(" ", 1)[0]
        self.ingress.events.info("admin", extra={"fields": fields})

    def _reload(self) -> None:
        self.ingress.check_bundle()
        self.ingress.cache.clear()


def uploads_of(ingress: Any) -> Uploads:
    uploads = getattr(ingress, "uploads", None)
    if uploads is None:
        uploads = Uploads(ingress, asyncio.get_running_loop())
        ingress.uploads = uploads
    return uploads


def job_view(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the API shows it (the owning process is internal)."""
    return {k: v for k, v in record.items() if k != "owner"}


UPLOAD_FORM = {  # the body is streamed by hand, so OpenAPI is told its shape here
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "acl": {"type": "string", "description": "groups, comma separated"},
                        "metadata": {"type": "string", "description": "a JSON object of scalars"},
                    },
                }
            }
        },
    }
}


@router.post(UPLOAD_PATH.removeprefix("/v1/admin"), status_code=202, openapi_extra=UPLOAD_FORM)
async def upload_documents(
    request: Request, caller: Admin, ingress: Ingress, rid: RequestId
) -> JSONResponse:
    """Upload documents (multipart: `files`, optional `acl` and `metadata`) to be ingested
    into the served bundle; 202 with the ingest job's id and where to poll it."""
    if ingress.bundle is None:
        raise HTTPFailure(
            409, "conflict", "this graph was built without a bundle path; use `rayrag ingest`"
        )
    uploads = uploads_of(ingress)
    job_id = new_job_id()
    staged = await receive_upload(
        request.stream(),
        request.headers.get("content-type", ""),
        uploads.staging / job_id,
        ingress.config.serve.upload,
        FOLDER_SUFFIXES,
    )
    files = [{"name": f.name, "doc_id": f.doc_id, "bytes": f.bytes} for f in staged.files]
    await asyncio.to_thread(uploads.store.create, job_id, files)
    uploads.queue.submit(job_id)
    audit(
        ingress,
        "upload",
        caller,
        rid,
        ingest_id=job_id,
        files=len(files),
        bytes=staged.total_bytes,
        acl_groups=len(staged.acl or []),
    )
    status_url = STATUS_PATH.format(ingest_id=job_id)
    body = {"ingest_id": job_id, "files": files, "status_url": status_url, "request_id": rid}
    return JSONResponse(body, status_code=202, headers={"Location": status_url})


@router.get(STATUS_PATH.removeprefix("/v1/admin"))
async def ingest_status(
    ingest_id: Annotated[str, Path_(min_length=1, max_length=64)],
    caller: Admin,
    ingress: Ingress,
    rid: RequestId,
) -> dict[str, Any]:
    """An ingest job's state (queued, running, succeeded, failed), stages, counts, quarantine
    reasons, the bundle it wrote and its timestamps; 404 for an unknown id."""
    record = await asyncio.to_thread(uploads_of(ingress).store.get, ingest_id)
    if record is None:
        raise HTTPFailure(404, "not_found", "no ingest job has this id")
    return {**job_view(record), "request_id": rid}
