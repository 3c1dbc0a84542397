"""An upload request's body, streamed into a staging folder: one document per file.

`receive_upload` parses `multipart/form-data` as it arrives (python-multipart's push parser),
so the limits of `serve.upload` hold while the bytes stream: a file past `max_file_bytes`, a
body past `max_request_bytes` or more than `max_files` files stops the request with a 413
before the rest is read. Names are checked before a byte is written (no path, no hidden
name, a supported extension); each file is written under a hidden temp name and renamed when
its part ends, and any refusal removes the whole staging folder, so nothing half-written
is ever ingested.

The staging folder is a corpus folder for `read_corpus`: `<staging>/uploads/NAME`, so each
document's id is `uploads/NAME` and uploading a name again replaces that document. The
form's `acl` and `metadata` go into a sidecar `NAME.meta.json` (`{"acl": [...],
"metadata": {...}}`) next to each file, which the folder reader applies.

Refusals are `HTTPFailure`s whose messages name a file by its position, never by its name
(file names can be personal data) and never quote a value.
"""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from rayrag.atomic import atomic_text
from rayrag.config import UploadConfig
from rayrag.serve.errors import HTTPFailure

UPLOAD_FOLDER = "uploads"  # doc ids are uploads/NAME
SIDECAR_SUFFIX = ".meta.json"
FILE_FIELDS = ("files", "file")
TEXT_FIELD_BYTES = {"acl": 4096, "metadata": 16384}
MAX_NAME_BYTES = 255
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
_FORBIDDEN_NAME_CHARS = set('/\\:*?"<>|')


@dataclass
class StagedFile:
    """One received file: its checked name, its document id and its size."""

    name: str
    doc_id: str
    bytes: int


@dataclass
class StagedUpload:
    """What one request left in its staging folder."""

    root: Path
    files: list[StagedFile] = field(default_factory=list)
    acl: list[str] | None = None
    metadata: dict[str, Any] | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


def refused(status: int, message: str) -> HTTPFailure:
    kind = {400: "invalid_request", 413: "request_too_large", 415: "unsupported_media_type"}
    return HTTPFailure(status, kind[status], message)


def check_name(raw: str, position: int, suffixes: tuple[str, ...]) -> str:
    """The file name as stored (NFC), or a 400/415 naming the file by `position` (1-based):
    a bare name (no path, not hidden, no control or reserved characters) with a supported
    extension."""
    where = f"file {position}"
    name = unicodedata.normalize("NFC", raw)
    if not name.strip():
        raise refused(400, f"{where}: the file name is empty")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise refused(400, f"{where}: the file name must not contain a path (/ \\ or ..)")
    if name.startswith("."):
        raise refused(400, f"{where}: hidden file names (starting with '.') are not accepted")
    if any(unicodedata.category(c).startswith("C") or c in _FORBIDDEN_NAME_CHARS for c in name):
        raise refused(400, f"{where}: the file name holds control or reserved characters")
    if name != name.strip() or name.endswith("."):
        raise refused(400, f"{where}: the file name must not end or start with a space or dot")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise refused(400, f"{where}: the file name is longer than {MAX_NAME_BYTES} bytes")
    if name.endswith(SIDECAR_SUFFIX):
        raise refused(400, f"{where}: names ending {SIDECAR_SUFFIX} are reserved")
    suffix = Path(name).suffix.lower()
    if suffix not in suffixes:
        raise refused(
            415, f"{where}: unsupported file type {suffix or '(none)'}; use {' '.join(suffixes)}"
        )
    return name


def parse_acl(values: list[str]) -> list[str] | None:
    """The `acl` form field(s): groups, comma separated or repeated; None when not given."""
    if not values:
        return None
    groups = [g.strip() for v in values for g in v.split(",") if g.strip()]
    if not groups:
        raise refused(400, "acl must name at least one group")
    for position, group in enumerate(groups, 1):
        if not _GROUP.match(group):
            raise refused(
                400, f"acl group {position} must be 1-64 letters, digits or _ . : @ - characters"
            )
    return list(dict.fromkeys(groups))


