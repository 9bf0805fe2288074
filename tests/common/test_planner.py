"""The GPU memory planner: figures for the catalog models, job plans, messages."""

from __future__ import annotations

from typing import Any

import pytest
from zopilot_common.catalog import UnknownModelError, get_model
from zopilot_common.planner import (
    GIB,
    LOGPROB_CHUNK_ROWS,
    MAX_LABEL_TOKENS,
    MAX_LABELS,
    OCR_MODEL_BYTES,
    OVERHEAD_BYTES,
    PACKED_LABEL_TOKENS,
    PROMPT_OVERHEAD_TOKENS,
    SOURCE_PLANNER,
    SOURCE_SPEC,
    JobMemoryPlan,
    does_not_fit_message,
    plan_for_job,
    plan_memory,
)
from zopilot_common.spec import MIB, DocumentJobSpec, Quantization

RTX_4090_MIB = 24564  # what DCGM reports as the framebuffer of a 24 GiB RTX 4090
H100_80GB_MIB = 81559

INT8 = Quantization.INT8
NF4 = Quantization.NF4
NONE = Quantization.NONE


@pytest.mark.parametrize(
    ("model", "quantization", "weights_gb", "total_gb", "fits_4090"),
    [
        # DESIGN: Mixtral 8x7B is ~47 GB at 8-bit and ~26 GB at 4-bit: no 4090.
        ("mixtral-8x7b-instruct", INT8, 47.0, 49.3, False),
        ("mixtral-8x7b-instruct", NF4, 24.5, 26.7, False),
        ("mixtral-8x7b-instruct", NONE, 93.4, 95.7, False),
        ("mixtral-8x22b-instruct", NF4, 73.2, 75.9, False),
        # The dense family member is the one a 4090 can serve.
        ("mistral-7b-instruct", INT8, 7.5, 9.6, True),
        ("mistral-7b-instruct", NF4, 4.1, 6.2, True),
        ("mistral-7b-instruct", NONE, 14.5, 16.6, True),
    ],
)
def test_catalog_figures(
    model: str, quantization: Quantization, weights_gb: float, total_gb: float, fits_4090: bool
) -> None:
    plan = plan_memory(get_model(model), quantization)
    assert plan.weights_bytes / 1e9 == pytest.approx(weights_gb, abs=0.1)
    assert plan.total_bytes / 1e9 == pytest.approx(total_gb, abs=0.1)
    assert (plan.total_mib <= RTX_4090_MIB) is fits_4090


