"""Benchmark: pages/s of the PDF text fast path against its floor and its peers, in one run.

Corpus: born-digital PDFs (fpdf2, text layer) of dense pseudo-business text,
generated deterministically. Every extractor reads the same bytes from memory.

  ours          zopilot_worker.extract.Extractor (type sniffing, PDFium text per
                page, OCR triage, markdown + plain text)
  pypdfium2     raw PdfDocument → get_textpage().get_text_range(): the floor
  pypdfium2 x4  ours from 4 threads (PDFium is serialised by one lock)
  pdfplumber    page.extract_text()  (peer)
  pypdf         page.extract_text()  (peer)
  docstrange    PDFProcessor, only if it runs locally without network/GPU

Usage:
  .venv/bin/python bench/bench_extract.py [--docs 20] [--pages 10] [--rounds 3] [--write]

``--write`` replaces the "## Extraction" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import platform
import random
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("RESULTS.md")
_WORDS = [
    "invoice",
    "amount",
    "due",
    "payment",
    "terms",
    "customer",
    "supplier",
    "agreement",
    "delivery",
    "total",
    "quantity",
    "price",
    "tax",
    "net",
    "gross",
    "account",
    "number",
    "reference",
    "date",
    "signature",
    "party",
    "clause",
    "liability",
    "confidential",
    "shipment",
    "order",
    "receipt",
    "balance",
    "credit",
]


def make_corpus(docs: int, pages: int) -> list[bytes]:
    from zopilot_worker.testing.documents import make_text_pdf

    corpus = []
    for d in range(docs):
        rng = random.Random(f"bench-{d}")
        texts = []
        for p in range(pages):
            lines = [f"Document {d + 1}, page {p + 1}"]
            lines += [
                " ".join(rng.choice(_WORDS) for _ in range(12)) + f" {rng.randint(1, 9999)}."
                for _ in range(40)
            ]
            texts.append("\n".join(lines))
        corpus.append(make_text_pdf(texts))
    return corpus


def ours() -> Callable[[bytes], int]:
    from zopilot_worker.extract import Extractor

    extractor = Extractor()
    return lambda data: extractor.extract(data, "bench.pdf", "application/pdf").pages


def ours_threads(corpus: list[bytes]) -> Callable[[bytes], int]:
    run = ours()
    pool = ThreadPoolExecutor(max_workers=4)

    def all_at_once(_: bytes) -> int:  # called once per round with the whole corpus
        return sum(pool.map(run, corpus))

    return all_at_once


def raw_pypdfium2() -> Callable[[bytes], int]:
    import pypdfium2 as pdfium

    def run(data: bytes) -> int:
        doc = pdfium.PdfDocument(data)
        for page in doc:
            textpage = page.get_textpage()
            textpage.get_text_range()
            textpage.close()
            page.close()
        n = len(doc)
        doc.close()
        return n

    return run


def pdfplumber_text() -> Callable[[bytes], int]:
    import pdfplumber

    def run(data: bytes) -> int:
        with pdfplumber.open(io.BytesIO(data)) as pdf:
            for page in pdf.pages:
                page.extract_text()
            return len(pdf.pages)

    return run


def pypdf_text() -> Callable[[bytes], int]:
    from pypdf import PdfReader

    def run(data: bytes) -> int:
        reader = PdfReader(io.BytesIO(data))
        for page in reader.pages:
            page.extract_text()
        return len(reader.pages)

    return run


def docstrange_pdf() -> Callable[[bytes], int]:
    """docstrange's PDFProcessor, with outgoing connections refused (its models come from S3)."""
    original = socket.socket.connect

    def refuse(self: socket.socket, address: Any) -> None:
        raise OSError(f"network disabled by the benchmark (wanted {address!r})")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    try:
        from docstrange.processors import PDFProcessor

        processor = PDFProcessor()
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]
    raise AssertionError(f"unexpectedly constructed {processor!r}; extend the benchmark")


# A method whose first pass over the corpus takes longer than this is measured
# once (pdfplumber needs ~30 s); the fast ones get every round.
_SLOW_S = 5.0
Runner = Callable[[bytes], int]


def _timed(run: Runner, corpus: list[bytes], whole_corpus: bool) -> tuple[float, int]:
    gc.collect()  # start every timing from the same heap state
    start = time.perf_counter()
    pages = run(b"") if whole_corpus else sum(run(data) for data in corpus)
    return time.perf_counter() - start, pages


