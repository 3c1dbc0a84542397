"""Reading a folder (and an s3:// prefix, against moto's server) of files into documents:
ids, titles, layouts, ACLs from sidecars and rule files, every bad file quarantined with a
reason that quotes nothing; Ray Data parsing gives what in-process parsing gives."""

from __future__ import annotations

import socket

import pytest

from rayrag.config import FilesConfig
from rayrag.data.files.reader import read_files
from rayrag.data.readers import read_corpus
from rayrag.errors import DataError
from tests.data.files.makers import PLANTED, RULE_ACL, SIDECAR_ACL, make_corpus_folder

MAX_BYTES = 100_000
FILES = FilesConfig(max_file_bytes=MAX_BYTES)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("files") / "corpus"
    reasons = make_corpus_folder(root, max_file_bytes=MAX_BYTES)
    return root, reasons


def test_documents_and_quarantine(folder) -> None:
    root, reasons = folder
    result = read_corpus(root, files=FILES)
    docs = {d.id: d for d in result.documents}
    assert sorted(docs) == [
        "ferry.html",
        "guide.md",
        "manual.pdf",
        "pump.docx",
        "readme.txt",
        "reports/fonts.pdf",
        "restricted/salaries.md",
    ]
    manual = docs["manual.pdf"]
    assert manual.title == "Harbour Manual" and manual.acl == tuple(SIDECAR_ACL)
    assert manual.metadata == {
        "format": "pdf",
        "source": "file-test",
        "dept": "harbour",
        "year": 2026,
    }
    page3 = next(s for s in manual.layout if s.page == 3)
    assert PLANTED in manual.text[page3.start : page3.end] and page3.section == "Navigation Lights"
    assert docs["restricted/salaries.md"].acl == tuple(RULE_ACL)
    assert docs["restricted/salaries.md"].metadata["tier"] == "secret"
    assert docs["ferry.html"].acl == ("public",)
    assert [s.section for s in docs["guide.md"].layout] == [None, "Install", "Install > Linux"]
    assert docs["readme.txt"].layout == () and docs["readme.txt"].title == "readme"
    got = {q.doc_id: q.reason for q in result.quarantined}
    assert set(got) == set(reasons)
    for name, reason in reasons.items():
        assert got[name].startswith(reason), (name, got[name])
    # Reasons say what is wrong, never what the file says.
    words = {w for d in result.documents for w in d.text.split() if len(w) > 6}
    assert not [r for r in got.values() if any(w in r for w in words)]


def test_strict_raises_on_the_first_bad_file(folder) -> None:
    root, _ = folder
    with pytest.raises(DataError, match=r"big\.txt:1: file is \d+ bytes"):
        read_corpus(root, files=FILES, strict=True)


def test_ray_data_parses_what_local_parses(ray_local, folder) -> None:
    root, _ = folder
    local = read_files(root, files=FILES, engine="local")
    on_ray = read_files(root, files=FILES, engine="ray_data")
    assert on_ray.documents == local.documents
    assert on_ray.quarantined == local.quarantined
    assert on_ray.source_digest == local.source_digest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def moto_s3(monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="docs")
    yield client
    server.stop()


def test_s3_prefix_reads_like_a_folder(ray_local, folder, moto_s3) -> None:
    root, _ = folder
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        moto_s3.put_object(
            Bucket="docs", Key=f"team/{path.relative_to(root).as_posix()}", Body=path.read_bytes()
        )
    local = read_corpus(root, files=FILES)
    remote = read_corpus("s3://docs/team", files=FILES, engine="ray_data")
    strip = [(d.id, d.text, d.title, d.acl, d.metadata, d.layout) for d in remote.documents]
    assert strip == [(d.id, d.text, d.title, d.acl, d.metadata, d.layout) for d in local.documents]
    assert [(q.doc_id, q.reason) for q in remote.quarantined] == [
        (q.doc_id, q.reason) for q in local.quarantined
    ]
    assert remote.quarantined[0].source.startswith("s3://docs/team/")
    with pytest.raises(DataError, match="corpus folder not found"):
        read_corpus("s3://docs/nothing-here", files=FILES)
