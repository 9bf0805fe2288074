"""Benchmark: PDF pages/s through the parsing pool, 1 request vs 4 concurrent, in one run.

Corpus: bench_extract's born-digital PDFs (fpdf2 text layer, dense text), read
from memory. Every method extracts the same bytes. Each round runs every
method back to back in rotating order; ratios are taken within a round and
their median reported, so load drifting between rounds cancels. CPU time
(this process plus the pool's children, from /proc) gives pages per
CPU-second, which does not depend on how much CPU other sessions leave us,
and "CPUs busy" (CPU-seconds / wall-seconds), which shows how many cores a
method actually got.

  raw pypdfium2        PdfDocument → get_textpage().get_text_range() in this
                       process, one document after another: the per-process floor
  engine, 1 request    DocumentEngine.extract (what /extract and the job runner
                       call): each document parsed by a pool child, one at a time
  engine, 4 requests   the same from 4 threads at once (the service admits 4
                       extractions): the pool runs one per child, in parallel
  in-process, 4 thr.   the former path, zopilot_worker.extract.Extractor from 4
                       threads: every PDFium call takes one process-wide lock

Targets (issue 10): engine 4 requests ≥ 1.7x engine 1 request (needs two
cores free for the two children); engine 1 request ≥ 0.8x raw pypdfium2 (a
child is as fast as PDFium in-process).

Usage:
  .venv/bin/python bench/bench_pool.py [--docs 8] [--pages 20] [--rounds 15] [--write]

``--write`` replaces (or adds) the "## Parsing pool" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_extract import make_corpus, raw_pypdfium2

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Parsing pool"
CONCURRENCY = 4

RunCorpus = Callable[[list[bytes]], int]


def raw(corpus: list[bytes]) -> int:
    run = raw_pypdfium2()
    return sum(run(data) for data in corpus)


def engine_runners() -> tuple[RunCorpus, RunCorpus, Callable[[], None], Callable[[], list[int]]]:
    from zopilot_worker.pipeline import DocumentEngine
    from zopilot_worker.settings import WorkerSettings

    engine = DocumentEngine(WorkerSettings(load_model_on_start=False))
    threads = ThreadPoolExecutor(CONCURRENCY)

    def one(data: bytes) -> int:
        return engine.extract(data, "bench.pdf", "application/pdf").pages

    def single(corpus: list[bytes]) -> int:
        return sum(one(data) for data in corpus)

    def concurrent(corpus: list[bytes]) -> int:
        return sum(threads.map(one, corpus))

    def close() -> None:
        threads.shutdown()
        engine.close()

    return single, concurrent, close, lambda: engine._pool.pids


def in_process_threads() -> RunCorpus:
    from zopilot_worker.extract import Extractor

    extractor = Extractor()
    threads = ThreadPoolExecutor(CONCURRENCY)

    def run(corpus: list[bytes]) -> int:
        return sum(threads.map(lambda d: extractor.extract(d, "b.pdf").pages, corpus))

    return run


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of this process and of the given children so far."""
    total = time.process_time()
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def measure(
    methods: dict[str, RunCorpus],
    corpus: list[bytes],
    rounds: int,
    children: Callable[[], list[int]],
) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """name → seconds of each round, and pages per pass; a first pass warms up.

    Every round runs every method once, back to back, in rotating order: on a
    shared machine the load drifts, and methods measured within the same second
    see about the same load, so ratios are taken per round (see ``main``).
    """
    names = list(methods)
    for name in names:  # warm-up: imports, pool children, PDFium
        methods[name](corpus[:CONCURRENCY])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    pages = 0
    pids = children()
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            cpu_start = cpu_seconds(pids)
            start = time.perf_counter()
            pages = methods[name](corpus)
            seconds[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds(pids) - cpu_start)
    return seconds, cpu, pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()

    corpus = make_corpus(args.docs, args.pages)
    single, concurrent, close, children = engine_runners()
    nice = os.nice(0)
    methods: dict[str, RunCorpus] = {
        "raw pypdfium2, this process": raw,
        "engine, 1 request at a time": single,
        f"engine, {CONCURRENCY} concurrent requests": concurrent,
        f"in-process Extractor, {CONCURRENCY} threads (before)": in_process_threads(),
    }
    load_before = os.getloadavg()
    try:
        seconds, cpu, pages = measure(methods, corpus, args.rounds, children)
        processes = len(children())
    finally:
        close()
    load_after = os.getloadavg()

    raw_name, single_name = "raw pypdfium2, this process", "engine, 1 request at a time"
    concurrent_name = f"engine, {CONCURRENCY} concurrent requests"

    def ratio(name: str, base: str) -> float:
        """Median over rounds of base's time / name's time (= pages/s ratio) in that round."""
        return statistics.median(b / t for t, b in zip(seconds[name], seconds[base], strict=True))

    def per_cpu(name: str) -> float:
        """Pages per CPU-second (this process and the pool's children): load-independent."""
        return pages / statistics.median(cpu[name])

    rows = [
        f"| {name} | {pages / statistics.median(seconds[name]):,.0f} | "
        f"{ratio(name, raw_name):.2f}x | {ratio(name, single_name):.2f}x | "
        f"{per_cpu(name):,.0f} ({per_cpu(name) / per_cpu(raw_name):.2f}x) | "
        f"{statistics.median(c / s for c, s in zip(cpu[name], seconds[name], strict=True)):.2f} | "
        f"{statistics.median(seconds[name]) * 1000:,.0f} ms for {pages} pages |"
        for name in methods
    ]
    speedup = ratio(concurrent_name, single_name)
    per_process = ratio(single_name, raw_name)
    per_process_cpu = per_cpu(single_name) / per_cpu(raw_name)
    pages_per_doc = pages // len(corpus)
    import pypdfium2

    section = "\n".join(
        [
            SECTION,
            "",
            f"PDF text through the parsing pool (issue 10): {len(corpus)} born-digital PDFs x "
            f"{pages_per_doc} pages, every method on the same in-memory bytes, "
            f"{args.rounds} rounds; each round runs every method back to back in rotating "
            f"order. Pool: {processes} child processes (default: one per CPU). pages/s and "
            "time: medians over the rounds. Ratios: median over the rounds of the ratio "
            "within the round (so load drifting between rounds cancels), against the raw "
            "pypdfium2 row and the engine's 1-request row.",
            "",
            f"Command: `.venv/bin/python bench/bench_pool.py --docs {args.docs} "
            f"--pages {args.pages} --rounds {args.rounds} --write`",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other "
            f"sessions (load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
            f"bench at nice {nice}), "
            f"Python {platform.python_version()}, pypdfium2 {pypdfium2.PYPDFIUM_INFO}.",
            "",
            "| method | pages/s | vs raw pypdfium2 | vs engine 1 request "
            "| pages per CPU-s (vs raw) | CPUs busy | median round |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
            *rows,
            "",
            f"Targets: {CONCURRENCY} concurrent / 1 request = **{speedup:.2f}x** "
            f"(target >= 1.7x); engine 1 request / raw pypdfium2 = **{per_process:.2f}x** "
            f"(target >= 0.8x), per CPU-second **{per_process_cpu:.2f}x**. "
            "CPUs busy = CPU-seconds / wall-seconds of this process plus the children: "
            "how many cores a method actually got.",
            "",
        ]
    )
    print(section)
    if args.write:
        text = RESULTS.read_text()
        if SECTION in text:
            start = text.index(SECTION)
            end = text.find("\n## ", start + len(SECTION))
            text = text[:start] + section + (text[end + 1 :] if end != -1 else "")
        else:
            text = text.rstrip("\n") + "\n\n" + section
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
