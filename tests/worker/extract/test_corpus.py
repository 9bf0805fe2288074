"""Every file of the hostile corpus (tests/worker/corpus/hostile/) through the engine.

The engine is the production ``DocumentEngine``: each file is parsed in a pool
child with the default limits. Every file must end in a document or a
``WorkerError`` with a public message; none may need the pool's last resort
(a timeout or a crash), since the parsers' own guards are meant to stop them.
The per-document timeout (60 s) is a generous safety bound, not a speed check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from zopilot_worker.errors import (
    CorruptDocument,
    DocumentTooLarge,
    ParserCrashed,
    ParsingLimitExceeded,
    WorkerError,
)
from zopilot_worker.extract import ExtractedDocument
from zopilot_worker.pipeline import DocumentEngine
from zopilot_worker.settings import WorkerSettings

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "hostile"
FILES = sorted(CORPUS.iterdir())

# Outcomes that are part of the contract (the rest: any document or WorkerError).
EXPECTED: dict[str, type[WorkerError] | type[ExtractedDocument]] = {
    "comment_run_no_tag.txt": ExtractedDocument,
    "long_line_delimiters.md": ExtractedDocument,
    "spaces_then_rule.md": ExtractedDocument,
    "unclosed_comments.txt": ExtractedDocument,
    "pipes_table.md": ExtractedDocument,
    "wide_table.csv": ExtractedDocument,
    "million_entries_declared.docx": CorruptDocument,
    "many_entries_lying_count.xlsx": CorruptDocument,
    "zip_bomb.docx": CorruptDocument,
    "grid_corners.xlsx": DocumentTooLarge,
    "grid_unreferenced.xlsx": DocumentTooLarge,
    "many_pages.pdf": DocumentTooLarge,
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocumentEngine]:
    engine = DocumentEngine(
        WorkerSettings(model_root=tmp_path_factory.mktemp("models"), parse_timeout_s=60)
    )
    yield engine
    engine.close()


def test_the_corpus_is_small_and_complete() -> None:
    assert sum(path.stat().st_size for path in FILES) < 2_000_000
    assert set(EXPECTED) <= {path.name for path in FILES}
    kinds = {path.suffix for path in FILES}
    assert {".txt", ".md", ".html", ".csv", ".docx", ".xlsx", ".pdf"} <= kinds


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_every_hostile_file_ends_in_a_result_or_a_clear_error(
    engine: DocumentEngine, path: Path
) -> None:
    outcome: ExtractedDocument | WorkerError
    try:
        outcome = engine.extract(path.read_bytes(), path.name)
    except WorkerError as exc:
        outcome = exc
        assert exc.public_message and 400 <= exc.http_status < 600
        assert str(CORPUS) not in exc.public_message
    assert not isinstance(outcome, ParsingLimitExceeded | ParserCrashed), (
        f"{path.name} needed the pool's last resort: {outcome}"
    )
    if path.name in EXPECTED:
        assert isinstance(outcome, EXPECTED[path.name]), f"{path.name}: {outcome!r}"
