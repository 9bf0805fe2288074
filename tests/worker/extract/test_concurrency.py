"""The service runs extract() from a thread pool (4 at once): results must not depend on it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from zopilot_worker.extract import ExtractedDocument, Extractor
from zopilot_worker.testing.documents import (
    make_docx,
    make_html,
    make_mixed_pdf,
    make_pptx,
    make_text_pdf,
    make_xlsx,
)


def test_four_threads_give_the_same_results(extractor: Extractor) -> None:
    inputs = [
        (make_text_pdf([f"Page {i} of the long report, with words." for i in range(8)]), "r.pdf"),
        (make_mixed_pdf(["First page text.", "scan", "Third page text."]), "m.pdf"),
        (make_docx(None, "Memo", ["Alpha", "Beta"], [["k", "v"], ["a", 1]]), "memo.docx"),
        (make_xlsx(None, {"S": [["k", "v"], ["a", 1]], "T": [["x"], [2]]}), "b.xlsx"),
        (make_pptx(None, [("Slide", "Body")]), "d.pptx"),
        (make_html(None, "Page", ["Para"]), "p.html"),
        (b"plain text body\n", "t.txt"),
    ]
    expected = [extractor.extract(data, name) for data, name in inputs]

    def run(i: int) -> ExtractedDocument:
        data, name = inputs[i % len(inputs)]
        return extractor.extract(data, name)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(len(inputs) * 4)))
    for i, result in enumerate(results):
        assert result == expected[i % len(inputs)]
