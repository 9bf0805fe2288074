"""Faults a parsing process can be made to have, for tests of the isolation pool.

Passed as ``ParsingPool(..., fault_hook="zopilot_worker.testing.parser_faults:by_name")``
(Python only; no setting or request reaches it). The child calls ``by_name``
with each document's file name before extracting it, so a test picks the
fault by naming the file. These simulate PDFium crashing or hanging, which we
cannot trigger on demand with a real PDF.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time


def by_name(filename: str) -> None:
    """``crash*``: segfault; ``abort*``: SIGABRT; ``stall*``: hang; ``hog*``: allocate 64 GiB."""
    if filename.startswith("crash"):
        ctypes.string_at(0)  # reads address 0: SIGSEGV, as a crashing C parser would
    elif filename.startswith("abort"):
        os.kill(os.getpid(), signal.SIGABRT)
    elif filename.startswith("stall"):
        while True:  # a parser stuck in a loop holds the CPU and never returns
            time.sleep(0.01)
    elif filename.startswith("hog"):
        bytearray(64 << 30)  # past any address-space limit: MemoryError in the child
