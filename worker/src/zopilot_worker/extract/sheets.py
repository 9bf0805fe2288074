"""XLSX guard: the grid pandas would build must fit the uncompressed budget too.

The zip-bomb guard bounds the XML (``max_uncompressed_bytes``, 200 MiB), but a
few bytes of XML can ask for a huge table: one cell at ``A1`` and one at
``XFD1048576`` make pandas (``read_excel`` through openpyxl) pad every row to
the widest one, 17 billion cells from a 1 KiB sheet. So before any parser
runs, each worksheet's XML is streamed once and its grid measured the way
openpyxl reads it: a ``<row>``/``<c>`` with an ``r`` reference sits there,
one without follows the previous one. Rows x columns of the largest sheet, and
the shared-string count, must stay within ``max_uncompressed_bytes //
BYTES_PER_CELL`` cells: what the budget's bytes could hold at a few bytes of
memory per cell. The parsing process's address-space limit backs this up.

Linear: one bounded regular expression pass per 1 MiB chunk.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator

from zopilot_worker.errors import DocumentTooLarge
from zopilot_worker.extract.schema import ExtractSettings

# pandas holds every cell as an 8-byte pointer in a list, then again in the frame's
# object column, plus the cell's value: 16 bytes is the least a cell can cost.
BYTES_PER_CELL = 16
_CHUNK = 1 << 20
# A <row> or <c> start tag (any namespace prefix) and up to 1 KiB of its attributes:
# every repetition is bounded or a single class, so the scan is linear.
_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]{0,31}:)?(row|c)([\s/>][^<>]{0,1024})")
_REF = re.compile(rb"\sr\s*=\s*[\"']([A-Za-z]{0,3})([0-9]{0,7})[\"']")
_SHARED_STRING = re.compile(rb"<(?:[A-Za-z_][\w.-]{0,31}:)?si[\s/>]")


def _column(letters: bytes) -> int:
    number = 0
    for letter in letters.upper():
        number = number * 26 + letter - 64
    return number


def _stream(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The part in chunks that each end before a tag, so no tag is cut in two."""
    carry = b""
    with archive.open(info) as part:
        while chunk := part.read(_CHUNK):
            data = carry + chunk
            cut = data.rfind(b"<")
            if cut == -1 or len(data) - cut > 2048:  # no tag is that long: nothing to cut
                cut = len(data)
            yield data[:cut]
            carry = data[cut:]
    yield carry


def sheet_grid(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[int, int]:
    """(rows, columns) of the grid openpyxl/pandas would build from this worksheet part."""
    max_row = max_col = row = col = 0
    for chunk in _stream(archive, info):
        for tag, attributes in _TAG.findall(chunk):
            ref = _REF.search(attributes)
            if tag == b"row":
                row = int(ref[2]) if ref and ref[2] else row + 1
                col = 0
            else:
                col = _column(ref[1]) if ref and ref[1] else col + 1
                if ref and ref[2]:
                    row = max(row, int(ref[2]))
            max_row, max_col = max(max_row, row), max(max_col, col)
    return max_row, max_col


def check_sheets(data: bytes, settings: ExtractSettings) -> None:
    """DocumentTooLarge if a sheet's grid or the shared strings exceed the cell budget."""
    limit = settings.max_uncompressed_bytes // BYTES_PER_CELL
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            name = info.filename
            if not (name.startswith("xl/") and name.endswith(".xml")):
                continue
            if name == "xl/sharedStrings.xml":
                strings = sum(len(_SHARED_STRING.findall(c)) for c in _stream(archive, info))
                if strings > limit:
                    raise DocumentTooLarge(
                        f"The XLSX holds {strings:,} shared strings; the limit is {limit:,}. "
                        "Split the workbook into smaller files."
                    )
                continue
            rows, columns = sheet_grid(archive, info)
            if rows * columns > limit:
                raise DocumentTooLarge(
                    f"An XLSX sheet spans {rows:,} rows x {columns:,} columns "
                    f"({rows * columns:,} cells); the limit is {limit:,} cells. Delete stray "
                    "cells far from the data, or split the workbook.",
                    detail=name,
                )