def measure(
    methods: list[tuple[str, Callable[[], Runner], bool]], corpus: list[bytes], rounds: int
) -> dict[str, tuple[float, int, int] | str]:
    """name → (best seconds, pages, rounds) or why it did not run.

    Rounds are interleaved across methods and their order rotates each round,
    so load from other processes on a shared machine spreads over all of them.
    """
    runners: dict[str, tuple[Runner, bool]] = {}
    out: dict[str, tuple[float, int, int] | str] = {}
    for name, make, whole in methods:  # round 1, in order; also warms imports up
        try:
            runners[name] = (make(), whole)
            seconds, pages = _timed(runners[name][0], corpus, whole)
        except Exception as exc:
            out[name] = f"did not run: {type(exc).__name__}: {exc}"[:240]
            runners.pop(name, None)
            continue
        out[name] = (seconds, pages, 1)
    fast = [n for n in runners if isinstance(out[n], tuple) and out[n][0] < _SLOW_S]  # type: ignore[index]
    for r in range(1, rounds):
        for name in fast[r % len(fast) :] + fast[: r % len(fast)]:
            run, whole = runners[name]
            seconds, pages = _timed(run, corpus, whole)
            best, _, done = out[name]  # type: ignore[misc]
            out[name] = (min(best, seconds), pages, done + 1)
    return out


def write_section(body: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = text.find("## Extraction")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + body + (text[end + 1 :] if end != -1 else "")
    RESULTS.write_text(text.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()

    start = time.perf_counter()
    corpus = make_corpus(args.docs, args.pages)
    print(
        f"corpus: {args.docs} PDFs x {args.pages} pages, {sum(map(len, corpus)) // 1024} KiB, "
        f"built in {time.perf_counter() - start:.1f} s"
    )
    import pdfplumber
    import pypdf
    import pypdfium2

    methods: list[tuple[str, Callable[[], Callable[[bytes], int]], bool]] = [
        ("pypdfium2 raw text (floor)", raw_pypdfium2, False),
        ("ours: Extractor, PDF fast path", ours, False),
        ("ours: 4 threads, one Extractor", lambda: ours_threads(corpus), True),
        (f"pdfplumber {pdfplumber.__version__}", pdfplumber_text, False),
        (f"pypdf {pypdf.__version__}", pypdf_text, False),
        ("docstrange 1.1.8 PDFProcessor", docstrange_pdf, False),
    ]
    rows: list[tuple[str, float | None, str]] = []
    measured = measure(methods, corpus, args.rounds)
    floor_s, floor_pages, _ = measured[methods[0][0]]  # type: ignore[misc]
    floor = floor_pages / floor_s
    for name, _, _ in methods:
        result = measured[name]
        if isinstance(result, str):
            rows.append((name, None, result))
            print(f"{name:34} {result}"[:200])
            continue
        seconds, pages, done = result
        rate = pages / seconds
        rows.append((name, rate, f"{seconds * 1000:,.0f} ms for {pages} pages, best of {done}"))
        print(f"{name:34} {rate:9.0f} pages/s  {rate / floor:6.2f}x floor  ({seconds:.3f} s)")

    command = (
        "`.venv/bin/python bench/bench_extract.py "
        f"--docs {args.docs} --pages {args.pages} --rounds {args.rounds} --write`"
    )
    env = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), "
        f"Python {platform.python_version()}, pypdfium2 {pypdfium2.PYPDFIUM_INFO}"
    )
    lines = [
        "## Extraction",
        "",
        f"PDF text fast path, {args.docs} born-digital PDFs x {args.pages} pages "
        f"(~{sum(map(len, corpus)) // len(corpus) // 1024} KiB each), all extractors in the "
        f"same run on the same in-memory bytes, best of {args.rounds} rounds interleaved "
        "across extractors in rotating order (a peer slower than 5 s per pass: one pass). "
        "Ratio: pages/s divided by raw pypdfium2's pages/s.",
        "",
        f"Command: {command}",
        "",
        f"Machine: {env}.",
        "",
        "| extractor | pages/s | vs raw pypdfium2 | notes |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, rate, note in rows:
        if rate is None:
            lines.append(f"| {name} | - | - | {note} |")
        else:
            lines.append(f"| {name} | {rate:,.0f} | {rate / floor:.2f}x | {note} |")
    lines.append(
        "| docstrange DocumentExtractor() default | - | - | not run: its default mode "
        "uploads the file to the Nanonets cloud API (no network here, and never for "
        "our data); `gpu=True` refuses to start without CUDA |"
    )
    lines += [
        "",
        "docstrange's local PDFProcessor OCRs every page (pdf2image at 300 dpi + "
        "docling/EasyOCR models downloaded on first use) and its NeuralDocumentProcessor "
        "refuses NumPy 2 outright, so there is no local docstrange PDF text path to "
        "compare against: the fast path is ours.",
        "",
        "Reading: on a shared machine, differences under ~10% between the pypdfium2 "
        "rows are run-to-run noise (the fast path measured 0.95x and 1.05x in two "
        "identical runs). Its cost over raw PDFium is type sniffing, the per-page "
        "OCR triage and building markdown + plain text; the `4 threads` row shows no "
        "gain from threads because every PDFium call holds one process-wide lock "
        "(PDFium is not thread-safe), so PDF throughput scales with worker processes, "
        "not threads. pdfplumber (pdfminer layout analysis in pure Python) and pypdf "
        "(pure Python) are the slower peers.",
    ]
    body = "\n".join(lines) + "\n"
    if args.write:
        write_section(body)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker" / "src"))
    sys.exit(main())
