"""Zip-bomb and size guard for DOCX/PPTX/XLSX, run before any parser sees the bytes.

Only the central directory is read (no entry is inflated), so the check costs
microseconds whatever the archive claims. The declared sizes are binding:
CPython's ``zipfile`` (used by python-docx, python-pptx and openpyxl) stops
inflating an entry at its declared size and fails the CRC check if more data
follows, so an archive cannot lie its way past this guard.

XML entity bombs inside the parts are handled by the parsers themselves:
python-docx/python-pptx parse with ``resolve_entities=False`` and openpyxl uses
defusedxml when it is installed (it is, via docstrange's dependencies).
"""

from __future__ import annotations

import io
import re
import zipfile

from zopilot_worker.errors import CorruptDocument, DocumentTooLarge
from zopilot_worker.extract.schema import ExtractSettings, Kind

# Real documents have tens to a few hundred parts; 10,000 bounds the cost of
# walking the directory and of python-docx's package loader.
MAX_ENTRIES = 10_000
# Ratios are judged only on entries above 1 MiB: small, repetitive XML parts
# (styles, empty sheets) legitimately deflate far beyond 100x.
_RATIO_FLOOR_BYTES = 1024 * 1024
_REQUIRED = {"docx": "word/document.xml", "pptx": "ppt/presentation.xml",
             "xlsx": "xl/workbook.xml"}
_UNITS = {"pptx": (re.compile(r"ppt/slides/slide\d+\.xml"), "slides"),
          "xlsx": (re.compile(r"xl/worksheets/sheet\d+\.xml"), "sheets")}


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def _bomb(kind: Kind, why: str, detail: str) -> CorruptDocument:
    return CorruptDocument(
        f"The {kind.upper()} file was refused: {why}. It looks like a zip bomb or a damaged "
        "document; send the original file.", detail=detail)


def check_ooxml(data: bytes, kind: Kind, settings: ExtractSettings) -> int:
    """Validate an OOXML zip against the limits; return its pages (slides/sheets; 1 for DOCX)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise CorruptDocument(
            f"The {kind.upper()} file is damaged (its ZIP structure cannot be read).",
            detail=repr(exc)) from exc

    if len(infos) > MAX_ENTRIES:
        raise _bomb(kind, f"it has {len(infos)} ZIP entries (limit {MAX_ENTRIES})", "entries")
    total = compressed = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise CorruptDocument(f"The {kind.upper()} file is encrypted; send it without a "
                                  "password.", detail=info.filename)
        size, packed = info.file_size, max(info.compress_size, 1)
        total += size
        compressed += packed
        if size > _RATIO_FLOOR_BYTES and size / packed > settings.max_compression_ratio:
            raise _bomb(kind, f"one part inflates {size // packed}x", f"{info.filename}: "
                        f"{size} bytes from {packed}")
    if total > settings.max_uncompressed_bytes:
        raise _bomb(kind, f"it inflates to {_size(total)} (limit "
                    f"{_size(settings.max_uncompressed_bytes)})", f"total {total}")
    if total > _RATIO_FLOOR_BYTES and total / max(compressed, 1) > settings.max_compression_ratio:
        raise _bomb(kind, f"it inflates {total // compressed}x", f"{total} from {compressed}")

    names = {info.filename for info in infos}
    if _REQUIRED[kind] not in names:
        raise CorruptDocument(f"The file is not a valid {kind.upper()} document "
                              f"({_REQUIRED[kind]} is missing).", detail=kind)
    if kind not in _UNITS:
        return 1
    pattern, unit = _UNITS[kind]
    count = sum(1 for name in names if pattern.fullmatch(name))
    if count > settings.max_pages:
        raise DocumentTooLarge(f"The {kind.upper()} has {count} {unit}; the limit is "
                               f"{settings.max_pages}. Split it into smaller documents.")
    return max(count, 1)
