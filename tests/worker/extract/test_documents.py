"""The generators other tests, the demo and the bench rely on: deterministic, and what they say."""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from zopilot_worker.extract import Extractor
from zopilot_worker.testing.documents import make_scanned_pdf, make_text_pdf, sample_corpus

KEYWORDS = {
    "invoice": "Invoice number",
    "receipt": "Thank you for your purchase",
    "contract": "Governing law",
}


def test_sample_corpus_is_deterministic_mixed_and_extractable(
    tmp_path: Path, extractor: Extractor
) -> None:
    first = sample_corpus(tmp_path / "a")
    second = sample_corpus(tmp_path / "b", n_invoices=3, n_receipts=3, n_contracts=3)
    assert [p.name for p in first] == [p.name for p in second]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))
    assert Counter(p.name.split("-")[0] for p in first) == {
        "invoice": 3,
        "receipt": 3,
        "contract": 3,
    }
    assert {p.suffix for p in first} == {".pdf", ".docx", ".xlsx", ".txt", ".html"}
    for path in first:
        doc = extractor.extract(path.read_bytes(), path.name)
        label = path.name.split("-")[0]
        assert KEYWORDS[label] in doc.text, (path.name, doc.text[:200])
        assert doc.ocr_pending == () and doc.warnings == ()


def test_text_and_scanned_pdfs_differ_only_in_the_text_layer(extractor: Extractor) -> None:
    text = extractor.extract(make_text_pdf(["Same words"]), "t.pdf")
    scan = extractor.extract(make_scanned_pdf(["Same words"]), "s.pdf")
    assert text.text == "Same words" and scan.text == "" and scan.pages == text.pages == 1


@pytest.mark.parametrize("name", ["ok.docx", "broken.docx"])
def test_temporary_files_are_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, extractor: Extractor, name: str
) -> None:
    from zopilot_worker.errors import CorruptDocument
    from zopilot_worker.testing.documents import make_docx

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    if name == "ok.docx":
        extractor.extract(make_docx(None, "T", ["p"]), name)
    else:  # passes the zip guard, then python-docx fails inside docstrange
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("[Content_Types].xml", "<Types/>")
            zf.writestr("word/document.xml", "<document/>")
        with pytest.raises(CorruptDocument):
            extractor.extract(buf.getvalue(), name)
    assert list(tmp_path.iterdir()) == []