def test_mixtral_explicit_quantities() -> None:
    model = get_model("mixtral-8x7b-instruct")
    quantizable = 46_439_333_888  # attention + experts
    kept = 263_458_816  # embeddings + lm_head + norms + router, kept in 16 bit
    rows = 8_716_288  # output rows of the quantized linears
    int8 = plan_memory(model, INT8)
    assert int8.weights_bytes == quantizable + 4 * rows + 2 * kept
    nf4 = plan_memory(model, NF4)
    assert nf4.weights_bytes == int(quantizable * (0.5 + 1 / 64 + 4 / (64 * 256))) + 2 * kept
    # 2 (k, v) x 32 layers x 8 kv heads x 128 head dim x 2048 tokens x 2 bytes
    assert int8.kv_cache_bytes == 2 * 32 * 8 * 128 * 2048 * 2 == 256 * MIB
    assert plan_memory(model, INT8, context_tokens=4096, batch_size=2).kv_cache_bytes == 1 * GIB
    assert int8.overhead_bytes == OVERHEAD_BYTES
    assert int8.ocr_bytes == 0
    assert plan_memory(model, INT8, ocr=True).ocr_bytes == OCR_MODEL_BYTES
    assert int8.total_bytes == (
        int8.weights_bytes
        + int8.kv_cache_bytes
        + int8.activation_bytes
        + int8.label_scoring_bytes
        + int8.overhead_bytes
    )
    assert int8.total_mib == -(-int8.total_bytes // MIB)
    assert int8.total_gib == pytest.approx(int8.total_bytes / GIB)


def test_activations_scale_with_tokens() -> None:
    model = get_model("mixtral-8x7b-instruct")
    one = plan_memory(model, NF4, context_tokens=1024).activation_bytes
    assert plan_memory(model, NF4, context_tokens=2048).activation_bytes == 2 * one
    assert plan_memory(model, NF4, context_tokens=1024, batch_size=3).activation_bytes == 3 * one


@pytest.mark.parametrize(("tokens", "batch"), [(0, 1), (1, 0), (-5, 1)])
def test_rejects_non_positive_sizes(tokens: int, batch: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        plan_memory(get_model("tiny-mixtral"), NONE, context_tokens=tokens, batch_size=batch)


def test_explain_is_one_readable_line() -> None:
    line = plan_memory(get_model("mixtral-8x7b-instruct"), INT8, ocr=True).explain()
    assert "\n" not in line
    assert line.startswith("mixtral-8x7b-instruct at int8: weights 43.8 GiB + KV cache 0.2 GiB")
    assert "OCR model 8.0 GiB" in line
    assert "label scoring 0.4 GiB (2048 tokens)" in line
    assert line.endswith("= 53.9 GiB")


def test_label_scoring_counts_the_packed_label_tokens() -> None:
    model = get_model("mixtral-8x7b-instruct")
    plan = plan_memory(model, NF4)
    assert plan.label_tokens == PACKED_LABEL_TOKENS == MAX_LABELS * MAX_LABEL_TOKENS == 2048
    # KV of 2048 tokens (256 MiB) + bf16 logits at 2048 positions + one float32 chunk;
    # the label pass's activations stay under the 2560-token prompt's.
    assert plan.label_scoring_bytes == (
        256 * MIB + 2048 * 32000 * 2 + LOGPROB_CHUNK_ROWS * 32000 * 4
    )
    none = plan_memory(model, NF4, label_tokens=0)
    assert none.label_scoring_bytes == 0
    assert plan.total_bytes - none.total_bytes == plan.label_scoring_bytes
    # A short prompt with many label tokens: the label pass's activations dominate.
    short = plan_memory(model, NF4, context_tokens=64)
    assert short.label_scoring_bytes > plan.label_scoring_bytes
    assert short.label_scoring_bytes == (
        plan.label_scoring_bytes
        + plan_memory(model, NF4, context_tokens=2048).activation_bytes
        - short.activation_bytes
    )
    with pytest.raises(ValueError, match="label_tokens"):
        plan_memory(model, NF4, label_tokens=-1)


def _job(**overrides: Any) -> DocumentJobSpec:
    spec: dict[str, Any] = {
        "documents": [{"url": "https://files.example/a.pdf"}],
        "tasks": ["extract", "classify"],
        "classify": {
            "labels": ["invoice", "receipt"],
            "model": "mixtral-8x7b-instruct",
            "quantization": "nf4",
        },
    }
    spec.update(overrides)
    return DocumentJobSpec.from_k8s(spec)


def test_job_with_explicit_gpu_memory() -> None:
    plan = plan_for_job(_job(gpuMemory="20Gi"))
    assert plan == JobMemoryPlan(
        required_mib=20480,
        source=SOURCE_SPEC,
        detail="20480 MiB requested by spec.gpuMemory (20Gi)",
    )


def test_job_classify_and_extract_with_ocr() -> None:
    plan = plan_for_job(_job())
    assert plan.source == SOURCE_PLANNER
    assert plan.plan is not None
    assert plan.plan.context_tokens == 2048 + PROMPT_OVERHEAD_TOKENS
    assert plan.plan.ocr_bytes == OCR_MODEL_BYTES
    assert plan.required_mib == plan.plan.total_mib
    assert plan.detail == plan.plan.explain()


@pytest.mark.parametrize(
    ("tasks", "ocr", "expect_ocr"),
    [
        (["classify"], "always", False),  # OCR only matters when extracting
        (["extract", "classify"], "never", False),
        (["extract", "classify"], "auto", True),
        (["extract", "classify"], "always", True),
    ],
)
def test_job_ocr_budget(tasks: list[str], ocr: str, expect_ocr: bool) -> None:
    plan = plan_for_job(_job(tasks=tasks, extract={"ocr": ocr}))
    assert plan.plan is not None
    assert (plan.plan.ocr_bytes > 0) is expect_ocr


def test_job_uses_max_input_tokens() -> None:
    classify = {"labels": ["a", "b"], "model": "mistral-7b-instruct", "maxInputTokens": 8192}
    plan = plan_for_job(_job(classify=classify))
    assert plan.plan is not None
    assert plan.plan.context_tokens == 8192 + PROMPT_OVERHEAD_TOKENS
    assert plan.plan.quantization is NF4  # the spec's default


@pytest.mark.parametrize(
    ("ocr", "required_mib"),
    [("never", OVERHEAD_BYTES // MIB), ("auto", (OVERHEAD_BYTES + OCR_MODEL_BYTES) // MIB)],
)
def test_extract_only_jobs(ocr: str, required_mib: int) -> None:
    plan = plan_for_job(_job(tasks=["extract"], classify=None, extract={"ocr": ocr}))
    assert plan.required_mib == required_mib
    assert plan.plan is None
    assert plan.source == SOURCE_PLANNER
    assert plan.detail.startswith("extract with") or plan.detail.startswith("extract without")


def test_job_with_unknown_model() -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'gpt-9'"):
        plan_for_job(_job(classify={"labels": ["a", "b"], "model": "gpt-9"}))


@pytest.mark.parametrize(
    ("model", "quantization", "gpu_mib", "expected"),
    [
        (
            "mixtral-8x7b-instruct",
            INT8,
            RTX_4090_MIB,
            "needs 45.9 GiB at int8; largest GPU offers 24.0 GiB; no quantization of "
            "mixtral-8x7b-instruct fits: choose a smaller model or larger GPUs",
        ),
        (
            "mixtral-8x7b-instruct",
            INT8,
            32768,
            "needs 45.9 GiB at int8; largest GPU offers 32.0 GiB; "
            "quantization nf4 would need 24.9 GiB",
        ),
        (
            "mixtral-8x22b-instruct",
            NONE,
            H100_80GB_MIB,
            "needs 264.5 GiB at none; largest GPU offers 79.6 GiB; "
            "quantization nf4 would need 70.7 GiB",
        ),
    ],
)
def test_does_not_fit_message(
    model: str, quantization: Quantization, gpu_mib: int, expected: str
) -> None:
    plan = plan_memory(get_model(model), quantization)
    assert does_not_fit_message(plan, gpu_mib) == expected
    # The same text from a job plan, and with the quantization passed explicitly.
    job_plan = JobMemoryPlan(plan.total_mib, SOURCE_PLANNER, plan.explain(), plan)
    assert does_not_fit_message(job_plan, gpu_mib, quantization) == expected


def test_does_not_fit_message_for_explicit_quantity() -> None:
    plan = plan_for_job(_job(gpuMemory="30Gi"))
    assert does_not_fit_message(plan, RTX_4090_MIB) == (
        "needs 30.0 GiB (spec.gpuMemory); largest GPU offers 24.0 GiB; lower spec.gpuMemory"
    )
