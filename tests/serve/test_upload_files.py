"""rayrag.serve.upload_files: multipart bodies streamed into a staging folder, names checked,
limits held while the bytes stream, nothing left behind on a refusal. Real multipart bodies
(built by httpx, as a client sends them), no Serve; the served route is in test_app.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from rayrag.config import UploadConfig
from rayrag.data.readers import read_corpus
from rayrag.serve.errors import HTTPFailure
from rayrag.serve.upload_files import check_name, parse_acl, parse_metadata, receive_upload

SUFFIXES = (".md", ".txt")
LIMITS = UploadConfig(max_file_bytes=1000, max_request_bytes=4000, max_files=3)


def multipart(files, data=None) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.read(), request.headers["content-type"]


async def chunked(body: bytes, size: int = 97):
    for start in range(0, len(body), size):
        yield body[start : start + size]


def receive(tmp_path: Path, files, data=None, limits=LIMITS, content_type=None):
    body, kind = multipart(files, data)
    return asyncio.run(
        receive_upload(chunked(body), content_type or kind, tmp_path / "job", limits, SUFFIXES)
    )


def test_files_land_under_uploads_with_a_sidecar_the_folder_reader_applies(tmp_path):
    files = [
        ("files", ("notes.md", b"# Notes\nthe quendor tariff is seventeen.", "text/markdown")),
        ("files", ("b.txt", b"plain words here", "text/plain")),
    ]
    data = {"acl": ["finance, legal", "finance"], "metadata": json.dumps({"source": "ops"})}
    staged = receive(tmp_path, files, data)
    assert [f.doc_id for f in staged.files] == ["uploads/notes.md", "uploads/b.txt"]
    assert staged.total_bytes == sum(len(f[1][1]) for f in files)
    assert staged.acl == ["finance", "legal"] and staged.metadata == {"source": "ops"}
    folder = tmp_path / "job" / "uploads"
    assert sorted(p.name for p in folder.iterdir()) == [
        "b.txt",
        "b.txt.meta.json",
        "notes.md",
        "notes.md.meta.json",
    ]
    sidecar = json.loads((folder / "notes.md.meta.json").read_text())
    assert sidecar == {"acl": ["finance", "legal"], "metadata": {"source": "ops"}}
    docs = {d.id: d for d in read_corpus(tmp_path / "job").documents}
    assert docs["uploads/notes.md"].acl == ("finance", "legal")
    assert docs["uploads/notes.md"].metadata == {"source": "ops", "format": "md"}
    assert docs["uploads/notes.md"].title == "Notes"


def test_without_acl_or_metadata_no_sidecar_is_written(tmp_path):
    staged = receive(tmp_path, [("files", ("a.md", b"text", "text/markdown"))])
    assert staged.acl is None and staged.metadata is None
    assert [p.name for p in (tmp_path / "job" / "uploads").iterdir()] == ["a.md"]


@pytest.mark.parametrize(
    ("files", "data", "status", "message"),
    [
        ([("files", ("big.md", b"x" * 1001, "text/plain"))], None, 413, "max_file_bytes"),
        (
            [("files", (f"f{i}.md", b"x" * 900, "text/plain")) for i in range(3)]
            + [("files", ("g.md", b"x", "text/plain"))],
            None,
            413,
            "max_files",
        ),
        (
            [("files", (f"f{i}.md", b"x" * 900, "text/plain")) for i in range(3)],
            {"metadata": json.dumps({"k": "v" * 1500})},
            413,
            "max_request_bytes",
        ),
        ([("files", ("tool.exe", b"MZ", "application/octet-stream"))], None, 415, ".exe"),
        ([("files", ("../../etc/passwd.md", b"x", "text/plain"))], None, 400, "path"),
        ([("files", ("..\\evil.md", b"x", "text/plain"))], None, 400, "path"),
        ([("files", (".hidden.md", b"x", "text/plain"))], None, 400, "hidden"),
        ([("files", ("a.md.meta.json", b"{}", "text/plain"))], None, 400, "reserved"),
        (
            [("files", ("a.md", b"x", "text/plain")), ("files", ("a.md", b"y", "text/plain"))],
            None,
            400,
            "twice",
        ),
        ([("other", ("a.md", b"x", "text/plain"))], None, 400, "`files`"),
        ([("files", ("a.md", b"x", "text/plain"))], {"acl": " , "}, 400, "at least one group"),
        ([("files", ("a.md", b"x", "text/plain"))], {"acl": "hr;drop"}, 400, "acl group 1"),
        ([("files", ("a.md", b"x", "text/plain"))], {"metadata": "[1]"}, 400, "JSON object"),
        ([("files", ("a.md", b"x", "text/plain"))], {"metadata": '{"a": [1]}'}, 400, "value 1"),
        ([("files", ("a.md", b"x", "text/plain"))], {"colour": "red"}, 400, "unknown form field"),
    ],
)
def test_a_refused_upload_is_one_line_and_leaves_nothing(tmp_path, files, data, status, message):
    with pytest.raises(HTTPFailure) as refused:
        receive(tmp_path, files, data)
    assert refused.value.status == status and message in refused.value.message
    assert "\n" not in refused.value.message and "passwd" not in refused.value.message
    assert not (tmp_path / "job").exists()


def raw_body(*parts: tuple[bytes, bytes]) -> tuple[bytes, str]:
    """A multipart body from (Content-Disposition parameters, content) as given, byte for byte
    (httpx escapes control characters in names and sends a form without files urlencoded)."""
    body = b"".join(
        b"--B\r\nContent-Disposition: form-data; " + head + b"\r\n\r\n" + content + b"\r\n"
        for head, content in parts
    )
    return body + b"--B--\r\n", "multipart/form-data; boundary=B"


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([(b'name="files"; filename="a\tb.md"', b"x")], "control"),
        ([(b'name="files"; filename="\xff.md"', b"x")], "not valid UTF-8"),
        ([(b'name="acl"', b"hr")], "no files"),
    ],
)
def test_raw_bodies_a_browser_would_not_send_are_400(tmp_path, parts, message):
    body, kind = raw_body(*parts)
    with pytest.raises(HTTPFailure) as refused:
        asyncio.run(receive_upload(chunked(body), kind, tmp_path / "job", LIMITS, SUFFIXES))
    assert refused.value.status == 400 and message in refused.value.message
    assert not (tmp_path / "job").exists()


def test_a_body_that_is_not_multipart_is_415(tmp_path):
    with pytest.raises(HTTPFailure) as refused:
        receive(tmp_path, [("files", ("a.md", b"x", "text/plain"))], content_type="text/plain")
    assert refused.value.status == 415 and not (tmp_path / "job").exists()


def test_a_truncated_body_is_400_and_leaves_nothing(tmp_path):
    body, kind = multipart([("files", ("a.md", b"x" * 500, "text/plain"))])
    with pytest.raises(HTTPFailure) as refused:
        asyncio.run(receive_upload(chunked(body[:300]), kind, tmp_path / "job", LIMITS, SUFFIXES))
    assert refused.value.status == 400 and not (tmp_path / "job").exists()


def test_a_garbled_body_is_400_and_leaves_nothing(tmp_path):
    body, kind = multipart([("files", ("a.md", b"x" * 50, "text/plain"))])
    garbled = body.replace(b"\r\n", b"\n", 1)  # the first boundary line without its CR
    with pytest.raises(HTTPFailure) as refused:
        asyncio.run(receive_upload(chunked(garbled), kind, tmp_path / "job", LIMITS, SUFFIXES))
    assert refused.value.status == 400 and "well-formed" in refused.value.message
    assert not (tmp_path / "job").exists()


def test_a_failure_that_is_not_the_clients_is_not_a_400_and_leaves_nothing(tmp_path):
    """A client gone or a full disk mid-body is the server's business: it propagates (the
    API's handler answers 5xx) and the staging folder is removed all the same."""
    body, kind = multipart([("files", ("a.md", b"x" * 500, "text/plain"))])

    async def gone():
        yield body[:200]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        asyncio.run(receive_upload(gone(), kind, tmp_path / "job", LIMITS, SUFFIXES))
    assert not (tmp_path / "job").exists()


def test_names_and_fields():
    assert check_name("Report 2024 (final).md", 1, SUFFIXES) == "Report 2024 (final).md"
    assert check_name("e\u0301te.MD", 1, SUFFIXES) == "\u00e9te.MD"  # NFC, any case of suffix
    for bad in ("", " ", ".", "..", "a/b.md", "a.md ", "a.md.", "x" * 260 + ".md", "a:b.md"):
        with pytest.raises(HTTPFailure):
            check_name(bad, 1, SUFFIXES)
    assert parse_acl([]) is None and parse_acl(["hr,finance", "hr"]) == ["hr", "finance"]
    assert parse_metadata([]) is None and parse_metadata(['{"n": 1, "b": null}']) == {
        "n": 1,
        "b": None,
    }