def parse_metadata(values: list[str]) -> dict[str, Any] | None:
    """The `metadata` form field: one JSON object of scalars; None when not given."""
    if not values:
        return None
    if len(values) > 1:
        raise refused(400, "metadata must be given once")
    try:
        metadata = json.loads(values[0])
    except json.JSONDecodeError as exc:
        raise refused(
            400, f"metadata is not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    if not isinstance(metadata, dict):
        raise refused(400, "metadata must be a JSON object")
    for position, (key, value) in enumerate(metadata.items(), 1):
        if not key or len(key) > 64:
            raise refused(400, f"metadata key {position} must be 1-64 characters")
        if not isinstance(value, (str, int, float, bool, type(None))):
            raise refused(400, f"metadata value {position} must be a string, number, bool or null")
    return metadata


class _Receiver:
    """python-multipart's callbacks: headers are checked at the end of each part's headers,
    file bytes go straight to disk, every byte is counted against the limits."""

    def __init__(self, staging: Path, limits: UploadConfig, suffixes: tuple[str, ...]) -> None:
        self.upload = StagedUpload(root=staging)
        self.folder = staging / UPLOAD_FOLDER
        self.limits, self.suffixes = limits, suffixes
        self.fields: dict[str, list[str]] = {"acl": [], "metadata": []}
        self.names: set[str] = set()
        self._header_field = b""
        self._headers: dict[bytes, bytes] = {}
        self._field: str | None = None
        self._text = bytearray()
        self._file: Any = None
        self._temp: Path | None = None
        self._size = 0

    def on_part_begin(self) -> None:
        self._headers, self._header_field = {}, b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        key = self._header_field.lower()
        self._headers[key] = self._headers.get(key, b"") + data[start:end]

    def on_header_end(self) -> None:
        self._header_field = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            if name not in self.fields:
                raise refused(400, "unknown form field; the fields are files, acl and metadata")
            self._field, self._text = name, bytearray()
            return
        if name not in FILE_FIELDS:
            raise refused(400, "files go in the form field `files`")
        position = len(self.upload.files) + 1
        if position > self.limits.max_files:
            raise refused(
                413,
                f"more than {self.limits.max_files} files in one upload (serve.upload.max_files)",
            )
        try:
            decoded = filename.decode("utf-8")
        except UnicodeDecodeError:
            raise refused(400, f"file {position}: the file name is not valid UTF-8") from None
        stored = check_name(decoded, position, self.suffixes)
        if stored in self.names:
            raise refused(400, f"file {position}: the same file name appears twice")
        self.names.add(stored)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._temp = self.folder / f".part-{uuid.uuid4().hex}"
        self._file = self._temp.open("wb")
        self._size = 0
        self.upload.files.append(StagedFile(stored, f"{UPLOAD_FOLDER}/{stored}", 0))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._size += end - start
            if self._size > self.limits.max_file_bytes:
                position = len(self.upload.files)
                raise refused(
                    413,
                    f"file {position} is larger than {self.limits.max_file_bytes} bytes "
                    "(serve.upload.max_file_bytes)",
                )
            self._file.write(data[start:end])
        elif self._field is not None:
            self._text += data[start:end]
            if len(self._text) > TEXT_FIELD_BYTES[self._field]:
                raise refused(413, f"the {self._field} field is longer than its limit")

    def on_part_end(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._file.close()
            staged = self.upload.files[-1]
            staged.bytes = self._size
            self._temp.rename(self.folder / staged.name)  # type: ignore[union-attr]
            self._file = self._temp = None
        elif self._field is not None:
            try:
                self.fields[self._field].append(self._text.decode("utf-8"))
            except UnicodeDecodeError:
                raise refused(400, f"the {self._field} field is not valid UTF-8") from None
            self._field = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def callbacks(self) -> dict[str, Any]:
        names = ("part_begin", "header_field", "header_value", "header_end", "headers_finished")
        names += ("part_data", "part_end")
        return {f"on_{n}": getattr(self, f"on_{n}") for n in names}


async def receive_upload(
    chunks: AsyncIterator[bytes],
    content_type: str,
    staging: Path,
    limits: UploadConfig,
    suffixes: tuple[str, ...],
) -> StagedUpload:
    """Stream a multipart body into `staging` (created here, removed on any refusal) and
    write the sidecars; the files, the acl and the metadata it carried."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise refused(415, "an upload is a multipart/form-data body (form field `files`)")
    staging.mkdir(parents=True, exist_ok=False)
    receiver = _Receiver(staging, limits, suffixes)
    parser = MultipartParser(boundary, receiver.callbacks())
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > limits.max_request_bytes:
                raise refused(
                    413,
                    f"upload larger than {limits.max_request_bytes} bytes "
                    "(serve.upload.max_request_bytes)",
                )
            parser.write(chunk)
        parser.finalize()
        if receiver._file is not None:
            raise refused(400, "the upload ended in the middle of a file")
        if not receiver.upload.files:
            raise refused(400, "no files in the upload (form field `files`)")
        upload = receiver.upload
        upload.acl = parse_acl(receiver.fields["acl"])
        upload.metadata = parse_metadata(receiver.fields["metadata"])
        write_sidecars(upload)
        return upload
    except ParseError:
        receiver.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise refused(400, "the body is not a well-formed multipart/form-data upload") from None
    except BaseException:  # a refusal, a full disk, a client gone: nothing half-written stays
        receiver.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_sidecars(upload: StagedUpload) -> None:
    """`NAME.meta.json` beside each file when the form gave an acl or metadata."""
    sidecar: dict[str, Any] = {}
    if upload.acl is not None:
        sidecar["acl"] = upload.acl
    if upload.metadata is not None:
        sidecar["metadata"] = upload.metadata
    if not sidecar:
        return
    for staged in upload.files:
        path = upload.root / UPLOAD_FOLDER / (staged.name + SIDECAR_SUFFIX)
        with atomic_text(path) as handle:
            handle.write(json.dumps(sidecar, sort_keys=True))
