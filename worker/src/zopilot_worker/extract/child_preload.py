"""Imported once by the parsing pool's fork server, so every forked child starts warm.

The fork server is a fresh interpreter (no torch, no service threads). What it
imports here, each parsing child inherits for the cost of a fork instead of
seconds of imports per child: pandas alone takes seconds on a busy node.
NumPy's BLAS is held to one thread first: the children are the parallelism,
and a single-threaded fork server forks cleanly.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import docx  # noqa: E402  python-docx (DOCXProcessor)
import openpyxl  # noqa: E402  (pandas' XLSX reader)
import pandas  # noqa: E402  (ExcelProcessor)
import pptx  # noqa: E402  python-pptx (PPTXProcessor)
import pypdfium2  # noqa: E402

import zopilot_worker.extract.isolation as isolation  # noqa: E402

__all__ = ["docx", "isolation", "openpyxl", "pandas", "pptx", "pypdfium2"]
