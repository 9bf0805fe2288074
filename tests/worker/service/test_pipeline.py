"""The engine both the service and the job runner use, called directly."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from zopilot_common.catalog import UnknownModelError
from zopilot_worker.metrics import WorkerMetrics
from zopilot_worker.pipeline import DocumentEngine, create_engine
from zopilot_worker.settings import WorkerSettings
from zopilot_worker.testing.documents import make_docx

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def test_classify_document_extracts_then_classifies_and_counts(
    make_settings: Callable[..., WorkerSettings], model_root: Path
) -> None:
    metrics = WorkerMetrics()
    engine = create_engine(make_settings(model_root=model_root), metrics=metrics)
    assert not engine.classifier_loaded  # lazy until first use
    data = make_docx(None, "INVOICE", ["Invoice number INV-3, amount due 80 EUR."])
    result = engine.classify_document(data, "inv.docx", DOCX, ["invoice", "receipt"])
    assert engine.classifier_loaded
    assert result.document.kind == "docx" and "INV-3" in result.document.markdown
    assert result.classification.label in ("invoice", "receipt")
    assert math.isclose(sum(result.classification.scores.values()), 1.0, abs_tol=1e-6)
    sample = metrics.registry.get_sample_value
    assert sample("zopilot_worker_documents_total", {"kind": "docx", "outcome": "ok"}) == 1
    label = result.classification.label
    assert sample("zopilot_worker_classifications_total", {"model": "tiny-mixtral", "label": label})
    assert (sample("zopilot_worker_model_load_seconds", {"model": "tiny-mixtral"}) or 0) > 0
    assert sample("zopilot_worker_model_loaded", {"model": "tiny-mixtral"}) == 1
    engine.close()
    assert sample("zopilot_worker_model_loaded", {"model": "tiny-mixtral"}) == 0


def test_unknown_model_fails_at_construction(
    make_settings: Callable[..., WorkerSettings],
) -> None:
    with pytest.raises(UnknownModelError, match="tiny-mixtral"):
        DocumentEngine(make_settings(classify_model="gpt-17"))
