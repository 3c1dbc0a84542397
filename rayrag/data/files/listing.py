"""Where files come from: a local folder or an `s3://bucket/prefix`, through pyarrow
filesystems, listed cheaply (names, sizes, times: no content read).

S3 credentials come only from the environment (the standard AWS_* variables the AWS SDK
reads); an S3-compatible endpoint (MinIO, moto) from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from rayrag.errors import DataError


@dataclass(frozen=True)
class Listed:
    """One file under the root: its id (relative posix path), filesystem path, size, mtime."""

    rel: str
    path: str
    size: int
    updated_at: str | None


def is_uri(corpus: str | Path) -> bool:
    return isinstance(corpus, str) and "://" in corpus


def open_root(corpus: str | Path) -> tuple[Any, str]:
    """(pyarrow filesystem, base path on it) for a local folder or an s3:// URI."""
    from pyarrow import fs

    if not is_uri(corpus):
        return fs.LocalFileSystem(), Path(corpus).resolve().as_posix()
    parts = urlsplit(str(corpus))
    if parts.scheme != "s3":
        raise DataError(f"unsupported corpus URI scheme {parts.scheme!r}; use s3:// or a folder")
    if not parts.netloc:
        raise DataError("an s3:// corpus needs a bucket: s3://bucket/prefix")
    options: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        split = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=split.netloc, scheme=split.scheme)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        # Named explicitly so Ray workers (whose environment may lack them) read with the
        # driver's keys; otherwise the SDK's own chain (profile, instance role) applies.
        options.update(
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        )
    filesystem = fs.S3FileSystem(**options)
    return filesystem, f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")


def list_files(filesystem: Any, base: str) -> list[Listed]:
    """Every file below `base`, sorted by relative path; hidden folders (.git, .venv) and
    hidden files are skipped, except folder rule files (`.rayrag.json`)."""
    from pyarrow import fs

    from rayrag.data.files.meta import RULE_FILE

    try:
        root = filesystem.get_file_info(base)
        if root.type != fs.FileType.Directory:
            raise DataError(f"corpus folder not found: {base}")
        infos = filesystem.get_file_info(fs.FileSelector(base, recursive=True))
    except OSError as exc:
        raise DataError(f"cannot list corpus {base}: {type(exc).__name__}") from None
    found = []
    for info in infos:
        if info.type != fs.FileType.File:
            continue
        rel = PurePosixPath(info.path).relative_to(PurePosixPath(base)).as_posix()
        parts = PurePosixPath(rel).parts
        if any(p.startswith(".") for p in parts[:-1]):
            continue
        if parts[-1].startswith(".") and parts[-1] != RULE_FILE:
            continue
        mtime = info.mtime
        stamp = (
            mtime.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            if isinstance(mtime, datetime)
            else None
        )
        found.append(Listed(rel, info.path, int(info.size or 0), stamp))
    return sorted(found, key=lambda f: f.rel)


def read_bytes(filesystem: Any, path: str, limit: int) -> bytes:
    """At most `limit` + 1 bytes of a file (the caller checks the size)."""
    with filesystem.open_input_stream(path) as handle:
        return handle.read(limit + 1)
