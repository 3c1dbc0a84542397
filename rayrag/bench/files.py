"""Bench: document files through ingest — PDF pages per second through the whole pipeline
against the parser alone, the boilerplate an HTML page loses, and a planted sentence's rank.

`rayrag bench files [--quick] --json`. Competitors on the same generated multi-page PDFs
(reportlab; a few paragraphs per page, one heading per page), alternating rounds, median:

    parser     `parse_file` on every PDF in this process (pypdf: text, outline, spans)
    pipeline   `ingest` of the folder on Ray Data: read and parse on Ray Data, redact
               (Presidio), chunk, extract triples, embed, build FAISS/BM25/graph, write

`ratios.parser_vs_pipeline` is how many times faster parsing alone is: the share of
ingest time a PDF's parsing costs (`last_pipeline_stage_seconds.read`: the same parsing
inside ingest, on Ray Data, with its task start-up). The HTML figure compares the
characters a reader sees on a page wrapped in navigation, header, cookie banner and footer
with what trafilatura keeps (`boilerplate_removed`: the share of the boilerplate strings
absent from the extracted text, `article_kept`: the share of the article's sentences
present). The planted sentence sits on page 3 of the first PDF; `planted.rank` is its
passage's rank for a question about it, `planted.page` the page its citation carries.
Needs reportlab (a dev dependency).
"""

from __future__ import annotations

import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rayrag.bench import alternate

PLANTED = "The lighthouse at Corvane Point flashes green light every nine seconds."
QUESTION = "How often does the lighthouse at Corvane Point flash its green light?"
_WORDS = (
    "harbour pilot berth quay tide cargo crane vessel channel buoy anchor draught timber grain "
    "container apron mooring dredging breakwater ferry schedule inspection beacon signal"
).split()

BOILERPLATE = [
    "Home",
    "About the port authority",
    "Contact us",
    "Careers",
    "We use cookies to improve your experience. Accept all cookies or manage preferences.",
    "Copyright 2026 Harbour Authority. All rights reserved. Privacy policy. Terms of use.",
]
ARTICLE = [
    "The island ferry leaves the south pier every forty minutes between six and midnight.",
    "From November to March the last crossing leaves at ten in the evening sharp.",
    "When the wind passes force eight the harbour master cancels every crossing at once.",
    "Tickets are sold at the kiosk on the pier and on board with a small surcharge.",
]


def make_html() -> str:
    """A page with navigation, header, cookie banner and footer around one article."""
    nav = "".join(f"<li><a href='/{i}'>{text}</a></li>" for i, text in enumerate(BOILERPLATE[:4]))
    return f"""<!doctype html>
<html><head><title>Ferry Timetable Guide</title><meta charset="utf-8"></head>
<body>
<header><div class="logo">Harbour Authority</div><nav><ul>{nav}</ul></nav></header>
<div class="cookie-banner" id="cookie-consent"><p>{BOILERPLATE[4]}</p></div>
<main><article>
<h1>Ferry Timetable Guide</h1>
<p>{ARTICLE[0]}</p>
<h2>Winter Service</h2>
<p>{ARTICLE[1]}</p>
<h3>Storm Days</h3>
<p>{ARTICLE[2]}</p>
<h2>Tickets</h2>
<p>{ARTICLE[3]}</p>
</article></main>
<footer><p>{BOILERPLATE[5]}</p><ul><li><a href='/p'>Privacy</a></li>
<li><a href='/s'>Sitemap</a></li></ul></footer>
</body></html>"""


def visible_text(html: str) -> str:
    """The text a reader sees on the whole page (every text node of the body)."""
    from lxml import html as lxml_html

    root = lxml_html.fromstring(html)
    for node in root.xpath("//head|//script|//style"):
        node.getparent().remove(node)
    return " ".join(" ".join(root.itertext()).split())


