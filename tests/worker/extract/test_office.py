"""DOCX/XLSX/PPTX/HTML/text through the real docstrange processors: the words we put in come out."""

from __future__ import annotations

import re

import pytest
from zopilot_worker.extract import Extractor
from zopilot_worker.testing.documents import make_docx, make_html, make_pptx, make_xlsx

TABLE = [["Item", "Quantity", "Price"], ["Widget", 3, "12.50"], ["Gadget", 7, "4.20"]]


def _has_markdown_table(markdown: str, header: list[str]) -> bool:
    head = re.escape("| " + " | ".join(header) + " |")
    return re.search(head + r"\n\| --- \| --- \| --- \|\n", markdown) is not None


def test_docx_paragraphs_heading_and_table(extractor: Extractor) -> None:
    data = make_docx(
        None,
        "Supply Agreement",
        ["The supplier delivers quarterly.", "Payment is due in thirty days."],
        TABLE,
    )
    doc = extractor.extract(data, "agreement.docx")
    assert (doc.kind, doc.engine, doc.pages) == ("docx", "docstrange.DOCXProcessor", 1)
    assert doc.markdown.startswith("# Supply Agreement")
    assert "The supplier delivers quarterly." in doc.markdown
    assert _has_markdown_table(doc.markdown, ["Item", "Quantity", "Price"])
    assert "| Widget | 3 | 12.50 |" in doc.markdown
    assert "### Table 1" in doc.markdown  # docstrange's own heading, repaired (see office.py)
    assert "Payment is due in thirty days." in doc.text
    assert "Widget\t3\t12.50" in doc.text and "|" not in doc.text
    assert doc.ocr_pages == doc.ocr_pending == () and doc.warnings == ()


def test_docx_long_table_truncation_is_reported(extractor: Extractor) -> None:
    rows = [["n", "square"]] + [[i, i * i] for i in range(30)]
    doc = extractor.extract(make_docx(None, "Squares", ["A long table."], rows), "squares.docx")
    assert "| 18 | 324 |" in doc.markdown and "| 25 | 625 |" not in doc.markdown
    assert doc.warnings == ("Table truncated by docstrange to its first 20 of 31 rows.",)


def test_xlsx_every_sheet_as_markdown_table(extractor: Extractor) -> None:
    data = make_xlsx(None, {"Invoices": TABLE, "Empty": [], "Totals": [["Sum"], [29.9]]})
    doc = extractor.extract(data, "book.xlsx")
    assert (doc.kind, doc.engine, doc.pages) == ("xlsx", "docstrange.ExcelProcessor", 3)
    assert "## Sheet: Invoices" in doc.markdown and "## Sheet: Totals" in doc.markdown
    assert "Sheet: Empty" not in doc.markdown  # docstrange skips empty sheets
    assert _has_markdown_table(doc.markdown, ["Item", "Quantity", "Price"])
    # pandas (under docstrange) reads numeric-looking cells as numbers: "4.20" -> 4.2.
    assert "| Gadget | 7 | 4.2 |" in doc.markdown
    assert "Gadget\t7\t4.2" in doc.text


def test_pptx_slides(extractor: Extractor) -> None:
    data = make_pptx(None, [("Roadmap 2025", "Ship the worker doctor"), ("Risks", "NumPy ABI")])
    doc = extractor.extract(data, "deck.pptx")
    assert (doc.kind, doc.engine, doc.pages) == ("pptx", "docstrange.PPTXProcessor", 2)
    assert re.search(r"## Slide 1\nRoadmap 2025\nShip the worker doctor", doc.markdown)
    assert "## Slide 2" in doc.markdown and "NumPy ABI" in doc.text


def test_html_to_markdown(extractor: Extractor) -> None:
    data = make_html(None, "Receipt 42", ["Thank you for shopping & saving."], TABLE)
    doc = extractor.extract(data, "receipt.html", "text/html; charset=utf-8")
    assert (doc.kind, doc.engine) == ("html", "docstrange.HTMLProcessor")
    assert "# Receipt 42" in doc.markdown
    assert "Thank you for shopping & saving." in doc.markdown
    assert _has_markdown_table(doc.markdown, ["Item", "Quantity", "Price"])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("Grüße aus Zürich\nZeile zwei\n".encode(), "Grüße aus Zürich\nZeile zwei"),
        ("\ufeffUTF-8 with BOM: café".encode(), "UTF-8 with BOM: café"),
        ("UTF-16 with BOM: café".encode("utf-16"), "UTF-16 with BOM: café"),
        ("cp1252: café \u2013 5 €".encode("cp1252"), "cp1252: café \u2013 5 €"),
    ],
)
def test_text_encodings(extractor: Extractor, data: bytes, expected: str) -> None:
    doc = extractor.extract(data, "note.txt")
    assert (doc.kind, doc.engine) == ("text", "docstrange.TXTProcessor")
    assert doc.text == doc.markdown == expected


def test_html_encoded_as_cp1252(extractor: Extractor) -> None:
    doc = extractor.extract(
        "<html><body><p>Preis: 5 €</p></body></html>".encode("cp1252"), "p.html"
    )
    assert "Preis: 5 €" in doc.text  # docstrange alone would fail: it reads HTML as strict UTF-8


def test_whitespace_only_text_is_extracted_with_a_warning(extractor: Extractor) -> None:
    doc = extractor.extract(b" \n\t\n", "blank.txt")
    assert doc.text == "" and doc.warnings == ("No text was found in the document.",)
