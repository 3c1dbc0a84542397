"""rayrag.serve.web: the page's routes, headers and static files (the browser test is
test_web_browser.py)."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from fastapi.testclient import TestClient

from rayrag.serve import web
from rayrag.serve.api import app
from rayrag.serve.ingress import Ingress  # noqa: F401 - includes the routers in the app

STATIC = ("index.html", "app.js", "app.css")


@pytest.fixture(scope="module")
def client():
    return TestClient(app)


def static_text(name: str) -> str:
    return (resources.files("rayrag.serve") / "web" / name).read_text(encoding="utf-8")


def test_the_page_and_its_files_are_served_with_their_types_and_a_strict_csp(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/app.js">' in page.text
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        reply = client.get(f"/static/{name}")
        assert reply.status_code == 200 and reply.headers["content-type"].startswith(kind)
        assert reply.headers["cache-control"] == web.STATIC_CACHE
        assert reply.content == (resources.files("rayrag.serve") / "web" / name).read_bytes()
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "img-src 'self' data:" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == web.PAGE_CACHE


@pytest.mark.parametrize(
    "path",
    [
        "/static/../web.py",
        "/static/..%2fweb.py",
        "/static/%2e%2e/%2e%2e/config.py",
        "/static/..%2f..%2fconfig.py",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/web/app.js",
        "/static/nope.js",
        "/static/",
    ],
)
def test_a_path_outside_the_page_files_is_a_404(client, path):
    reply = client.get(path)
    assert reply.status_code == 404, path
    assert "root:" not in reply.text and "import" not in reply.text  # no file's content
    if reply.request.url.path.startswith("/static/"):  # not normalised away by the client
        assert reply.json()["error"]["type"] == "not_found"


def test_only_the_package_files_are_listed():
    assert set(STATIC) <= web.static_names()
    assert all("/" not in name and not name.startswith(".") for name in web.static_names())


def test_no_static_file_names_an_external_url():
    for name in STATIC:
        text = static_text(name)
        # the SVG namespace is an identifier, never fetched
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}", text)) - {"http://www.w3.org"}
        assert not urls, (name, urls)
        assert "@import" not in text and "<iframe" not in text


def test_the_script_never_writes_markup_and_keeps_the_key_in_the_session_only():
    script = static_text("app.js")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "localStorage" not in script and "document.cookie" not in script
    assert "sessionStorage.setItem" in script
    page = static_text("index.html")
    assert "<script>" not in page, "no inline script (CSP script-src 'self')"
    assert not re.search(r"\son[a-z]+=", page), "no inline event handlers"
    assert "style=" not in page, "no inline styles (CSP style-src 'self')"


def test_the_upload_panel_posts_files_and_an_acl_and_polls_the_job():
    page = static_text("index.html")
    assert '<input type="file" id="upload-file" multiple' in page and 'id="upload-acl"' in page
    assert 'id="upload-button" disabled' not in page and "no upload API" not in page
    script = static_text("app.js")
    assert 'fetch("/v1/admin/documents"' in script and 'form.append("files"' in script
    assert "pollIngest(data.status_url)" in script


def test_every_page_file_is_package_data_so_a_wheel_ships_it():
    import fnmatch
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    section = pyproject.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    patterns = re.findall(r'"([^"]+)"', section)
    for name in web.static_names():
        assert any(fnmatch.fnmatch(f"serve/web/{name}", p) for p in patterns), name
