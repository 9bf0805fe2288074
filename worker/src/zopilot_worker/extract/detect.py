"""Document type detection: magic bytes first, the declared type second.

The bytes decide what a document is; the content type and file name may only
confirm it (or choose between HTML and plain text, which are both text). A
declaration that contradicts the bytes is refused rather than guessed around:
it usually means a client bug or a disguised file.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping
from pathlib import PurePosixPath
from types import MappingProxyType

from zopilot_worker.errors import UnsupportedDocumentType
from zopilot_worker.extract.ooxml import refuse_many_entries
from zopilot_worker.extract.schema import Kind

_OOXML = "application/vnd.openxmlformats-officedocument"
SUPPORTED_TYPES: Mapping[str, Kind] = MappingProxyType(
    {
        "application/pdf": "pdf",
        "application/x-pdf": "pdf",
        f"{_OOXML}.wordprocessingml.document": "docx",
        f"{_OOXML}.presentationml.presentation": "pptx",
        f"{_OOXML}.spreadsheetml.sheet": "xlsx",
        "text/html": "html",
        "application/xhtml+xml": "html",
        "text/plain": "text",
        "text/markdown": "text",
        "text/x-markdown": "text",
        "text/csv": "text",
        "text/tab-separated-values": "text",
    }
)
"""Content type (without parameters, lower case) → kind."""

SUPPORTED_EXTENSIONS: Mapping[str, Kind] = MappingProxyType(
    {
        ".pdf": "pdf",
        ".docx": "docx",
        ".pptx": "pptx",
        ".xlsx": "xlsx",
        ".html": "html",
        ".htm": "html",
        ".xhtml": "html",
        ".txt": "text",
        ".text": "text",
        ".md": "text",
        ".markdown": "text",
        ".csv": "text",
        ".tsv": "text",
        ".log": "text",
    }
)
"""File-name extension (lower case, with the dot) → kind."""

# Content types that say nothing about the format. application/zip: some
# clients label DOCX/PPTX/XLSX uploads so; the zip's contents decide then.
_GENERIC_TYPES = frozenset(
    {
        "",
        "application/octet-stream",
        "binary/octet-stream",
        "application/unknown",
        "application/download",
    }
)
_ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed"})
_OOXML_MARKERS: tuple[tuple[str, Kind], ...] = (
    ("word/document.xml", "docx"),
    ("ppt/presentation.xml", "pptx"),
    ("xl/workbook.xml", "xlsx"),
)
_LABELS = {
    "pdf": "PDF",
    "docx": "DOCX",
    "pptx": "PPTX",
    "xlsx": "XLSX",
    "html": "HTML",
    "text": "plain text",
}
_ACCEPTED = "PDF, DOCX, PPTX, XLSX, HTML or plain text"

# Formats we recognise only to name them in the refusal.
_FOREIGN: tuple[tuple[bytes, str], ...] = (
    (b"\x7fELF", "an ELF executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "a legacy Office file (.doc/.xls/.ppt); save it as DOCX/XLSX/PPTX",
    ),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"{\\rtf", "an RTF document"),
    (b"%!PS", "a PostScript file"),
)
# A PDF header may follow up to 1 KiB of junk (PDF 1.7, Annex H); PDFium agrees.
_PDF_HEADER_WINDOW = 1024
# How far into a text file the HTML markers are looked for (after a BOM).
_HTML_WINDOW = 4096
# What ``\s`` matched in the bytes pattern this replaced: ASCII whitespace.
_ASCII_SPACE = b" \t\n\r\x0b\x0c"
_HTML_TAGS = (b"html", b"head", b"body")
# One character class, no repetition: linear.
_BAD_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def _skip_space(text: bytes, pos: int) -> int:
    while pos < len(text) and text[pos] in _ASCII_SPACE:
        pos += 1
    return pos


def looks_like_html(data: bytes) -> bool:
    """Whether text starts, after whitespace and comments, with a doctype or html/head/body tag.

    A linear scan: the regular expression it replaces,
    ``^\\s*(<!--.*?-->\\s*)*<(!doctype\\s+html|html[\\s>]|...)``, backtracked
    exponentially on a run of comments that is not followed by a tag. A comment
    ends at its first ``-->``, as in HTML (the regex could also stretch it to a
    later one).
    """
    text = data[:_HTML_WINDOW].lstrip(b"\xef\xbb\xbf").lower()  # bytes: lowers ASCII only
    pos = _skip_space(text, 0)
    while text.startswith(b"<!--", pos):
        end = text.find(b"-->", pos + 4)
        if end == -1:
            return False
        pos = _skip_space(text, end + 3)
    if not text.startswith(b"<", pos):
        return False
    pos += 1
    if text.startswith(b"!doctype", pos):
        after = text[pos + 8 :]
        spaced = after.lstrip(_ASCII_SPACE)
        return len(spaced) < len(after) and spaced.startswith(b"html")
    for tag in _HTML_TAGS:
        if text.startswith(tag, pos):
            follow = text[pos + len(tag) : pos + len(tag) + 1]
            return bool(follow) and (follow in _ASCII_SPACE or follow == b">")
    return False


def decode_text(data: bytes) -> str | None:
    """The bytes as text (BOM-aware UTF-8/16, then cp1252/latin-1), or None if they look binary."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    else:
        for encoding in ("utf-8-sig", "cp1252", "latin-1"):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    # Text has next to no C0 control characters; binaries are full of them.
    sample = text[:65536]
    if "\x00" in sample or len(_BAD_CONTROL.findall(sample)) > len(sample) // 100:
        return None
    return text


