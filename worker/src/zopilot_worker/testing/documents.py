"""Document generators for tests, the demo and the benchmarks.

Every generator returns the document's bytes (and writes them to ``path`` when
one is given). Output is deterministic: dates are pinned and OOXML zips are
rewritten with fixed timestamps, so the same call gives the same bytes.

Only stdlib, Pillow, python-docx/pptx and openpyxl are imported at module
level (all runtime dependencies of the worker, so ``doctor`` can use
``make_docx``/``make_xlsx``/``make_minimal_pdf`` in the image); fpdf2 is a dev
dependency and is imported inside the functions that need it.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import io
import random
import re
import zipfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

FIXED_TIME = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
_ZIP_TIME = (2024, 1, 2, 3, 4, 4)  # zip timestamps have 2 s resolution
Table = Sequence[Sequence[object]]


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED  # a bare ZipInfo defaults to STORED
    return info


def _finish(data: bytes, path: Path | str | None) -> bytes:
    if path is not None:
        Path(path).write_bytes(data)
    return data


# openpyxl stamps <dcterms:modified> with the time of saving, whatever the
# workbook's properties say; pin it like the zip entry times.
_MODIFIED = re.compile(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)")


def _normalize_zip(data: bytes) -> bytes:
    """Rewrite a zip with fixed entry timestamps and core-properties dates
    (python-docx & co stamp 'now')."""
    stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = src.read(info)
            if info.filename == "docProps/core.xml":
                content = _MODIFIED.sub(rb"\g<1>" + stamp + rb"\g<2>", content)
            dst.writestr(_zip_info(info.filename), content)
    return out.getvalue()


def make_docx(
    path: Path | str | None, title: str, paragraphs: Sequence[str], table: Table | None = None
) -> bytes:
    """A DOCX with a level-1 heading, body paragraphs and an optional table (first row = header)."""
    import docx

    document = docx.Document()
    props = document.core_properties
    props.created = props.modified = FIXED_TIME.replace(tzinfo=None)
    props.author = props.last_modified_by = "zopilot-testing"
    document.add_heading(title, level=1)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=max(len(row) for row in table))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = str(value)
    buf = io.BytesIO()
    document.save(buf)
    return _finish(_normalize_zip(buf.getvalue()), path)


def make_xlsx(path: Path | str | None, sheets: Mapping[str, Table]) -> bytes:
    """An XLSX with one worksheet per entry; each sheet's first row is its header."""
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    workbook.properties.created = workbook.properties.modified = FIXED_TIME.replace(tzinfo=None)
    workbook.properties.creator = "zopilot-testing"
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(title=name)
        for row in rows:
            sheet.append(list(row))
    buf = io.BytesIO()
    workbook.save(buf)
    return _finish(_normalize_zip(buf.getvalue()), path)


def make_pptx(path: Path | str | None, slides: Sequence[tuple[str, str]]) -> bytes:
    """A PPTX with one 'Title and Content' slide per (title, body) pair."""
    import pptx

    deck = pptx.Presentation()
    deck.core_properties.created = deck.core_properties.modified = FIXED_TIME.replace(tzinfo=None)
    layout = deck.slide_layouts[1]
    for title, body in slides:
        slide = deck.slides.add_slide(layout)
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    buf = io.BytesIO()
    deck.save(buf)
    return _finish(_normalize_zip(buf.getvalue()), path)


def make_html(
    path: Path | str | None, title: str, paragraphs: Sequence[str], table: Table | None = None
) -> bytes:
    """A small UTF-8 HTML page: <h1>, <p>s and an optional <table> with a header row."""
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{esc(title)}</title>"]
    parts.append(f"</head><body>\n<h1>{esc(title)}</h1>\n")
    parts += [f"<p>{esc(p)}</p>\n" for p in paragraphs]
    if table:
        head, *rows = table
        parts.append("<table>\n<tr>" + "".join(f"<th>{esc(str(v))}</th>" for v in head) + "</tr>\n")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>\n")
        parts.append("</table>\n")
    parts.append("</body></html>\n")
    return _finish("".join(parts).encode("utf-8"), path)


def _pdf_latin1(text: str) -> str:
    # The PDF core fonts (Helvetica) only cover latin-1.
    return text.encode("latin-1", "replace").decode("latin-1")


