"""HTML pages: the main text without navigation, header, footer or cookie banners
(trafilatura's extraction), its headings kept as section paths; the title from the page.

trafilatura writes the main content as Markdown (`#` per heading level), which the Markdown
parser then turns into sections, so both formats share one notion of a heading path."""

from __future__ import annotations

from rayrag.data.files.markdown import decode_text, parse_markdown_text
from rayrag.data.files.parsed import FileRejected, ParsedFile


def parse_html(data: bytes) -> ParsedFile:
    """An HTML page's bytes -> its main text with a section per heading, and its title."""
    import trafilatura

    try:
        page = decode_text(data)
    except FileRejected:
        page = data.decode("latin-1")  # legacy pages: lxml reads the declared charset anyway
    if not page.strip():
        raise FileRejected("file is empty")
    try:
        main = trafilatura.extract(
            page,
            output_format="markdown",
            include_formatting=True,
            include_comments=False,
            include_tables=True,
            include_images=False,
            include_links=False,
            deduplicate=False,
        )
        meta = trafilatura.extract_metadata(page)
    except Exception:  # noqa: BLE001 - lxml's errors quote the markup: report a fixed reason
        raise FileRejected("corrupt HTML (the page cannot be parsed)") from None
    if not main or not main.strip():
        raise FileRejected("no main text found in the HTML page")
    parsed = parse_markdown_text(main, kind="html")
    title = (meta.title if meta is not None else None) or parsed.title
    return ParsedFile(title.strip() if title else None, parsed.text, parsed.layout, "html")
