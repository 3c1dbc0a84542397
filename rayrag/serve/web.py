"""The web page served by the graph: `GET /` and `GET /static/<file>`, from the package.

A page with no build step: plain HTML, CSS and ES modules shipped in `rayrag/serve/web/`
(package data), nothing fetched from anywhere else. It talks to the same API as any client,
with the key the user pastes (kept in the tab's sessionStorage), so auth, limits and errors
are the API's own; the page holds no data of its own and needs no key to load. Side by side,
as RAG consoles (RAGFlow, Open WebUI, MLflow's GenAI UI) show them: the streamed answer, its
citations and passages, the KG facts drawn as a graph, redaction, confidence, timings and the
MoE's expert load, feedback; admins get the escalation queue, events, the registry and the
last readiness report.

Every response here carries a strict Content-Security-Policy (scripts and connections to
this origin only, no inline script, no framing), `nosniff` and no referrer.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from rayrag.serve.errors import HTTPFailure

router = APIRouter(include_in_schema=False)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# The static files change only with the package: revalidated hourly; the page itself always.
STATIC_CACHE = "public, max-age=3600"
PAGE_CACHE = "no-cache"


def static_names() -> frozenset[str]:
    """The files the page may load: the package folder's own, by plain name (no folders)."""
    folder = resources.files("rayrag.serve") / "web"
    return frozenset(
        entry.name
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.rsplit(".", 1)[-1] in {"html", "js", "css", "svg", "png"}
    )


def _file(name: str, cache: str) -> Response:
    # Only names listed from the package folder are served: `..`, `/`, `%2f` or an absolute
    # path can never name another file, whatever the URL decoding did.
    if name not in static_names():
        raise HTTPFailure(404, "not_found", "no such file")
    body = (resources.files("rayrag.serve") / "web" / name).read_bytes()
    suffix = "." + name.rsplit(".", 1)[-1]
    headers = {**SECURITY_HEADERS, "Cache-Control": cache}
    return Response(body, media_type=CONTENT_TYPES[suffix], headers=headers)


@router.get("/")
async def page() -> Response:
    """The page (no key needed: it holds no data until the user pastes one)."""
    return _file("index.html", PAGE_CACHE)


@router.get("/static/{name:path}")
async def static(name: str) -> Response:
    """A file of the page, by name; anything else is a 404."""
    return _file(name, STATIC_CACHE)
