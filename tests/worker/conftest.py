"""Fixtures and hooks of the worker tests.

``gpu``-marked tests are skipped where CUDA is absent. ``tiny_mixtral_dir`` is
the catalog's tiny random Mixtral, built once per session and loaded by tests
through the production code path.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch  # only when GPU tests were collected: importing torch takes seconds

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_mixtral_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from zopilot_worker.testing.tiny_models import build_tiny_mixtral

    return build_tiny_mixtral(tmp_path_factory.mktemp("models") / "tiny-mixtral")


@pytest.fixture(scope="session")
def model_root(tiny_mixtral_dir: Path) -> Path:
    """A model root holding the catalog's ``tiny-mixtral`` (random weights, built locally).

    ``tiny_mixtral_dir`` is ``<root>/tiny-mixtral``; its parent is exactly the layout
    the worker expects under ZOPILOT_WORKER_MODEL_ROOT.
    """
    assert tiny_mixtral_dir.name == "tiny-mixtral"
    return tiny_mixtral_dir.parent
