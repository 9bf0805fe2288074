"""Writes the hostile corpus (tests/worker/corpus/hostile/): run once, commit the files.

  .venv/bin/python tests/worker/corpus/make_hostile.py

Each file is small (the whole corpus stays under 2 MB) and aims at one class of
hostile input: long lines and unclosed delimiters for the text scanners,
comment runs for type detection, deep nesting and huge tables for the HTML and
CSV converters, zips whose directories list too many entries, spreadsheet grid
bombs, and PDFs with deeply nested or hugely inflating streams. The generator
is deterministic, so re-running it reproduces the same bytes;
tests/worker/extract/test_corpus.py runs every file through the engine.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

from zopilot_worker.testing.documents import pdf_from_objects

OUT = Path(__file__).with_name("hostile")
FILES: dict[str, Callable[[], bytes]] = {}


def corpus_file(name: str) -> Callable[[Callable[[], bytes]], Callable[[], bytes]]:
    def register(make: Callable[[], bytes]) -> Callable[[], bytes]:
        FILES[name] = make
        return make

    return register


# --- text: long lines, unclosed delimiters, comment runs -----------------------------


@corpus_file("long_line_delimiters.md")
def _long_line() -> bytes:
    # One 120 KB line of every markdown opener, none of them closed.
    return b"".join([b"**a", b"__b", b"*c", b"[d", b"![e", b"[f](", b"<!--"] * 4000)


@corpus_file("unclosed_comments.txt")
def _unclosed_comments() -> bytes:
    return b"<!--" * 15_000


@corpus_file("comment_run_no_tag.txt")
def _comment_run() -> bytes:
    # Froze the former HTML-start regex (exponential in the number of comments).
    return b"<!---->" * 40 + b" x" + b"\n" * 10


@corpus_file("spaces_then_rule.md")
def _spaces_then_rule() -> bytes:
    # Quadratic for the former table-rule regex ([ \t]* twice around an optional |).
    return b" " * 36_000 + b"x\n" + b"|\t" * 12_000 + b"x"


@corpus_file("control_characters.txt")
def _control() -> bytes:
    return bytes(range(1, 32)) * 300


# --- HTML / CSV: deep nesting, huge tables ---------------------------------------------


@corpus_file("deep_nesting.html")
def _deep_nesting() -> bytes:
    return b"<html><body>" + b"<div>" * 10_000 + b"deep" + b"</div>" * 10_000 + b"</body></html>"


@corpus_file("unclosed_nesting.html")
def _unclosed_nesting() -> bytes:
    return b"<!DOCTYPE html><html><body>" + b"<b><i><span>" * 8_000


@corpus_file("huge_table.html")
def _huge_table() -> bytes:
    row = b"<tr>" + b"<td>1</td>" * 30 + b"</tr>"
    return b"<html><body><table>" + row * 300 + b"</table></body></html>"


@corpus_file("wide_table.csv")
def _wide_csv() -> bytes:
    return (b",".join(b"%d" % i for i in range(2000)) + b"\n") * 10


@corpus_file("pipes_table.md")
def _pipes_table() -> bytes:
    return (b"|" + b" --- |" * 3000 + b"\n") * 5


# --- zips: entry counts, bombs ---------------------------------------------------------


def _zip_directory(entries: int, declared: int) -> bytes:
    """A zip that is only a central directory of one-byte names, zip64 end records."""
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, 1, 0) + b"a"
    header = struct.pack(
        "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0
    )
    directory = (header + b"a") * entries
    record_at = len(local) + len(directory)
    eocd64 = struct.pack(
        "<4sQ2H2L4Q",
        b"PK\x06\x06",
        44,
        45,
        45,
        0,
        0,
        declared,
        declared,
        len(directory),
        len(local),
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return local + directory + eocd64 + locator + eocd


@corpus_file("million_entries_declared.docx")
def _million_declared() -> bytes:
    return _zip_directory(10, declared=1_000_000)


@corpus_file("many_entries_lying_count.xlsx")
def _many_lying() -> bytes:
    return _zip_directory(10_001, declared=3)


@corpus_file("zip_bomb.docx")
def _bomb() -> bytes:
    from zopilot_worker.testing.documents import make_zip_bomb_docx

    return make_zip_bomb_docx(256)


def _xlsx_with_sheet(sheet_rows: bytes) -> bytes:
    import zipfile

    from zopilot_worker.testing.documents import make_xlsx

    base = make_xlsx(None, {"S": [["k", "v"], ["a", 1]]})
    sheet = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        b"<sheetData>" + sheet_rows + b"</sheetData></worksheet>"
    )
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(base)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            data = sheet if info.filename == "xl/worksheets/sheet1.xml" else source.read(info)
            entry = zipfile.ZipInfo(info.filename, (2020, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(entry, data)
    return out.getvalue()


@corpus_file("grid_corners.xlsx")
def _grid_corners() -> bytes:
    return _xlsx_with_sheet(
        b'<row r="1"><c r="A1"><v>1</v></c></row>'
        b'<row r="1048576"><c r="XFD1048576"><v>2</v></c></row>'
    )


@corpus_file("grid_unreferenced.xlsx")
def _grid_unreferenced() -> bytes:
    return _xlsx_with_sheet(b"<row>" + b"<c><v>1</v></c>" * 20_000 + b"</row>" + b"<row/>" * 5_000)


# --- PDFs: nested and huge streams ------------------------------------------------------


def _pdf(objects: list[bytes]) -> bytes:
    """Objects 1..n (1: catalog) with a correct xref table."""
    return pdf_from_objects(objects, version=b"1.7")


def _stream(data: bytes, extra: bytes = b"", *, deflate: bool = False) -> bytes:
    body = zlib.compress(data, 9) if deflate else data
    filters = b"/Filter/FlateDecode" if deflate else b""
    return b"<<%s%s/Length %d>>stream\n%s\nendstream" % (extra, filters, len(body), body)


_PAGE_HEAD = [b"<</Type/Catalog/Pages 2 0 R>>", b"<</Type/Pages/Kids[3 0 R]/Count 1>>"]
_FONT = b"<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>"


@corpus_file("nested_xobjects.pdf")
def _nested_xobjects() -> bytes:
    # Each form XObject draws the next one: 500 levels of nesting.
    depth = 500
    first = 5
    objects = [
        *_PAGE_HEAD,
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]"
        b"/Resources<</Font<</F1 4 0 R>>/XObject<</X %d 0 R>>>>/Contents %d 0 R>>"
        % (first, first + depth),
        _FONT,
    ]
    for level in range(depth):
        child = b"/XObject<</X %d 0 R>>" % (first + level + 1) if level < depth - 1 else b""
        objects.append(
            _stream(
                b"q /X Do Q BT /F1 12 Tf 72 720 Td (level) Tj ET",
                b"/Type/XObject/Subtype/Form/BBox[0 0 612 792]/Resources<<%s/Font<</F1 4 0 R>>>>"
                % child,
            )
        )
    objects.append(_stream(b"q /X Do Q"))
    return _pdf(objects)


@corpus_file("inflating_stream.pdf")
def _inflating() -> bytes:
    # A 20 KB content stream that inflates to 24 MB of text operators.
    content = b"BT /F1 12 Tf 72 720 Td (x) Tj ET\n" * 730_000
    objects = [
        *_PAGE_HEAD,
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]"
        b"/Resources<</Font<</F1 4 0 R>>>>/Contents 5 0 R>>",
        _FONT,
        _stream(content, deflate=True),
    ]
    return _pdf(objects)


@corpus_file("deep_arrays.pdf")
def _deep_arrays() -> bytes:
    # Nested arrays in the page dictionary: recursion in the object parser.
    nested = b"[" * 20_000 + b"]" * 20_000
    objects = [
        *_PAGE_HEAD,
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]/Junk %s/Contents 4 0 R>>" % nested,
        _stream(b"BT ET"),
    ]
    return _pdf(objects)


@corpus_file("page_tree_cycle.pdf")
def _page_tree_cycle() -> bytes:
    objects = [
        b"<</Type/Catalog/Pages 2 0 R>>",
        b"<</Type/Pages/Kids[3 0 R]/Count 1000000>>",
        b"<</Type/Pages/Parent 2 0 R/Kids[2 0 R 3 0 R]/Count 1000000>>",
    ]
    return _pdf(objects)


@corpus_file("many_pages.pdf")
def _many_pages() -> bytes:
    # 600 pages sharing one content stream: past the 500-page limit.
    pages = 600
    kids = b" ".join(b"%d 0 R" % (5 + i) for i in range(pages))
    objects = [
        b"<</Type/Catalog/Pages 2 0 R>>",
        b"<</Type/Pages/Kids[%s]/Count %d>>" % (kids, pages),
        _stream(b"BT /F1 12 Tf 72 720 Td (page) Tj ET"),
        _FONT,
    ]
    objects += [
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]"
        b"/Resources<</Font<</F1 4 0 R>>>>/Contents 3 0 R>>"
    ] * pages
    return _pdf(objects)


@corpus_file("huge_mediabox.pdf")
def _huge_mediabox() -> bytes:
    objects = [
        *_PAGE_HEAD,
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 14400 14400]/UserUnit 75000"
        b"/Resources<</Font<</F1 4 0 R>>>>/Contents 5 0 R>>",
        _FONT,
        _stream(b"BT /F1 12 Tf 72 720 Td (x) Tj ET"),
    ]
    return _pdf(objects)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    total = 0
    for name, make in FILES.items():
        data = make()
        (OUT / name).write_bytes(data)
        total += len(data)
        print(f"{name:36} {len(data):>9,} bytes")
    print(f"{'total':36} {total:>9,} bytes")
    if total >= 2_000_000:
        sys.exit("the hostile corpus must stay under 2 MB")


if __name__ == "__main__":
    main()
