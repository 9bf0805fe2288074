"""Hostile and broken inputs: each raises the right WorkerError, fast, with bounded memory."""

from __future__ import annotations

import io
import time
import tracemalloc
import zipfile

import pytest
from zopilot_worker.errors import (
    BadRequest,
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    UnsupportedDocumentType,
    WorkerError,
)
from zopilot_worker.extract import Extractor, ExtractSettings
from zopilot_worker.testing.documents import (
    make_corrupt_pdf,
    make_docx,
    make_pptx,
    make_text_pdf,
    make_xlsx,
    make_zip_bomb_docx,
)


def _raises(
    extractor: Extractor,
    data: bytes,
    name: str,
    error: type[WorkerError],
    content_type: str | None = None,
) -> WorkerError:
    start = time.perf_counter()
    with pytest.raises(error) as info:
        extractor.extract(data, name, content_type)
    assert time.perf_counter() - start < 2.0, "hostile input must be refused fast"
    assert info.value.public_message and "/tmp" not in info.value.public_message
    return info.value


def test_empty_file(extractor: Extractor) -> None:
    _raises(extractor, b"", "empty.pdf", EmptyDocument)


def test_oversize_is_refused_before_parsing() -> None:
    small = Extractor(ExtractSettings(max_bytes=1000))
    err = _raises(small, make_text_pdf(["x" * 5000]), "big.pdf", DocumentTooLarge)
    assert "limit is 1000" in err.public_message


def test_too_many_pdf_pages() -> None:
    err = _raises(
        Extractor(ExtractSettings(max_pages=2)),
        make_text_pdf(["a", "b", "c"]),
        "long.pdf",
        DocumentTooLarge,
    )
    assert "3 pages" in err.public_message


def test_too_many_slides_is_refused_before_parsing() -> None:
    deck = make_pptx(None, [("a", "1"), ("b", "2"), ("c", "3")])
    err = _raises(Extractor(ExtractSettings(max_pages=2)), deck, "deck.pptx", DocumentTooLarge)
    assert "3 slides" in err.public_message


def test_password_protected_pdf(extractor: Extractor) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_text_pdf(["secret"]))))
    writer.encrypt(user_password="s3cret", algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    err = _raises(extractor, buf.getvalue(), "locked.pdf", CorruptDocument)
    assert "password-protected" in err.public_message


def test_corrupt_pdf(extractor: Extractor) -> None:
    _raises(extractor, make_corrupt_pdf(), "broken.pdf", CorruptDocument)


def test_truncated_docx(extractor: Extractor) -> None:
    data = make_docx(None, "T", ["p"])
    _raises(extractor, data[: len(data) // 2], "half.docx", CorruptDocument)


def _rezip(data: bytes, replace: dict[str, bytes]) -> bytes:
    """The zip with some entries' contents replaced (every name must exist)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        assert set(replace) <= set(src.namelist())
        for info in src.infolist():
            dst.writestr(info.filename, replace.get(info.filename, src.read(info)))
    return out.getvalue()


def test_docx_whose_xml_is_garbage(extractor: Extractor) -> None:
    data = _rezip(make_docx(None, "T", ["p"]), {"word/document.xml": b"<<< not xml"})
    _raises(extractor, data, "bad.docx", CorruptDocument)


def test_docx_that_is_not_a_word_package(extractor: Extractor) -> None:
    # Well-formed XML that passes the guard: python-docx (inside docstrange) refuses it.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", "<document/>")
    _raises(extractor, buf.getvalue(), "bad.docx", CorruptDocument)


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10 if i > 1 else b"&lol;" * 10)
        for i in range(1, 10)
    )
    + b']><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/'
    b'main"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>&lol9;</t></is>'
    b"</c></row></sheetData></worksheet>"
)


def test_xml_entity_bomb_in_xlsx_is_refused_before_parsing(extractor: Extractor) -> None:
    xlsx = make_xlsx(None, {"S": [["word"]]})
    data = _rezip(xlsx, {"xl/worksheets/sheet1.xml": BILLION_LAUGHS})
    err = _raises(extractor, data, "lol.xlsx", CorruptDocument)
    assert "DTD" in err.public_message


def test_external_entity_in_docx_is_refused(extractor: Extractor) -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        b"<w:body><w:p><w:r><w:t>&x;</w:t></w:r></w:p></w:body></w:document>"
    )
    data = _rezip(make_docx(None, "T", ["p"]), {"word/document.xml": xxe})
    _raises(extractor, data, "xxe.docx", CorruptDocument)


def test_zip_bomb_docx_fails_fast_with_bounded_memory(extractor: Extractor) -> None:
    bomb = make_zip_bomb_docx()  # ~0.3 MB that inflates to 256 MiB
    tracemalloc.start()
    try:
        err = _raises(extractor, bomb, "bomb.docx", CorruptDocument)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "zip bomb" in err.public_message
    assert peak < 8 * 2**20, f"peak {peak} bytes: something inflated the bomb"


def test_zip_bomb_by_total_size() -> None:
    tight = Extractor(ExtractSettings(max_uncompressed_bytes=1000))
    err = _raises(tight, make_xlsx(None, {"S": [["a"]]}), "s.xlsx", CorruptDocument)
    assert "inflates to" in err.public_message and "(limit 1000 bytes)" in err.public_message


def test_elf_named_pdf(extractor: Extractor) -> None:
    elf = b"\x7fELF\x02\x01\x01\x00" + bytes(120)
    err = _raises(extractor, elf, "invoice.pdf", UnsupportedDocumentType, "application/pdf")
    assert "ELF executable" in err.public_message


def test_windows_exe_named_pdf(extractor: Extractor) -> None:
    exe = b"MZ\x90\x00\x03\x00\x00\x00" + bytes(120)
    _raises(extractor, exe, "invoice.pdf", UnsupportedDocumentType)


def test_content_type_mismatch(extractor: Extractor) -> None:
    err = _raises(
        extractor,
        make_text_pdf(["hi"]),
        "a.pdf",
        UnsupportedDocumentType,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    )
    assert "content is PDF" in err.public_message and "says DOCX" in err.public_message


def test_extension_mismatch(extractor: Extractor) -> None:
    _raises(extractor, make_docx(None, "T", ["p"]), "report.pdf", UnsupportedDocumentType)


def test_plain_zip_is_not_a_document(extractor: Extractor) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hello.txt", "hi")
    _raises(extractor, buf.getvalue(), "x.docx", UnsupportedDocumentType)


def test_unknown_binary(extractor: Extractor) -> None:
    _raises(extractor, bytes(range(256)) * 4, "blob", UnsupportedDocumentType)


def test_unsupported_content_type(extractor: Extractor) -> None:
    _raises(extractor, b"hello", "a.txt", UnsupportedDocumentType, "image/png")


def test_bad_ocr_mode(extractor: Extractor) -> None:
    with pytest.raises(BadRequest):
        extractor.extract(b"hello", "a.txt", ocr="sometimes")  # type: ignore[arg-type]


def test_encrypted_zip_entry(extractor: Extractor) -> None:
    data = bytearray(make_docx(None, "T", ["p"]))
    # Set the "encrypted" flag bit of every central-directory entry.
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        data[pos + 8] |= 0x1
        pos = data.find(b"PK\x01\x02", pos + 4)
    err = _raises(extractor, bytes(data), "locked.docx", CorruptDocument)
    assert "encrypted" in err.public_message