def _new_fpdf() -> Any:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_TIME)
    pdf.set_producer("zopilot-testing")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_font("Helvetica", size=11)
    return pdf


def make_text_pdf(pages: Sequence[str]) -> bytes:
    """A born-digital PDF (fpdf2, text layer) with one page per string (long text may overflow)."""
    return make_mixed_pdf(pages, scanned=())


def render_page_image(text: str, dpi: int = 100) -> Image.Image:
    """The text drawn on a white A4 page image (what a scanner would produce, minus the noise)."""
    width, height = round(8.27 * dpi), round(11.69 * dpi)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=dpi // 5)
    margin, y = dpi // 2, dpi // 2
    for line in text.splitlines() or [""]:
        draw.text((margin, y), line, fill=0, font=font)
        y += round(dpi // 5 * 1.4)
    return image


def make_scanned_pdf(pages: Sequence[str], dpi: int = 100) -> bytes:
    """An image-only PDF (no text layer): each page's text rendered into a bitmap with PIL."""
    images = [render_page_image(text, dpi) for text in pages]
    buf = io.BytesIO()
    stamp = FIXED_TIME.timetuple()
    images[0].save(
        buf,
        "PDF",
        resolution=float(dpi),
        save_all=True,
        append_images=images[1:],
        creationDate=stamp,
        modDate=stamp,
        producer="zopilot-testing",
    )
    return buf.getvalue()


def make_mixed_pdf(pages: Sequence[str], scanned: Collection[int] = (2,)) -> bytes:
    """A PDF whose pages listed in ``scanned`` (1-based) are images, the others text."""
    pdf = _new_fpdf()
    for number, text in enumerate(pages, start=1):
        pdf.add_page()
        if number in scanned:
            pdf.image(render_page_image(text), x=0, y=0, w=pdf.w, h=pdf.h)
        else:
            pdf.multi_cell(0, 6, _pdf_latin1(text))
    return bytes(pdf.output())


def make_minimal_pdf(text: str) -> bytes:
    """A one-page text PDF written by hand (no fpdf2), e.g. for ``doctor`` in the runtime image."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 12 Tf 72 720 Td ({_pdf_latin1(escaped)}) Tj ET".encode("latin-1")
    objects = [
        b"<</Type/Catalog/Pages 2 0 R>>",
        b"<</Type/Pages/Kids[3 0 R]/Count 1>>",
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]"
        b"/Resources<</Font<</F1 4 0 R>>>>/Contents 5 0 R>>",
        b"<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>",
        b"<</Length %d>>stream\n%s\nendstream" % (len(stream), stream),
    ]
    return pdf_from_objects(objects)


def pdf_from_objects(objects: list[bytes], version: bytes = b"1.4") -> bytes:
    """A PDF of objects 1..n (1: the catalog) with a correct xref table."""
    out = bytearray(b"%PDF-" + version + b"\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def make_corrupt_pdf() -> bytes:
    """A PDF header followed by bytes that are no PDF structure at all."""
    return b"%PDF-1.7\n" + bytes((i * 37 + 11) % 256 for i in range(4096))


@functools.lru_cache(maxsize=2)
def make_zip_bomb_docx(uncompressed_mib: int = 256) -> bytes:
    """A ~0.3 MB DOCX whose word/document.xml really inflates to ``uncompressed_mib`` MiB.

    A real bomb, not a lying header: a parser that skipped the guard would load
    it. Cached, since building it takes ~1 s.
    """
    content_types = (
        b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/'
        b'package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/>'
        b"</Types>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(_zip_info("[Content_Types].xml"), content_types)
        with zf.open(_zip_info("word/document.xml"), "w", force_zip64=True) as f:
            f.write(b'<?xml version="1.0"?><w:document xmlns:w="urn:w"><w:body>')
            chunk = b" " * (1 << 20)
            for _ in range(uncompressed_mib):
                f.write(chunk)
            f.write(b"</w:body></w:document>")
    return out.getvalue()


_CUSTOMERS = ("Acme Logistics GmbH", "Blue Harbor Foods Ltd", "Northwind Traders", "Kestrel Labs")
_ITEMS = ("Consulting hours", "Cloud hosting", "Support plan", "Hardware rental", "Training day")


def _invoice(i: int) -> tuple[str, list[str], list[list[object]]]:
    rng = _rng("invoice", i)
    lines = [[item, rng.randint(1, 9), rng.randint(20, 400)] for item in rng.sample(_ITEMS, 3)]
    total = sum(int(str(q)) * int(str(p)) for _, q, p in lines)
    body = [
        f"Invoice number: INV-2024-{1000 + i}",
        f"Bill to: {rng.choice(_CUSTOMERS)}",
        f"Invoice date: 2024-03-{1 + i % 28:02d}; payment due within 30 days.",
        f"Amount due: EUR {total:.2f} (VAT included). Please pay by bank transfer, IBAN DE89 3704.",
    ]
    return "INVOICE", body, [["Description", "Quantity", "Unit price EUR"], *lines]


def _receipt(i: int) -> tuple[str, list[str], list[list[object]]]:
    rng = _rng("receipt", i)
    shop_items = rng.sample(("Coffee", "Sandwich", "Notebook", "Taxi fare", "Parking"), 2)
    items: list[list[object]] = [
        [item, f"{rng.randint(2, 60)}.{rng.randint(0, 99):02d}"] for item in shop_items
    ]
    body = [
        f"Receipt no. R-{5000 + i} - {rng.choice(('Cafe Central', 'City Taxi', 'Paper & Co'))}",
        f"Paid by card ending {rng.randint(1000, 9999)} on 2024-04-{1 + i % 28:02d}.",
        "Thank you for your purchase. This receipt is your proof of payment.",
    ]
    return "RECEIPT", body, [["Item", "Paid EUR"], *items]


def _contract(i: int) -> tuple[str, list[str], list[list[object]]]:
    rng = _rng("contract", i)
    party = rng.choice(_CUSTOMERS)
    body = [
        f"This Services Agreement (the Agreement) is entered into between {party} and "
        "Zopilot Services AG (the Provider), effective 2024-01-01.",
        f"1. Term. The Agreement runs for {rng.choice((12, 24, 36))} months and renews "
        "automatically unless terminated with 90 days written notice.",
        "2. Confidentiality. Each party shall keep the other party's information confidential.",
        "3. Governing law. This Agreement is governed by the laws of Switzerland.",
        "Signed by the authorised representatives of both parties.",
    ]
    return "SERVICES AGREEMENT", body, [["Party", "Signatory"], [party, "Director"]]


def _rng(kind: str, i: int) -> random.Random:
    return random.Random(f"{kind}-{i}")  # str seeds are deterministic across runs


def _write(path: Path, title: str, body: list[str], table: list[list[object]]) -> None:
    ext = path.suffix
    if ext == ".pdf":
        rows = ["  ".join(str(v) for v in row) for row in table]
        path.write_bytes(make_text_pdf(["\n".join([title, "", *body, "", *rows])]))
    elif ext == ".docx":
        make_docx(path, title, body, table)
    elif ext == ".html":
        make_html(path, title, body, table)
    elif ext == ".xlsx":
        fields = [line.split(": ", 1) if ": " in line else [line, ""] for line in body]
        make_xlsx(
            path, {"Summary": [["Field", "Value"], ["Document", title], *fields], "Lines": table}
        )
    else:
        rows = ["\t".join(str(v) for v in row) for row in table]
        path.write_text("\n".join([title, "", *body, "", *rows]) + "\n", encoding="utf-8")


def sample_corpus(
    dest: Path, n_invoices: int = 3, n_receipts: int = 3, n_contracts: int = 3
) -> list[Path]:
    """Write realistic-looking invoices, receipts and contracts in mixed formats; return the paths.

    Deterministic: names, formats and contents depend only on the counts. The
    label is the file-name prefix (``invoice-001.pdf``), which tests use as truth.
    """
    plan = (
        ("invoice", n_invoices, _invoice, (".pdf", ".docx", ".xlsx")),
        ("receipt", n_receipts, _receipt, (".txt", ".html", ".pdf")),
        ("contract", n_contracts, _contract, (".docx", ".pdf", ".html")),
    )
    dest.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for label, count, build, formats in plan:
        for i in range(count):
            path = dest / f"{label}-{i + 1:03d}{formats[i % len(formats)]}"
            _write(path, *build(i))
            paths.append(path)
    return paths
