"""Repository invariants: package names, the operator's light dependency set, the lock, images."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "transformers", "accelerate", "bitsandbytes", "docstrange", "scipy", "numpy"}


def _lock() -> dict[str, dict[str, object]]:
    data = tomllib.loads((REPO / "uv.lock").read_text())
    return {p["name"]: p for p in data["package"]}


def _closure(root: str) -> set[str]:
    pkgs, seen, todo = _lock(), set(), [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for dep in pkgs[name].get("dependencies", []):  # type: ignore[union-attr]
            todo.append(dep["name"])
    return seen


def test_nothing_importable_is_called_operator() -> None:
    assert not (REPO / "operator" / "__init__.py").exists()
    import operator

    assert hasattr(operator, "itemgetter") and "site-packages" not in str(operator.__file__)
    assert importlib.import_module("zopilot_operator").__name__ == "zopilot_operator"


def test_operator_image_never_pulls_the_ml_stack() -> None:
    heavy = _closure("zopilot-operator") & HEAVY
    assert heavy == set(), f"zopilot-operator depends on {heavy}"
    assert "zopilot-worker" not in _closure("zopilot-operator")


def test_worker_resolves_on_numpy_2_with_the_docstrange_override() -> None:
    pkgs = _lock()
    assert str(pkgs["numpy"]["version"]).startswith("2.")
    assert "docstrange" in _closure("zopilot-worker")
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "numpy>=2,<3" in root["tool"]["uv"]["override-dependencies"]
    # The override is explained where it is stated.
    text = (REPO / "pyproject.toml").read_text()
    assert "docstrange" in text.split("override-dependencies")[0].rsplit("[tool.uv]", 1)[1]


def test_dockerfiles_copy_only_what_exists() -> None:
    for name in ("Dockerfile.operator", "Dockerfile.worker"):
        text = (REPO / name).read_text()
        assert re.search(r"^FROM ", text, re.M), name
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
            *sources, _dest = line.split()
            for src in sources:
                if src.startswith("--"):
                    continue
                assert (REPO / src).exists(), f"{name}: COPY {src} does not exist"
    assert "doctor" in (REPO / "Dockerfile.worker").read_text()
