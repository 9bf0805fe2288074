"""Zip-bomb and size guard for DOCX/PPTX/XLSX, run before any parser sees the bytes.

Only the central directory is read (no entry is inflated), so the check costs
microseconds whatever the archive claims. The declared sizes are binding:
CPython's ``zipfile`` (used by python-docx, python-pptx and openpyxl) stops
inflating an entry at its declared size and fails the CRC check if more data
follows, so an archive cannot lie its way past this guard.

XML entity bombs and external entities are refused here too, whatever the
parsers do (python-docx/python-pptx parse with ``resolve_entities=False``;
openpyxl is only hardened when defusedxml happens to be installed): the Open
Packaging Conventions (ECMA-376 Part 2) forbid DTD declarations in package
parts, so any part whose prolog holds a ``<!DOCTYPE`` is rejected. Only the
first few KiB of each part are inflated for that.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile

from zopilot_worker.errors import CorruptDocument, DocumentTooLarge
from zopilot_worker.extract.schema import ExtractSettings, Kind
from zopilot_worker.extract.sheets import check_sheets

# Real documents have tens to a few hundred parts; 10,000 bounds the cost of
# walking the directory and of python-docx's package loader.
MAX_ENTRIES = 10_000
# Ratios are judged only on entries above 1 MiB: small, repetitive XML parts
# (styles, empty sheets) legitimately deflate far beyond 100x.
_RATIO_FLOOR_BYTES = 1024 * 1024
_REQUIRED = {"docx": "word/document.xml", "pptx": "ppt/presentation.xml", "xlsx": "xl/workbook.xml"}
# A part's prolog (XML declaration, comments, PIs) must end within this window;
# real OOXML parts reach their root element within ~100 bytes.
_PROLOG_WINDOW = 4096
# "*+" (possessive, Python 3.11+): without it, a hostile run of comments or
# whitespace makes the regex backtrack exponentially.
_PROLOG = re.compile(r"\A\ufeff?(?:\s|<!--.*?-->|<\?.*?\?>)*+<[A-Za-z_]", re.DOTALL)
_UNITS = {
    "pptx": (re.compile(r"ppt/slides/slide\d+\.xml"), "slides"),
    "xlsx": (re.compile(r"xl/worksheets/sheet\d+\.xml"), "sheets"),
}


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def _bomb(kind: Kind, why: str, detail: str) -> CorruptDocument:
    return CorruptDocument(
        f"The {kind.upper()} file was refused: {why}. It looks like a zip bomb or a damaged "
        "document; send the original file.",
        detail=detail,
    )


_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record (APPNOTE 4.3.16)
_EOCD64_LOCATOR = struct.Struct("<4sLQL")  # zip64 end of central directory locator (4.3.15)
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory record (4.3.14)
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # central directory file header (4.3.12)
# The EOCD record is the last thing in a zip, after at most a 64 KiB comment.
_EOCD_WINDOW = _EOCD.size + 0xFFFF


def central_directory_entries(data: bytes, limit: int = MAX_ENTRIES) -> int | None:
    """How many entries the zip's central directory holds, counted up to ``limit + 1``.

    Read from the end-of-central-directory record and by walking the directory's
    headers (the record's count may lie; ``zipfile`` walks the directory by its
    byte size), without building anything: a directory of a million entries is
    refused after ``limit`` headers, before ``zipfile`` would parse it. None
    when the structure cannot be read (``zipfile`` then reports the damage).
    """
    eocd = data.rfind(b"PK\x05\x06", max(0, len(data) - _EOCD_WINDOW))
    if eocd == -1 or len(data) - eocd < _EOCD.size:
        return None
    _, _, _, _, declared, cd_size, _, _ = _EOCD.unpack_from(data, eocd)
    end = eocd
    locator = eocd - _EOCD64_LOCATOR.size
    if locator >= 0 and data.startswith(b"PK\x06\x07", locator):
        record = locator - _EOCD64.size
        if record < 0 or not data.startswith(b"PK\x06\x06", record):
            return None
        fields = _EOCD64.unpack_from(data, record)
        declared, cd_size = fields[7], fields[8]  # total entries, directory size
        end = record
    if declared > limit:
        return int(declared)
    start = end - cd_size
    if start < 0:
        return None
    count, pos = 0, start
    while pos + _CENTRAL.size <= end and count <= limit:
        header = _CENTRAL.unpack_from(data, pos)
        if header[0] != b"PK\x01\x02":
            return None
        name_len, extra_len, comment_len = header[12], header[13], header[14]
        pos += _CENTRAL.size + name_len + extra_len + comment_len
        count += 1
    return max(count, int(declared))


def refuse_many_entries(data: bytes, what: str) -> None:
    """CorruptDocument if the zip's directory lists more than MAX_ENTRIES entries."""
    entries = central_directory_entries(data)
    if entries is not None and entries > MAX_ENTRIES:
        raise CorruptDocument(
            f"The {what} file was refused: its ZIP directory lists more than {MAX_ENTRIES} "
            "entries. It looks like a zip bomb or a damaged document; send the original file.",
            detail=f"entries >= {entries}",
        )


