"""The parsing pool: a crashing, stalling or memory-hungry parser ends only its child.

Crashes and stalls are simulated (``zopilot_worker.testing.parser_faults``): the
child segfaults, aborts, loops or over-allocates when the file name asks for it,
which is what PDFium or a pathological pure-Python parse would do, on demand.
Everything else is real: real child processes, real signals, a real RLIMIT_AS.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from zopilot_worker.errors import (
    EmptyDocument,
    ParserCrashed,
    ParsingMemoryExceeded,
    ParsingTimeout,
    UnsupportedDocumentType,
    WorkerError,
)
from zopilot_worker.extract import ExtractedDocument, Extractor, ExtractSettings
from zopilot_worker.extract.isolation import ParsingPool, PoolLimits, default_processes
from zopilot_worker.testing.documents import make_docx, make_html, make_text_pdf, make_xlsx

FAULTS = "zopilot_worker.testing.parser_faults:by_name"
MakePool = Callable[..., ParsingPool]
PDF = make_text_pdf(["Invoice INV-7: amount due 10 EUR", "Second page with words."])


@pytest.fixture
def make_pool() -> Iterator[MakePool]:
    """Pools that are closed after the test, which checks that no child outlives them."""
    pools: list[ParsingPool] = []

    def make(processes: int = 2, timeout_s: float = 60.0, memory_mib: int = 3072) -> ParsingPool:
        pool = ParsingPool(
            ExtractSettings(), PoolLimits(processes, timeout_s, memory_mib), fault_hook=FAULTS
        )
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pids = pool.pids
        pool.close()
        assert pool.pids == []
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)  # reaped, not a zombie


def _ok(pool: ParsingPool) -> ExtractedDocument:
    document = pool.extract(PDF, "ok.pdf")
    assert "INV-7" in document.text
    return document


def test_results_and_errors_match_the_in_process_extractor(make_pool: MakePool) -> None:
    pool = make_pool()
    extractor = Extractor()
    inputs = [
        (PDF, "r.pdf"),
        (make_docx(None, "Memo", ["Alpha"], [["k", "v"], ["a", 1]]), "m.docx"),
        (make_xlsx(None, {"S": [["k", "v"], ["a", 1]]}), "b.xlsx"),
        (make_html(None, "Page", ["Para"]), "p.html"),
        (b"plain text\n", "t.txt"),
    ]
    for data, name in inputs:
        assert pool.extract(data, name) == extractor.extract(data, name)
    for data, name, error in [
        (b"", "e.pdf", EmptyDocument),
        (b"\x89PNG\r\n\x1a\n....", "i.png", UnsupportedDocumentType),
    ]:
        with pytest.raises(error) as info:
            pool.extract(data, name)
        with pytest.raises(error) as local:
            extractor.extract(data, name)
        assert info.value.public_message == local.value.public_message
        assert info.value.code == local.value.code


@pytest.mark.parametrize(
    ("name", "signal_name"), [("crash.pdf", "SIGSEGV"), ("abort.pdf", "SIGABRT")]
)
def test_a_crashing_parser_kills_only_its_child(
    make_pool: MakePool, name: str, signal_name: str
) -> None:
    pool = make_pool(processes=2)
    pool.warm()
    before = pool.pids
    assert len(before) == 2
    with pytest.raises(ParserCrashed) as info:
        pool.extract(PDF, name)
    assert info.value.http_status == 422
    assert signal_name in info.value.public_message and name in info.value.public_message
    after = pool.pids
    assert len(after) == 2, "the dead child was replaced"
    assert len(set(before) & set(after)) == 1, "exactly one child died"
    _ok(pool)
    _ok(pool)


def test_a_stalled_parser_is_killed_at_its_deadline_while_others_work(make_pool: MakePool) -> None:
    pool = make_pool(processes=2, timeout_s=3.0)
    pool.warm()
    with ThreadPoolExecutor(2) as threads:
        stalled = threads.submit(pool.extract, b"text", "stall.txt")
        # The other child keeps serving while one is stuck.
        for _ in range(3):
            _ok(pool)
        with pytest.raises(ParsingTimeout) as info:
            stalled.result()
    assert "3 s" in info.value.public_message and info.value.http_status == 422
    assert len(pool.pids) == 2
    _ok(pool)


def test_the_address_space_limit_holds_in_the_child(make_pool: MakePool) -> None:
    pool = make_pool(processes=1, memory_mib=1024)
    with pytest.raises(ParsingMemoryExceeded) as info:
        pool.extract(PDF, "hog.pdf")  # asks for 64 GiB
    assert info.value.http_status == 422 and "memory" in info.value.public_message
    _ok(pool)


def test_every_error_is_a_worker_error_with_a_public_message(make_pool: MakePool) -> None:
    pool = make_pool(processes=1, timeout_s=3.0, memory_mib=1024)
    for name in ("crash.pdf", "abort.pdf", "stall.txt", "hog.pdf"):
        with pytest.raises(WorkerError) as info:
            pool.extract(PDF if name.endswith(".pdf") else b"x", name)
        assert 400 <= info.value.http_status < 600 and info.value.public_message
    _ok(pool)


def test_children_start_lazily_and_close_is_not_final(make_pool: MakePool) -> None:
    pool = make_pool(processes=2)
    assert pool.pids == []  # constructing a pool starts nothing
    _ok(pool)
    assert len(pool.pids) == 1  # one document needed one child
    pool.close()
    assert pool.pids == []
    _ok(pool)


def test_more_callers_than_children_wait_for_a_free_one(make_pool: MakePool) -> None:
    pool = make_pool(processes=2)
    with ThreadPoolExecutor(6) as threads:
        documents = list(threads.map(lambda _: _ok(pool), range(12)))
    assert len({d.text for d in documents}) == 1
    assert len(pool.pids) == 2


def test_default_size_is_one_child_per_usable_cpu() -> None:
    assert default_processes() == len(os.sched_getaffinity(0))
