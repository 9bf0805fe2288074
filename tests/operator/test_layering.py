"""The operator stays light: no torch, transformers or worker code behind any of its modules."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import zopilot_operator

FORBIDDEN = ("torch", "transformers", "zopilot_worker", "bitsandbytes", "accelerate")


def test_importing_every_module_pulls_nothing_heavy() -> None:
    modules = [
        f"zopilot_operator.{m.name}" for m in pkgutil.iter_modules(zopilot_operator.__path__)
    ]
    assert "zopilot_operator.admission" in modules
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
