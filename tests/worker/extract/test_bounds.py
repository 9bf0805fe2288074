"""Structural bounds checked before any parser runs: zip directories and spreadsheet grids."""

from __future__ import annotations

import io
import struct
import zipfile
from typing import Any

import pytest
from zopilot_worker.errors import CorruptDocument, DocumentTooLarge
from zopilot_worker.extract import Extractor
from zopilot_worker.extract.ooxml import MAX_ENTRIES, central_directory_entries
from zopilot_worker.extract.sheets import BYTES_PER_CELL
from zopilot_worker.testing.documents import make_docx, make_xlsx

MiB = 1024 * 1024
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def zip_with_directory(entries: int, *, declared: int | None = None) -> bytes:
    """A zip whose central directory lists ``entries`` one-byte names (zip64 records).

    Only the directory is real: a million entries cost 47 MB here, not the
    ~100 MB a full archive would; zipfile would still parse every entry.
    """
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, 1, 0) + b"a"
    header = struct.pack(
        "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0
    )
    directory = (header + b"a") * entries
    count = entries if declared is None else declared
    record_at = len(local) + len(directory)
    eocd64 = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), len(local)
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return local + directory + eocd64 + locator + eocd


@pytest.fixture
def zipfile_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if anything opens the archive with zipfile (which would parse every entry)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("zipfile.ZipFile was called on a hostile directory")

    monkeypatch.setattr(zipfile, "ZipFile", refuse)


def test_entry_count_matches_zipfile_on_real_documents() -> None:
    docx = make_docx(None, "Memo", ["a"], [["k", "v"]])
    names = zipfile.ZipFile(io.BytesIO(docx)).namelist()
    assert central_directory_entries(docx) == len(names)
    assert central_directory_entries(b"not a zip") is None


@pytest.mark.parametrize(
    ("entries", "declared"),
    [
        (1_000_000, None),  # about a million entries, honestly declared
        (MAX_ENTRIES + 1, 1),  # the count lies: the directory walk finds the entries
    ],
)
@pytest.mark.usefixtures("zipfile_forbidden")
def test_a_huge_directory_is_refused_before_zipfile_parses_it(
    entries: int, declared: int | None
) -> None:
    data = zip_with_directory(entries, declared=declared)
    assert len(data) < 50 * MiB
    for name, content_type in (("bomb.docx", None), ("upload.bin", None), ("x.xlsx", XLSX)):
        with pytest.raises(CorruptDocument) as info:
            Extractor().extract(data, name, content_type)
        assert f"more than {MAX_ENTRIES} entries" in info.value.public_message


def _xlsx_with_sheet(sheet_xml: bytes) -> bytes:
    base = make_xlsx(None, {"S": [["k", "v"], ["a", 1]]})
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(base)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = sheet_xml
            target.writestr(info.filename, data)
    return out.getvalue()


_SHEET = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    b"<sheetData>%s</sheetData></worksheet>"
)


@pytest.mark.parametrize(
    "rows",
    [
        # Two cells, opposite corners: pandas would pad to 1,048,576 x 16,384.
        b'<row r="1"><c r="A1" t="inlineStr"><is><t>x</t></is></c></row>'
        b'<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>y</t></is></c></row>',
        # No r attributes at all: positions count up (openpyxl's rule).
        b"<row><c><v>1</v></c></row>" * 5 + b"<row>" + b"<c/>" * 200_000 + b"</row>"
        b'<row r="900000"><c r="B900000"><v>2</v></c></row>',
        # A namespace prefix changes nothing.
        b'<x:row r="70000"><x:c r="ZZ70000"><x:v>1</x:v></x:c></x:row>' * 2,
    ],
    ids=["corners", "no-references", "prefixed"],
)
def test_a_sheet_grid_past_the_budget_is_refused_before_pandas(rows: bytes) -> None:
    data = _xlsx_with_sheet(_SHEET % rows)
    with pytest.raises(DocumentTooLarge) as info:
        Extractor().extract(data, "grid.xlsx")
    limit = 200 * MiB // BYTES_PER_CELL
    assert f"limit is {limit:,} cells" in info.value.public_message


def test_a_normal_sheet_passes_the_grid_check() -> None:
    rows = b"".join(
        b'<row r="%d"><c r="A%d"><v>%d</v></c><c r="J%d"><v>1</v></c></row>' % (i, i, i, i)
        for i in range(1, 2001)
    )
    document = Extractor().extract(_xlsx_with_sheet(_SHEET % rows), "ok.xlsx")
    assert document.kind == "xlsx" and "1999" in document.text
