"""``zopilot-worker doctor``: prove this environment's NumPy 2 stack works, or fail loudly.

Every compiled extension the worker uses is imported and made to do a small
piece of real work on NumPy arrays: an extension built against NumPy 1.x
either fails to import under NumPy 2 or prints "compiled using NumPy 1.x" /
"_ARRAY_API not found" and breaks on first use, and both are caught here. The
scipy special functions that broke in production (``sph_legendre_p``) are run
with numeric checks, and docstrange's DOCX/XLSX processors convert generated
documents (docstrange declares ``numpy<2``; we override it).

Runs in the image build, at pod start and in CI; exits 1 on any FAIL. NOTE
rows are facts worth knowing that are not failures (e.g. no CUDA here).
Takes ~10 s, most of it importing torch.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["OK", "FAIL", "NOTE"]
_ABI_SYMPTOMS = ("compiled using NumPy 1", "_ARRAY_API not found", "numpy.core.multiarray failed")


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: Status
    detail: str
    seconds: float


class Note(Exception):
    """Raised by a check whose finding is informational (status NOTE)."""


def _close(actual: Any, expected: complex, what: str) -> None:
    value = complex(actual.ravel()[0]) if hasattr(actual, "ravel") else complex(actual)
    if not abs(value - expected) <= 1e-9 * max(1.0, abs(expected)):
        raise AssertionError(f"{what} = {value}, expected {expected}")


def check_numpy() -> str:
    import numpy as np

    if int(np.__version__.split(".")[0]) != 2:
        raise AssertionError(f"numpy {np.__version__}: the worker requires NumPy 2")
    x = np.linalg.solve(np.array([[3.0, 1.0], [1.0, 2.0]]), np.array([9.0, 8.0]))
    assert np.allclose(x, [2.0, 3.0]), x
    return f"numpy {np.__version__}"


def check_scipy() -> str:
    import numpy as np
    import scipy
    import scipy.linalg
    import scipy.ndimage

    assert math.isclose(float(scipy.linalg.det(np.array([[2.0, 1.0], [1.0, 3.0]]))), 5.0)
    blurred = scipy.ndimage.gaussian_filter(np.eye(5), sigma=1.0)
    assert math.isclose(float(blurred.sum()), 5.0, rel_tol=1e-6)
    return f"scipy {scipy.__version__}: linalg, ndimage"


def check_scipy_special() -> str:
    import numpy as np
    import scipy.special as sp

    theta, phi = 0.7, 0.2
    # sph_legendre_p(n, m, theta) = Y_n^m(theta, 0) (scipy >= 1.15, Condon-Shortley phase).
    _close(
        sp.sph_legendre_p(1, 0, theta),
        math.sqrt(3 / (4 * math.pi)) * math.cos(theta),
        "sph_legendre_p(1, 0)",
    )
    _close(
        sp.sph_legendre_p(2, 1, theta),
        -math.sqrt(15 / (8 * math.pi)) * math.sin(theta) * math.cos(theta),
        "sph_legendre_p(2, 1)",
    )
    _close(
        sp.sph_harm_y(1, 1, theta, phi),
        -math.sqrt(3 / (8 * math.pi)) * math.sin(theta) * complex(math.cos(phi), math.sin(phi)),
        "sph_harm_y(1, 1)",
    )
    _close(sp.lpmv(0, 2, 0.5), -0.125, "lpmv(0, 2, 0.5)")
    _close(sp.gamma(np.float64(5.0)), 24.0, "gamma(5)")
    _close(sp.erf(1.0), 0.8427007929497149, "erf(1)")
    return "sph_legendre_p, sph_harm_y, lpmv, gamma, erf"


def check_pandas() -> str:
    import pandas as pd

    frame = pd.DataFrame({"k": ["a", "b", "a"], "v": [1.0, 2.0, 3.0]})
    assert frame.groupby("k")["v"].sum().to_dict() == {"a": 4.0, "b": 2.0}
    return f"pandas {pd.__version__}"


def check_cv2() -> str:
    import cv2
    import numpy as np

    image = np.zeros((8, 8), dtype=np.uint8)
    image[4, 4] = 255
    blurred = cv2.GaussianBlur(image, (3, 3), 0)
    assert blurred[4, 4] < 255 and blurred[4, 5] > 0
    return f"opencv {cv2.__version__}"


def check_skimage() -> str:
    import numpy as np
    import skimage
    from skimage.transform import resize

    resized = resize(np.ones((4, 4)), (2, 2), anti_aliasing=False)  # type: ignore[no-untyped-call]
    assert resized.shape == (2, 2)
    return f"scikit-image {getattr(skimage, '__version__', '?')}"


def check_pillow() -> str:
    import numpy as np
    import PIL
    from PIL import Image

    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert (np.asarray(Image.fromarray(array)) == array).all()
    return f"pillow {PIL.__version__}"


def check_torch() -> str:
    import numpy as np
    import torch

    tensor = torch.from_numpy(np.arange(6, dtype=np.float32))
    assert float(tensor.sum()) == 15.0 and tensor.numpy().dtype == np.float32
    return f"torch {torch.__version__}"


def check_safetensors_tokenizers() -> str:
    import numpy as np
    import safetensors
    import tokenizers
    from safetensors.numpy import load, save
    from tokenizers import Tokenizer, models, pre_tokenizers

    weights = {"w": np.arange(4, dtype=np.float32)}
    assert (load(save(weights))["w"] == weights["w"]).all()
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    assert tok.encode("hello world").ids == [1, 2]
    return f"safetensors {safetensors.__version__}, tokenizers {tokenizers.__version__}"


def check_bitsandbytes() -> str:
    import torch

    # Without CUDA, bitsandbytes logs that its GPU kernels are missing: expected, not a failure.
    quiet = logging.getLogger("bitsandbytes")
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        import bitsandbytes
    finally:
        quiet.setLevel(level)
    if not torch.cuda.is_available():
        raise Note(f"bitsandbytes {bitsandbytes.__version__} imports; no CUDA, so no 8/4-bit")
    return f"bitsandbytes {bitsandbytes.__version__}"


def check_pdf_xml() -> str:
    import lxml
    import pypdfium2
    from lxml import etree

    from zopilot_worker.extract import Extractor
    from zopilot_worker.testing.documents import make_minimal_pdf

    doc = Extractor().extract(make_minimal_pdf("Doctor says hello"), "doctor.pdf")
    assert doc.text == "Doctor says hello", doc.text
    assert etree.fromstring(b"<a><b>x</b></a>").findtext("b") == "x"
    return f"pypdfium2 {pypdfium2.PYPDFIUM_INFO}, lxml {lxml.__version__}"


def check_docstrange() -> str:
    from importlib.metadata import version

    from zopilot_worker.extract import Extractor
    from zopilot_worker.testing.documents import make_docx, make_xlsx

    extractor = Extractor()
    docx = extractor.extract(
        make_docx(None, "Doctor", ["Numpy two works"], [["a", "b"], [1, 2]]), "doctor.docx"
    )
    assert "Numpy two works" in docx.text and "| 1 | 2 |" in docx.markdown, docx.markdown
    xlsx = extractor.extract(make_xlsx(None, {"S": [["name", "n"], ["x", 3]]}), "doctor.xlsx")
    assert "| x | 3 |" in xlsx.markdown, xlsx.markdown
    return f"docstrange {version('docstrange')}: DOCXProcessor, ExcelProcessor"


def check_cuda() -> str:
    import torch

    if not torch.cuda.is_available():
        raise Note("no CUDA device: OCR and classification need a GPU node")
    props = torch.cuda.get_device_properties(0)
    return f"{torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.0f} GiB"


CHECKS: tuple[tuple[str, Callable[[], str]], ...] = (
    ("numpy", check_numpy),
    ("scipy", check_scipy),
    ("scipy.special", check_scipy_special),
    ("pandas", check_pandas),
    ("opencv", check_cv2),
    ("scikit-image", check_skimage),
    ("pillow", check_pillow),
    ("torch", check_torch),
    ("safetensors+tokenizers", check_safetensors_tokenizers),
    ("bitsandbytes", check_bitsandbytes),
    ("pypdfium2+lxml", check_pdf_xml),
    ("docstrange", check_docstrange),
    ("cuda", check_cuda),
)


def _run(name: str, check: Callable[[], str]) -> CheckResult:
    start = time.perf_counter()
    stderr = io.StringIO()
    status: Status = "OK"
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(stderr):
        warnings.simplefilter("always")
        try:
            detail = check()
        except Note as note:
            status, detail = "NOTE", str(note)
        except Exception as exc:
            status, detail = "FAIL", f"{type(exc).__name__}: {exc}".strip()
    noise = stderr.getvalue() + " ".join(str(w.message) for w in caught)
    if any(symptom in noise for symptom in _ABI_SYMPTOMS):
        status, detail = "FAIL", f"built against NumPy 1.x: {noise.strip()[:300]}"
    return CheckResult(
        name, status, detail.replace("\n", " ")[:300], round(time.perf_counter() - start, 3)
    )


def run_checks(require_cuda: bool = False) -> list[CheckResult]:
    """Run every check (never raises); with ``require_cuda`` a missing GPU is a FAIL."""
    results = [_run(name, check) for name, check in CHECKS]
    if require_cuda:
        results = [
            CheckResult(r.check, "FAIL", r.detail, r.seconds)
            if r.check == "cuda" and r.status != "OK"
            else r
            for r in results
        ]
    return results


def format_table(results: Sequence[CheckResult]) -> str:
    """An aligned text table: check, status, detail (and seconds)."""
    rows = [("CHECK", "STATUS", "SECONDS", "DETAIL")]
    rows += [(r.check, r.status, f"{r.seconds:.2f}", r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows]
    failed = sum(r.status == "FAIL" for r in results)
    total = sum(r.seconds for r in results)
    lines.append(f"{len(results)} checks, {failed} failed, {total:.1f} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the table (or ``--json``); exit 1 if any check failed."""
    parser = argparse.ArgumentParser(
        prog="zopilot-worker doctor", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--require-cuda",
        action="store_true",
        help="fail when no CUDA device is visible (use at GPU pod start)",
    )
    args = parser.parse_args(argv)
    results = run_checks(require_cuda=args.require_cuda)
    ok = all(r.status != "FAIL" for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [asdict(r) for r in results]}, indent=2))
    else:
        print(format_table(results))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
