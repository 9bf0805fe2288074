"""detect_kind: magic bytes decide, declarations may confirm (table-driven)."""

from __future__ import annotations

import pytest
from zopilot_worker.errors import UnsupportedDocumentType
from zopilot_worker.extract import SUPPORTED_EXTENSIONS, SUPPORTED_TYPES, detect_kind
from zopilot_worker.testing.documents import (
    make_docx,
    make_html,
    make_minimal_pdf,
    make_pptx,
    make_xlsx,
)

DOCX_CT = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PDF = make_minimal_pdf("hello")
DOCX = make_docx(None, "T", ["p"])
HTML = make_html(None, "T", ["p"])


@pytest.mark.parametrize(
    ("data", "filename", "content_type", "kind"),
    [
        (PDF, "a.pdf", "application/pdf", "pdf"),
        (PDF, "upload", None, "pdf"),  # no hints at all: the bytes decide
        (PDF, "a.bin", "application/octet-stream", "pdf"),  # generic declarations ignored
        (b"junk\n" * 10 + PDF, "a.pdf", None, "pdf"),  # header within the first KiB
        (DOCX, "a.docx", DOCX_CT, "docx"),
        (DOCX, "a", "application/zip", "docx"),  # some clients label OOXML as zip
        (make_pptx(None, [("t", "b")]), "deck", None, "pptx"),
        (make_xlsx(None, {"S": [["a"]]}), "BOOK.XLSX", None, "xlsx"),
        (HTML, "page", None, "html"),
        (HTML, "page.txt", None, "text"),  # markup declared as text stays text
        (b"just words", "a.html", None, "html"),  # text declared as HTML is HTML
        (b"just words", "notes", "text/plain; charset=utf-8", "text"),
        (b"<!-- c --><html><body>x</body></html>", "x", None, "html"),
        (b"a,b\n1,2\n", "data.csv", "text/csv", "text"),
        (b"MZ is a fine start for a text", "memo", None, "text"),  # no NUL: not an EXE
    ],
)
def test_detect(data: bytes, filename: str, content_type: str | None, kind: str) -> None:
    assert detect_kind(data, filename, content_type) == kind


@pytest.mark.parametrize(
    ("data", "filename", "content_type", "message"),
    [
        (b"\x7fELF\x02\x01" + bytes(50), "a.pdf", None, "ELF executable"),
        (b"\x89PNG\r\n\x1a\n" + bytes(50), "scan.png", None, "PNG image"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(50), "old.doc", None, "legacy Office"),
        (PDF, "a.docx", None, "file name says DOCX"),
        (PDF, "a.pdf", DOCX_CT, "content type says DOCX"),
        (DOCX, "a.docx", "application/pdf", "content is DOCX"),
        (HTML, "a.html", "application/pdf", "content is text"),
        (PDF, "a.pdf", "application/zip", "content type says"),
        (b"PK\x03\x04 broken zip", "a", None, "unreadable ZIP"),
        (bytes(100), "zeros.txt", None, "not a supported document"),
        (b"hi", "a.txt", "image/jpeg", "Content type 'image/jpeg' is not supported"),
    ],
)
def test_refused(data: bytes, filename: str, content_type: str | None, message: str) -> None:
    with pytest.raises(UnsupportedDocumentType, match=message):
        detect_kind(data, filename, content_type)


def test_damaged_zip_declared_as_ooxml_is_left_to_the_guard() -> None:
    # Detection trusts the declaration; extract() then reports CorruptDocument.
    assert detect_kind(b"PK\x03\x04 broken zip", "a.xlsx", None) == "xlsx"


def test_maps_cover_every_kind() -> None:
    kinds = {"pdf", "docx", "pptx", "xlsx", "html", "text"}
    assert set(SUPPORTED_TYPES.values()) == kinds == set(SUPPORTED_EXTENSIONS.values())
