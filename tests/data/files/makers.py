"""Real document files for the file-reader tests, generated on the spot: reportlab PDFs
(with or without an outline, image-only, encrypted, truncated), python-docx documents (with
headings and a table, and a zip bomb), an HTML page wrapped in boilerplate."""

from __future__ import annotations

import io
import zipfile

from rayrag.bench.files import BOILERPLATE, PLANTED, make_html, visible_text

__all__ = ["BOILERPLATE", "PLANTED", "make_html", "visible_text"]

PDF_PAGES = [
    (
        "Harbour Operations",
        [
            "This manual describes how the harbour is run from day to day.",
            "Pilots board arriving ships two miles outside the breakwater.",
        ],
    ),
    (
        "Tides and Berths",
        [
            "Berths one to four take ships of up to twelve metres draught.",
            "Spring tides close the lower quay for two hours each time.",
        ],
    ),
    (
        "Navigation Lights",
        [
            "Every light on the approach is checked by the night crew.",
            PLANTED,
            "Buoys on the eastern channel carry red lights.",
        ],
    ),
    (
        "Cargo Handling",
        [
            "Grain and timber are shipped to the inland mills by rail.",
            "Containers are stacked at most five high on the north apron.",
        ],
    ),
]


def make_pdf(
    pages: list[tuple[str, list[str]]] | None = None, *, outline: bool = True, title: str = ""
) -> bytes:
    """A text PDF, one page per (heading, paragraphs): headings in an 18 pt bold face over
    11 pt body text; with `outline`, one bookmark per heading."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    pages = PDF_PAGES if pages is None else pages
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    if title:
        pdf.setTitle(title)
    for number, (heading, paragraphs) in enumerate(pages, 1):
        y = 780
        pdf.setFont("Helvetica-Bold", 18)
        pdf.drawString(72, y, heading)
        if outline:
            key = f"p{number}"
            pdf.bookmarkPage(key)
            pdf.addOutlineEntry(heading, key, level=0)
        pdf.setFont("Helvetica", 11)
        for paragraph in paragraphs:
            y -= 28
            pdf.drawString(72, y, paragraph)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def image_only_pdf() -> bytes:
    """A PDF of drawings only: pages, but no text layer (a scan looks like this)."""
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    for _ in range(2):
        pdf.rect(100, 100, 300, 400, fill=1)
        pdf.line(50, 50, 500, 700)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def encrypted_pdf() -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(make_pdf())).pages:
        writer.add_page(page)
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def truncated_pdf() -> bytes:
    data = make_pdf()
    return data[: len(data) // 2]


def make_docx(title: str = "Pump Maintenance") -> bytes:
    """A Word document: a title, two heading levels, paragraphs and a 3x3 table between
    them."""
    import docx

    document = docx.Document()
    document.add_heading(title, 0)
    document.add_heading("Safety", 1)
    document.add_paragraph("Isolate the pump electrically before opening the casing.")
    document.add_heading("Checks", 2)
    document.add_paragraph("Inspect the impeller for cavitation damage every quarter.")
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate(
        [
            ["Part", "Interval", "Owner"],
            ["Seal", "6 months", "Fitter"],
            ["Bearing", "12 months", "Engineer"],
        ]
    ):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_heading("Records", 1)
    document.add_paragraph("Every inspection is logged in the plant register.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb_docx(inflated: int = 30_000_000) -> bytes:
    """A real .docx with one extra member of `inflated` zero bytes (deflates ~1000:1)."""
    source = zipfile.ZipFile(io.BytesIO(make_docx()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        for info in source.infolist():
            bomb.writestr(info, source.read(info))
        bomb.writestr("word/media/padding.bin", b"\0" * inflated)
    return out.getvalue()


SIDECAR_ACL = ["harbour-ops"]
RULE_ACL = ["hr"]


def make_corpus_folder(root, *, max_file_bytes: int) -> dict[str, str]:
    """A folder with every supported format, sidecars, a rule file and every bad kind of file.
    Returns the expected quarantine reason per bad file."""
    from pathlib import Path

    root = Path(root)
    (root / "reports").mkdir(parents=True)
    (root / "restricted").mkdir()
    (root / "manual.pdf").write_bytes(make_pdf(title="Harbour Manual"))
    (root / "manual.pdf.meta.json").write_text(
        '{"acl": ["harbour-ops"], "metadata": {"dept": "harbour", "year": 2026}}'
    )
    (root / "reports" / "fonts.pdf").write_bytes(
        make_pdf([("Quarterly Report", ["Revenue rose by a tenth."])], outline=False)
    )
    (root / "ferry.html").write_text(make_html())
    (root / "pump.docx").write_bytes(make_docx())
    (root / "guide.md").write_text("# Guide\nIntro.\n## Install\nSteps here.\n### Linux\nApt.\n")
    (root / "readme.txt").write_text("Plain text about the harbour office hours.\n")
    (root / ".rayrag.json").write_text(
        '{"metadata": {"source": "file-test"}, '
        '"rules": [{"glob": "restricted/*", "acl": ["hr"], "metadata": {"tier": "secret"}}]}'
    )
    (root / "restricted" / "salaries.md").write_text("# Salaries\nThe pay scale has five bands.\n")
    bad = {
        "locked.pdf": (encrypted_pdf(), "encrypted PDF (a password is needed to read it)"),
        "broken.pdf": (truncated_pdf(), "truncated PDF (no end-of-file marker)"),
        "empty.txt": (b"", "file is empty"),
        "scan.pdf": (image_only_pdf(), "no text layer; OCR is not supported"),
        "big.txt": (
            b"harbour " * (max_file_bytes // 8 + 100),
            f"file is {8 * (max_file_bytes // 8 + 100)} bytes, more than "
            f"max_file_bytes={max_file_bytes}",
        ),
        "bomb.docx": (zip_bomb_docx(), None),
        "fake.pdf": (make_docx(), "extension .pdf does not match the content (a Word document)"),
        "binary.html": (
            bytes(range(256)) * 8,
            "extension .html does not match the content (binary data)",
        ),
        "slides.pptx": (b"PK\x03\x04 whatever", "unsupported file type .pptx"),
        "odd.md": (b"# Odd\nFine text with a broken sidecar.\n", None),
    }
    for name, (data, _) in bad.items():
        (root / name).write_bytes(data)
    (root / "odd.md.meta.json").write_text('{"acl": "everyone"}')
    reasons = {name: reason for name, (_, reason) in bad.items()}
    reasons["bomb.docx"] = "zip bomb: a member is compressed"  # prefix: the ratio follows
    reasons["odd.md"] = "malformed sidecar: 'acl' must be a non-empty list of group names"
    return reasons
