"""The GPU-memory gate: unit tests with an injected probe, through the engine and HTTP, the
OCR model load behind it, and the memory plan as a per-process CUDA cap."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from zopilot_common.catalog import get_model
from zopilot_common.planner import PROMPT_OVERHEAD_TOKENS, plan_memory
from zopilot_common.spec import Quantization
from zopilot_worker.errors import GPUMemoryUnavailable, GPUOutOfMemory, OcrModelUnavailable
from zopilot_worker.gate import GPUMemoryGate, cap_process_memory, memory_fraction
from zopilot_worker.pipeline import DocumentEngine
from zopilot_worker.service import create_app
from zopilot_worker.settings import WorkerSettings

MIB = 1024 * 1024
GIB = 1024 * MIB


@pytest.mark.parametrize(
    ("free", "required", "headroom", "allowed"),
    [
        (10 * GIB, 9 * GIB, 512 * MIB, True),
        (10 * GIB, 10 * GIB - 512 * MIB, 512 * MIB, True),  # exactly enough
        (10 * GIB, 10 * GIB - 512 * MIB + 1, 512 * MIB, False),
        (1 * GIB, 2 * GIB, 0, False),
    ],
)
def test_gate_compares_free_memory_with_need_plus_headroom(
    free: int, required: int, headroom: int, allowed: bool
) -> None:
    gate = GPUMemoryGate(headroom, probe=lambda: (free, 24 * GIB))
    if allowed:
        assert gate.check(required, what="load x").allowed
    else:
        with pytest.raises(GPUMemoryUnavailable) as refused:
            gate.check(required, what="load x")
        assert refused.value.retriable and refused.value.http_status == 503
        assert f"{-(-free // MIB)} MiB free" in refused.value.public_message


def test_gate_without_cuda_is_a_no_op() -> None:
    gate = GPUMemoryGate(512 * MIB, probe=lambda: None)
    decision = gate.check(10**15, what="load a planet-sized model")
    assert decision.allowed and not decision.enabled


def test_gate_rejects_negative_headroom() -> None:
    with pytest.raises(ValueError):
        GPUMemoryGate(-1, probe=lambda: None)


def test_engine_load_goes_through_the_gate_with_the_planner_estimate(
    make_settings: Callable[..., WorkerSettings], model_root: Path
) -> None:
    settings = make_settings(model_root=model_root)
    seen: list[int] = []

    def probe() -> tuple[int, int]:
        return 64 * MIB, 24 * GIB

    class RecordingGate(GPUMemoryGate):
        def check(self, required_bytes: int, *, what: str) -> Any:
            seen.append(required_bytes)
            return super().check(required_bytes, what=what)

    engine = DocumentEngine(settings, gate=RecordingGate(settings.gpu_memory_headroom_bytes, probe))
    with pytest.raises(GPUMemoryUnavailable, match="tiny-mixtral"):
        engine.load_models()
    assert not engine.classifier_loaded
    expected = plan_memory(
        get_model("tiny-mixtral"),
        Quantization.NONE,
        context_tokens=settings.max_input_tokens + PROMPT_OVERHEAD_TOKENS,
    )
    assert seen == [expected.total_bytes]


def test_classify_answers_503_with_retry_after_when_the_gate_refuses(
    make_settings: Callable[..., WorkerSettings], model_root: Path, serve_app: Any
) -> None:
    settings = make_settings(model_root=model_root)
    engine = DocumentEngine(settings, gate=GPUMemoryGate(0, probe=lambda: (1 * MIB, 24 * GIB)))
    with serve_app(create_app(settings, engine=engine, doctor=None)) as client:
        response = client.post("/classify", json={"text": "x", "labels": ["a", "b"]})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "gpu_memory_unavailable"


# --- the memory plan as a hard cap (a fake CUDA device; the real one under `gpu`) -----------


class FakeCuda:
    """A CUDA API with devices of the given sizes (simulated GPUs); records the caps set."""

    def __init__(self, totals: list[int], available: bool = True) -> None:
        self.totals = totals
        self.available = available
        self.fractions: dict[int, float] = {}

    def is_available(self) -> bool:
        return self.available

    def device_count(self) -> int:
        return len(self.totals)

    def get_device_properties(self, device: int) -> Any:
        return SimpleNamespace(total_memory=self.totals[device])

    def set_per_process_memory_fraction(self, fraction: float, device: int) -> None:
        assert 0 < fraction <= 1
        self.fractions[device] = fraction


@pytest.mark.parametrize(
    ("required", "total", "expected"),
    [
        (6 * GIB, 24 * GIB, 0.25),
        (24 * GIB - 1, 24 * GIB, (24 * GIB - 1) / (24 * GIB)),
        (24 * GIB, 24 * GIB, None),  # the whole device: nothing to cap
        (80 * GIB, 24 * GIB, None),
        (0, 24 * GIB, None),  # no plan
        (6 * GIB, 0, None),
    ],
)
def test_memory_fraction(required: int, total: int, expected: float | None) -> None:
    assert memory_fraction(required, total) == expected


def test_the_plan_caps_every_device_of_the_process() -> None:
    cuda = FakeCuda([24 * GIB, 80 * GIB])
    applied = cap_process_memory(6144, cuda)
    assert applied == cuda.fractions == {0: 0.25, 1: 6144 / (80 * 1024)}
    # cap * total is the plan, to the byte.
    assert round(cuda.fractions[1] * 80 * GIB) == 6144 * MIB


def test_no_cap_without_a_plan_without_cuda_or_above_the_device() -> None:
    assert cap_process_memory(0, FakeCuda([24 * GIB])) == {}
    assert cap_process_memory(6144, FakeCuda([24 * GIB], available=False)) == {}
    too_big = FakeCuda([16 * GIB])
    assert cap_process_memory(20 * 1024, too_big) == {} and too_big.fractions == {}


def test_required_mib_comes_from_the_operators_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOPILOT_REQUIRED_MIB", "6144")
    assert WorkerSettings().required_mib == 6144
    monkeypatch.setenv("ZOPILOT_REQUIRED_MIB", "0")
    assert WorkerSettings().required_mib == 0


def test_run_job_applies_the_cap_before_loading_anything(
    make_settings: Callable[..., WorkerSettings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import zopilot_worker.gate as gate_mod
    from zopilot_worker.jobrunner import RunJobOptions, run_job

    cuda = FakeCuda([24 * GIB])
    monkeypatch.setattr(gate_mod, "cap_process_memory", lambda mib: cap_process_memory(mib, cuda))
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "a.txt").write_text("hello")
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "documents": [{"volume": {"claimName": "inbox", "path": "a.txt"}}],
                "tasks": ["extract"],
            }
        )
    )
    settings = make_settings(
        required_mib=6144, volume_root=tmp_path, termination_log=tmp_path / "t", metrics_port=0
    )
    options = RunJobOptions(spec_path=spec, output=tmp_path / "out", skip_doctor=True)
    assert run_job(options, settings, stdout=io.StringIO()) == 0
    assert cuda.fractions == {0: 0.25}


@pytest.mark.gpu
def test_allocating_past_the_plan_is_a_cuda_oom_in_this_process() -> None:
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    plan_mib = 1024
    applied = cap_process_memory(plan_mib)
    try:
        assert applied[0] == pytest.approx(plan_mib * MIB / total)
        small = torch.empty(256 * MIB, dtype=torch.uint8, device="cuda")
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(2 * plan_mib * MIB, dtype=torch.uint8, device="cuda")
        del small
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()


# --- the OCR model load through the gate (simulated GPU and weights) ------------------------


class FakeOcr:
    """Stands in for DocstrangeOcr (7.5 GB of weights are not on this machine)."""

    name = "fake-ocr"
    loads: ClassVar[list[Path]] = []
    failures: ClassVar[list[BaseException]] = []

    def __init__(self, model_dir: Path, device: str = "cuda") -> None:
        FakeOcr.loads.append(model_dir)
        if FakeOcr.failures:
            raise FakeOcr.failures.pop(0)

    def ocr_image(self, image: Any) -> str:
        return "OCR TEXT"


@pytest.fixture
def ocr_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from zopilot_worker.extract import ocr

    model = tmp_path / "ocr-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.setattr(ocr, "cuda_available", lambda: True)
    monkeypatch.setattr(ocr, "DocstrangeOcr", FakeOcr)
    monkeypatch.setattr(ocr, "_release_cuda_cache", lambda: None)
    FakeOcr.loads, FakeOcr.failures = [], []
    yield model
    assert FakeOcr.failures == [], "every planned failure happened"


def test_ocr_load_goes_through_the_gate(ocr_model: Path) -> None:
    from zopilot_common.planner import OCR_MODEL_BYTES
    from zopilot_worker.extract import ocr

    seen: list[int] = []

    class RecordingGate(GPUMemoryGate):
        def check(self, required_bytes: int, *, what: str) -> Any:
            seen.append(required_bytes)
            return super().check(required_bytes, what=what)

    busy = RecordingGate(512 * MIB, probe=lambda: (2 * GIB, 24 * GIB))
    with pytest.raises(GPUMemoryUnavailable, match="OCR model"):
        ocr.load_engine(ocr_model, gate=busy)
    assert FakeOcr.loads == [] and seen == [OCR_MODEL_BYTES]
    idle = GPUMemoryGate(512 * MIB, probe=lambda: (20 * GIB, 24 * GIB))
    engine, why = ocr.load_engine(ocr_model, gate=idle)
    assert engine is not None and why == ""


def test_cuda_oom_loading_ocr_is_reported_as_gpu_oom(ocr_model: Path) -> None:
    import torch
    from zopilot_worker.extract import ocr
    from zopilot_worker.jobrunner.exitcodes import EXIT_GPU_OOM, exit_code_for_error

    FakeOcr.failures.append(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    idle = GPUMemoryGate(0, probe=lambda: (20 * GIB, 24 * GIB))
    with pytest.raises(GPUOutOfMemory) as oom:
        ocr.load_engine(ocr_model, gate=idle)
    assert exit_code_for_error(oom.value.retriable, oom.value.code) == EXIT_GPU_OOM


def test_a_failed_ocr_load_is_tried_again_on_the_next_document(
    ocr_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zopilot_worker.extract import Extractor, ExtractSettings, ocr
    from zopilot_worker.testing.documents import make_scanned_pdf

    monkeypatch.setattr(ocr, "cuda_memory_probe", lambda: lambda: (20 * GIB, 24 * GIB))
    FakeOcr.failures.append(OSError("stale file handle on the model volume"))
    extractor = Extractor(ExtractSettings(ocr_model_dir=ocr_model))
    scan = make_scanned_pdf(["scanned page"])
    with pytest.raises(OcrModelUnavailable, match="tried again") as failed:
        extractor.extract(scan, "scan.pdf")
    assert failed.value.retriable
    document = extractor.extract(scan, "scan.pdf")  # loads again, and works
    assert document.ocr_pages == (1,) and "OCR TEXT" in document.text
    assert len(FakeOcr.loads) == 2
    extractor.extract(scan, "again.pdf")
    assert len(FakeOcr.loads) == 2  # a loaded model is kept