def check_ooxml(data: bytes, kind: Kind, settings: ExtractSettings) -> int:
    """Validate an OOXML zip against the limits; return its pages (slides/sheets; 1 for DOCX)."""
    refuse_many_entries(data, kind.upper())
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise CorruptDocument(
            f"The {kind.upper()} file is damaged (its ZIP structure cannot be read).",
            detail=repr(exc),
        ) from exc

    if len(infos) > MAX_ENTRIES:
        raise _bomb(kind, f"it has {len(infos)} ZIP entries (limit {MAX_ENTRIES})", "entries")
    total = compressed = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise CorruptDocument(
                f"The {kind.upper()} file is encrypted; send it without a password.",
                detail=info.filename,
            )
        size, packed = info.file_size, max(info.compress_size, 1)
        total += size
        compressed += packed
        if size > _RATIO_FLOOR_BYTES and size / packed > settings.max_compression_ratio:
            raise _bomb(
                kind,
                f"one part inflates {size // packed}x",
                f"{info.filename}: {size} bytes from {packed}",
            )
    if total > settings.max_uncompressed_bytes:
        raise _bomb(
            kind,
            f"it inflates to {_size(total)} (limit {_size(settings.max_uncompressed_bytes)})",
            f"total {total}",
        )
    if total > _RATIO_FLOOR_BYTES and total / max(compressed, 1) > settings.max_compression_ratio:
        raise _bomb(kind, f"it inflates {total // compressed}x", f"{total} from {compressed}")

    _check_prologs(data, infos, kind)
    if kind == "xlsx":
        check_sheets(data, settings)  # the grid pandas would build, before it builds it
    names = {info.filename for info in infos}
    if _REQUIRED[kind] not in names:
        raise CorruptDocument(
            f"The file is not a valid {kind.upper()} document ({_REQUIRED[kind]} is missing).",
            detail=kind,
        )
    if kind not in _UNITS:
        return 1
    pattern, unit = _UNITS[kind]
    count = sum(1 for name in names if pattern.fullmatch(name))
    if count > settings.max_pages:
        raise DocumentTooLarge(
            f"The {kind.upper()} has {count} {unit}; the limit is "
            f"{settings.max_pages}. Split it into smaller documents."
        )
    return max(count, 1)


def _check_prologs(data: bytes, infos: list[zipfile.ZipInfo], kind: Kind) -> None:
    """Refuse parts with a DTD (entity bombs, XXE) or a prolog too long to be real."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in infos:
            if not info.filename.endswith((".xml", ".rels")) or info.file_size == 0:
                continue
            try:
                with archive.open(info) as part:
                    head = part.read(_PROLOG_WINDOW)
            except (
                zipfile.BadZipFile,
                OSError,
                ValueError,
                EOFError,
                NotImplementedError,
                RuntimeError,
            ) as exc:
                raise CorruptDocument(
                    f"The {kind.upper()} file is damaged (a part cannot be inflated).",
                    detail=f"{info.filename}: {exc!r}",
                ) from exc
            encoding = "utf-16" if head.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8"
            text = head.decode(encoding, errors="ignore")
            if not _PROLOG.match(text):
                raise CorruptDocument(
                    f"The {kind.upper()} file was refused: one of its XML parts declares a "
                    "DTD or is not XML, which Office documents never do.",
                    detail=info.filename,
                )