def bench_pdf(n_pages: int, seed: int, planted: bool) -> bytes:
    """A text PDF of `n_pages` pages: a heading (with a bookmark) and five paragraphs each;
    with `planted`, PLANTED is the third paragraph of page 3."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    pdf.setTitle(f"Harbour Report {seed}")
    for page in range(1, n_pages + 1):
        heading = f"Section {page}: {_WORDS[(seed + page) % len(_WORDS)].title()} Operations"
        pdf.setFont("Helvetica-Bold", 18)
        pdf.drawString(72, 780, heading)
        pdf.bookmarkPage(f"p{page}")
        pdf.addOutlineEntry(heading, f"p{page}", level=0)
        pdf.setFont("Helvetica", 10)
        y = 750
        for paragraph in range(5):
            if planted and page == 3 and paragraph == 2:
                lines = [PLANTED]
            else:
                lines = [_sentence(seed, page, paragraph, line) for line in range(4)]
            for line in lines:
                pdf.drawString(72, y, line)
                y -= 14
            y -= 10
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def _sentence(seed: int, page: int, paragraph: int, line: int) -> str:
    k = seed * 1009 + page * 97 + paragraph * 13 + line
    words = [_WORDS[(k * (i + 3)) % len(_WORDS)] for i in range(12)]
    return f"The {' '.join(words)} was logged on day {k % 28 + 1}."


def _html_figures() -> dict[str, Any]:
    from rayrag.data.files.html import parse_html

    page = make_html()
    seen = visible_text(page)
    kept = parse_html(page.encode()).text
    plain = " ".join(line.lstrip("#").strip() for line in kept.splitlines() if line.strip())
    return {
        "visible_chars": len(seen),
        "extracted_chars": len(plain),
        "removed_share_of_visible": round(1 - len(plain) / len(seen), 3),
        "boilerplate_removed": round(
            sum(b not in plain for b in BOILERPLATE) / len(BOILERPLATE), 3
        ),
        "article_kept": round(sum(a in plain for a in ARTICLE) / len(ARTICLE), 3),
    }


def run(quick: bool = False) -> dict[str, Any]:
    from rayrag.config import resolve_config
    from rayrag.data.files.parse import parse_file
    from rayrag.pipelines.ingest import ingest

    n_files, n_pages, rounds = (3, 6, 2) if quick else (8, 12, 3)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="rayrag-bench-files-"))
    try:
        corpus = work / "pdfs"
        corpus.mkdir()
        files = {
            f"report-{i}.pdf": bench_pdf(n_pages, seed=i, planted=i == 0) for i in range(n_files)
        }
        for name, data in files.items():
            (corpus / name).write_bytes(data)
        pages = n_files * n_pages
        config = resolve_config("demo", ["tracking.enabled=false"])
        out = work / "bundle"

        def parser() -> None:
            for name, data in files.items():
                parse_file(name, data)

        stages: dict[str, float] = {}

        def pipeline() -> None:
            result = ingest(corpus, out, config, engine="ray_data", progress=lambda _: None)
            stages.update(result.manifest["stage_seconds"])

        parser()
        pipeline()  # warm-up: Ray up, models cached
        seconds = alternate({"parser": parser, "pipeline": pipeline}, rounds)
        median = {name: statistics.median(times) for name, times in seconds.items()}
        planted = _planted(out, config)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "bench": "files",
        "quick": quick,
        "pdfs": n_files,
        "pages": pages,
        "rounds": rounds,
        "seconds": {name: [round(t, 3) for t in times] for name, times in seconds.items()},
        "pages_per_second": {name: round(pages / t, 1) for name, t in median.items()},
        # The last pipeline run's own stages: "read" is listing + Ray Data read and parse.
        "last_pipeline_stage_seconds": stages,
        "html": _html_figures(),
        "planted": planted,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "ratios": {"parser_vs_pipeline": round(median["pipeline"] / median["parser"], 2)},
    }


def _planted(bundle: Path, config: Any) -> dict[str, Any]:
    """Rank (1-based, None when not in the top 10) and cited page of the planted sentence."""
    from rayrag.retrieval.hybrid import HybridRetriever
    from rayrag.types import Principal

    passages = (
        HybridRetriever(bundle, config)
        .retrieve(QUESTION, Principal("bench", frozenset({"public"})), top_k=10, with_facts=False)
        .passages
    )
    for rank, passage in enumerate(passages, 1):
        if "Corvane Point" in passage.text:
            return {"rank": rank, "page": passage.page, "section": passage.section}
    return {"rank": None, "page": None, "section": None}
