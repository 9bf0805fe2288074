"""The NumPy 2 contract: the stack runs NumPy 2 and the docstrange code we use works under it.

docstrange (1.0.0-1.1.8) declares ``numpy<2``; the workspace overrides that
(root pyproject.toml, [tool.uv] override-dependencies). This file is the proof
the override points at: every docstrange processor we call converts a real
document under NumPy 2, and the one we do not call (PDFProcessor) is shown to
refuse NumPy 2, which is why PDFs take our pypdfium2 path.
"""

from __future__ import annotations

import math
from importlib.metadata import requires
from pathlib import Path

import numpy as np
import pytest
import scipy.special as sp
from zopilot_worker.testing.documents import make_docx, make_html, make_pptx, make_xlsx


def test_numpy_major_is_2() -> None:
    assert int(np.__version__.split(".")[0]) == 2


def test_docstrange_still_declares_numpy_below_2() -> None:
    # If this fails, docstrange lifted its cap: drop our override-dependencies entry.
    declared = [r for r in requires("docstrange") or [] if r.replace(" ", "").startswith("numpy")]
    assert declared and any("<2" in r for r in declared), declared


def test_scipy_sph_legendre_p_under_numpy2() -> None:
    value = sp.sph_legendre_p(1, 0, 0.3)
    assert math.isclose(float(np.ravel(value)[0]), math.sqrt(3 / (4 * math.pi)) * math.cos(0.3))


@pytest.mark.parametrize(
    ("kind", "data", "needle"),
    [
        ("docx", make_docx(None, "Contract", ["Clause one."], [["a", "b"], [1, 2]]), "| 1 | 2 |"),
        ("xlsx", make_xlsx(None, {"S": [["k", "v"], ["x", 3]]}), "| x | 3 |"),
        ("pptx", make_pptx(None, [("Title", "Body words")]), "Body words"),
        ("html", make_html(None, "Page", ["Para words"]), "Para words"),
        ("text", b"Plain words\n", "Plain words"),
    ],
)
def test_docstrange_processor_under_numpy2(
    tmp_path: Path, kind: str, data: bytes, needle: str
) -> None:
    # Exactly the processor classes the extractor dispatches to (for XLSX that is
    # docstrange's ExcelProcessor with its workbook handling repaired, see office.py).
    from docstrange.processors.base import BaseProcessor
    from zopilot_worker.extract.office import _PROCESSORS

    processor_cls, suffix, _ = _PROCESSORS[kind]
    assert issubclass(processor_cls, BaseProcessor)
    assert processor_cls.__module__.startswith("docstrange.") or kind == "xlsx"
    path = tmp_path / f"doc{suffix}"
    path.write_bytes(data)
    result = processor_cls().process(str(path))
    assert needle in result.extract_markdown()


def test_docstrange_pdf_processor_refuses_numpy2(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def no_network(*args: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    from docstrange.processors import PDFProcessor

    with pytest.raises(RuntimeError, match="NumPy"):
        PDFProcessor()