def _ooxml_kind(data: bytes) -> Kind | None:
    """The OOXML kind named by the zip's entries; None if the zip cannot be read."""
    refuse_many_entries(data, "ZIP")  # before zipfile builds an object per entry
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return None
    for marker, kind in _OOXML_MARKERS:
        if marker in names:
            return kind
    raise UnsupportedDocumentType(
        f"The file is a ZIP archive but not a DOCX, PPTX or XLSX document; send {_ACCEPTED}."
    )


def _declared_type(content_type: str | None) -> tuple[Kind | None, bool]:
    """(kind named by the content type, whether it was the zip type)."""
    ct = (content_type or "").split(";", 1)[0].strip().lower()
    if ct in _GENERIC_TYPES:
        return None, False
    if ct in _ZIP_TYPES:
        return None, True
    if ct not in SUPPORTED_TYPES:
        raise UnsupportedDocumentType(
            f"Content type {ct[:100]!r} is not supported; send {_ACCEPTED}."
        )
    return SUPPORTED_TYPES[ct], False


def _mismatch(actual: str, what: str, declared: Kind) -> UnsupportedDocumentType:
    return UnsupportedDocumentType(
        f"The file's content is {actual} but its {what} says {_LABELS[declared]}; "
        "send the document with a matching content type and file name."
    )


def detect_kind(data: bytes, filename: str, content_type: str | None) -> str:
    """The document's kind (``pdf|docx|pptx|xlsx|html|text``) or ``UnsupportedDocumentType``.

    Magic bytes decide; a known extension or content type that contradicts
    them is refused. For text the declared type picks HTML or plain text, so
    an ``.html`` file without tags is still HTML and a ``.txt`` of markup is text.
    """
    ct_kind, ct_is_zip = _declared_type(content_type)
    ext_kind = SUPPORTED_EXTENSIONS.get(PurePosixPath(filename.replace("\\", "/")).suffix.lower())
    declared = [(k, w) for k, w in ((ct_kind, "content type"), (ext_kind, "file name")) if k]
    head = data[:_PDF_HEADER_WINDOW]

    sniffed: Kind | None = None
    if b"%PDF-" in head:
        sniffed = "pdf"
    elif data.startswith(b"PK\x03\x04"):
        sniffed = _ooxml_kind(data)
        if sniffed is None:  # a damaged zip: trust an OOXML declaration, extract() says corrupt
            ooxml = [k for k, _ in declared if k in ("docx", "pptx", "xlsx")]
            if ooxml:
                return ooxml[0]
            raise UnsupportedDocumentType(
                f"The file is an unreadable ZIP archive; send {_ACCEPTED}."
            )
    else:
        for magic, label in _FOREIGN:
            if data.startswith(magic):
                raise UnsupportedDocumentType(f"The file is {label}; send {_ACCEPTED}.")
        if data.startswith(b"MZ") and b"\x00" in head[:64]:
            raise UnsupportedDocumentType(f"The file is a Windows executable; send {_ACCEPTED}.")
    if ct_is_zip and sniffed not in ("docx", "pptx", "xlsx"):
        raise _mismatch(_LABELS.get(sniffed or "", "not a ZIP archive"), "content type", "docx")
    if sniffed is not None:
        for kind, what in declared:
            if kind != sniffed:
                raise _mismatch(_LABELS[sniffed], what, kind)
        return sniffed

    if decode_text(data) is None:
        raise UnsupportedDocumentType(f"The file is not a supported document; send {_ACCEPTED}.")
    text_kind: Kind = "html" if looks_like_html(data) else "text"
    for kind, what in declared:
        if kind not in ("html", "text"):
            raise _mismatch("text", what, kind)
    return declared[0][0] if declared else text_kind
