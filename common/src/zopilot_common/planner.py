"""GPU memory planner: how much GPU memory a model or a DocumentJob needs.

Computed from the catalog's architecture numbers before anything starts, so a
job that cannot fit is refused with figures instead of discovered by an OOM.
The plan is deliberately a little pessimistic (it is used for admission: an
over-estimate wastes some packing, an under-estimate kills a pod).

Pure: stdlib + zopilot_common only (the operator imports it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from zopilot_common.catalog import CATALOG, ModelSpec, get_model
from zopilot_common.spec import MIB, DocumentJobSpec, Quantization, Task

GIB = 1024 * MIB

# Bytes per weight of a quantized linear layer.
# - none: the checkpoint's bf16/fp16.
# - int8: LLM.int8 (bitsandbytes Linear8bitLt) stores int8 weights plus one
#   fp32 absmax scale per output row (``SCB``), counted separately per row.
# - nf4: bitsandbytes Linear4bit packs two 4-bit codes per byte; one absmax per
#   block of 64 weights (bitsandbytes' default 4-bit blocksize). With double
#   quantization (our BitsAndBytesConfig) each absmax is itself quantized to
#   8 bit in blocks of 256, with one fp32 second-level absmax per block:
#   0.5 + 1/64 + 4/(64*256) bytes per weight (~0.516).
_QUANTIZED_BYTES_PER_PARAM: Mapping[Quantization, float] = {
    Quantization.NONE: 2.0,
    Quantization.INT8: 1.0,
    Quantization.NF4: 0.5 + 1 / 64 + 4 / (64 * 256),
}
# Bytes per output row of a quantized linear (int8's fp32 SCB scale).
_ROW_SCALE_BYTES: Mapping[Quantization, int] = {
    Quantization.NONE: 0,
    Quantization.INT8: 4,
    Quantization.NF4: 0,
}
# Embeddings, lm_head, norms and router stay in 16 bit under every quantization.
KEPT_BYTES_PER_PARAM = 2
# KV cache entries are stored in the compute dtype (bf16/fp16).
KV_BYTES_PER_VALUE = 2

# Activations of one prefill pass, per token, in 16-bit values: a handful of
# hidden-size tensors alive at once in a decoder layer (residual, normed input,
# q/k/v and attention output, layer output: we count 8) plus the SwiGLU
# intermediates (gate, up, product) of each routed expert. The prompt's logits
# are taken for its last position only; the label positions' logits are
# counted in label_scoring_bytes.
ACTIVATION_HIDDEN_COPIES = 8
ACTIVATION_BYTES_PER_VALUE = 2

# The CUDA context of a torch process (driver state, cuBLAS/cuBLASLt handles,
# lazily loaded kernels) typically occupies 300-600 MiB as seen by nvidia-smi
# on Ada/Hopper GPUs with CUDA 12 before any tensor is allocated; we take the
# top of that range.
CUDA_CONTEXT_BYTES = 512 * MIB
# Headroom for the caching allocator's fragmentation and for bitsandbytes'
# dequantization / cuBLASLt workspaces during the forward pass.
ALLOCATOR_RESERVE_BYTES = 512 * MIB
OVERHEAD_BYTES = CUDA_CONTEXT_BYTES + ALLOCATOR_RESERVE_BYTES

# docstrange's GPU OCR loads nanonets/Nanonets-OCR-s (a Qwen2.5-VL-3B
# fine-tune, 3.75e9 parameters) with torch_dtype="auto", i.e. bf16: 7.0 GiB of
# weights, plus ~1 GiB for the vision encoder's activations and the generation
# cache of one page at a time.
OCR_MODEL_BYTES = 8 * GIB

# The classifier's prompt wraps the document in an instruction (which lists
# the labels) and a chat template, and the labels' tokens are packed after it
# for scoring. This many tokens on top of max_input_tokens cover both for
# typical label sets (a few dozen short labels: ~10 tokens of instruction and
# template per label plus ~100 fixed). Extreme sets (64 labels of 100
# characters) can need ~3000 and lean on the allocator reserve and the
# activation estimate's pessimism.
PROMPT_OVERHEAD_TOKENS = 512

# Label scoring (zopilot_worker.classify.scoring) packs every label's tokens
# into one forward pass after the prompt's KV cache. The worker refuses a label
# longer than MAX_LABEL_TOKENS tokens (422), and a request has at most
# MAX_LABELS labels (the CRD's limit), so at most PACKED_LABEL_TOKENS tokens
# are packed: their KV cache entries, their activations (when larger than the
# prompt's) and their logits count. Logits are taken only at label positions:
# 16-bit from lm_head, then log-probabilities in float32 LOGPROB_CHUNK_ROWS
# rows at a time.
MAX_LABELS = 64
MAX_LABEL_TOKENS = 32
PACKED_LABEL_TOKENS = MAX_LABELS * MAX_LABEL_TOKENS
LOGIT_BYTES_PER_VALUE = 2
LOGPROB_BYTES_PER_VALUE = 4
LOGPROB_CHUNK_ROWS = 256

SOURCE_SPEC = "spec.gpuMemory"
SOURCE_PLANNER = "planner"


@dataclass(frozen=True)
class MemoryPlan:
    """GPU memory one worker needs for a model, by component, in bytes."""

    model: ModelSpec
    quantization: Quantization
    context_tokens: int
    batch_size: int
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    overhead_bytes: int
    ocr_bytes: int
    label_tokens: int = 0
    """Label tokens packed into the scoring pass (see PACKED_LABEL_TOKENS)."""
    label_scoring_bytes: int = 0
    """Their KV cache, logits and any activations beyond the prompt's."""

    @property
    def total_bytes(self) -> int:
        return (
            self.weights_bytes
            + self.kv_cache_bytes
            + self.activation_bytes
            + self.label_scoring_bytes
            + self.overhead_bytes
            + self.ocr_bytes
        )

    @property
    def total_mib(self) -> int:
        """Total in MiB, rounded up (the unit of DCGM's framebuffer metrics)."""
        return -(-self.total_bytes // MIB)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    def explain(self) -> str:
        """One line for humans, e.g. for a condition message or a log."""
        parts = [
            f"weights {_gib(self.weights_bytes)}",
            f"KV cache {_gib(self.kv_cache_bytes)} ({self.context_tokens} tokens)",
            f"activations {_gib(self.activation_bytes)}",
            f"label scoring {_gib(self.label_scoring_bytes)} ({self.label_tokens} tokens)",
            f"CUDA overhead {_gib(self.overhead_bytes)}",
        ]
        if self.ocr_bytes:
            parts.append(f"OCR model {_gib(self.ocr_bytes)}")
        return (
            f"{self.model.name} at {self.quantization.value}: "
            f"{' + '.join(parts)} = {_gib(self.total_bytes)}"
        )


@dataclass(frozen=True)
class JobMemoryPlan:
    """What a DocumentJob needs on one GPU, and where the figure comes from.

    ``source`` is ``"spec.gpuMemory"`` (the user's explicit quantity) or
    ``"planner"``; ``detail`` is a human-readable derivation; ``plan`` is the
    planner's breakdown when the planner made the figure.
    """

    required_mib: int
    source: str
    detail: str
    plan: MemoryPlan | None = None


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def weights_bytes(model: ModelSpec, quantization: Quantization) -> int:
    """Bytes of the model's weights once loaded with ``quantization``."""
    p = model.params
    quantized = p.quantizable * _QUANTIZED_BYTES_PER_PARAM[quantization]
    scales = p.quantized_rows * _ROW_SCALE_BYTES[quantization]
    return int(quantized) + scales + p.kept * KEPT_BYTES_PER_PARAM


def kv_cache_bytes(model: ModelSpec, context_tokens: int, batch_size: int = 1) -> int:
    """Keys and values of every layer for ``context_tokens`` x ``batch_size``."""
    return (
        2
        * model.num_layers
        * model.num_key_value_heads
        * model.head_dim
        * context_tokens
        * batch_size
        * KV_BYTES_PER_VALUE
    )


def activation_bytes(model: ModelSpec, context_tokens: int, batch_size: int = 1) -> int:
    """Peak activations of one prefill over ``context_tokens`` x ``batch_size``."""
    per_token = (
        ACTIVATION_HIDDEN_COPIES * model.hidden_size
        + 3 * model.num_experts_per_tok * model.intermediate_size
    ) * ACTIVATION_BYTES_PER_VALUE
    return per_token * context_tokens * batch_size


def label_scoring_bytes(
    model: ModelSpec, label_tokens: int, context_tokens: int, batch_size: int = 1
) -> int:
    """GPU memory of scoring ``label_tokens`` packed label tokens after a prompt.

    Their KV cache entries, the 16-bit logits at their positions plus one chunk
    of float32 log-probabilities, and whatever their activations need beyond
    the prompt's prefill (the two passes run one after the other).
    """
    if label_tokens <= 0:
        return 0
    logits = label_tokens * model.vocab_size * LOGIT_BYTES_PER_VALUE
    logprobs = min(label_tokens, LOGPROB_CHUNK_ROWS) * model.vocab_size * LOGPROB_BYTES_PER_VALUE
    extra_activations = max(
        0,
        activation_bytes(model, label_tokens, batch_size)
        - activation_bytes(model, context_tokens, batch_size),
    )
    return (
        kv_cache_bytes(model, label_tokens, batch_size)
        + (logits + logprobs) * batch_size
        + extra_activations
    )


def plan_memory(
    model: ModelSpec,
    quantization: Quantization,
    *,
    context_tokens: int = 2048,
    batch_size: int = 1,
    ocr: bool = False,
    label_tokens: int = PACKED_LABEL_TOKENS,
) -> MemoryPlan:
    """Plan the GPU memory of serving ``model`` at ``quantization``.

    ``context_tokens`` is the longest prompt one forward pass sees,
    ``batch_size`` how many such sequences run together; ``label_tokens``
    the label tokens scored after it (default: the most a request may send);
    ``ocr`` adds the docstrange OCR model that may share the GPU.
    """
    if context_tokens <= 0 or batch_size <= 0 or label_tokens < 0:
        raise ValueError("context_tokens and batch_size must be positive, label_tokens >= 0")
    quantization = Quantization(quantization)
    return MemoryPlan(
        model=model,
        quantization=quantization,
        context_tokens=context_tokens,
        batch_size=batch_size,
        weights_bytes=weights_bytes(model, quantization),
        kv_cache_bytes=kv_cache_bytes(model, context_tokens, batch_size),
        activation_bytes=activation_bytes(model, context_tokens, batch_size),
        overhead_bytes=OVERHEAD_BYTES,
        ocr_bytes=OCR_MODEL_BYTES if ocr else 0,
        label_tokens=label_tokens,
        label_scoring_bytes=label_scoring_bytes(model, label_tokens, context_tokens, batch_size),
    )


def plan_for_job(
    spec: DocumentJobSpec, catalog: Mapping[str, ModelSpec] = CATALOG
) -> JobMemoryPlan:
    """The GPU memory a DocumentJob needs.

    An explicit ``spec.gpuMemory`` wins. Otherwise: the classification model
    (context = ``max_input_tokens`` + prompt overhead) when the job classifies,
    plus the OCR model when it extracts with OCR allowed; an extract-only job
    without OCR needs only the CUDA overhead. Raises
    :class:`~zopilot_common.catalog.UnknownModelError` for a model not in
    ``catalog``.
    """
    explicit = spec.explicit_gpu_memory_mib
    if explicit is not None:
        return JobMemoryPlan(
            required_mib=explicit,
            source=SOURCE_SPEC,
            detail=f"{explicit} MiB requested by spec.gpuMemory ({spec.gpu_memory})",
        )
    ocr = Task.EXTRACT in spec.tasks and spec.extract.ocr != "never"
    if Task.CLASSIFY in spec.tasks and spec.classify is not None:
        plan = plan_memory(
            get_model(spec.classify.model, catalog),
            spec.classify.quantization,
            context_tokens=spec.classify.max_input_tokens + PROMPT_OVERHEAD_TOKENS,
            ocr=ocr,
        )
        return JobMemoryPlan(plan.total_mib, SOURCE_PLANNER, plan.explain(), plan)
    required = OVERHEAD_BYTES + (OCR_MODEL_BYTES if ocr else 0)
    if ocr:
        detail = f"extract with OCR: OCR model {_gib(OCR_MODEL_BYTES)} + "
    else:
        detail = "extract without OCR: "
    detail += f"CUDA overhead {_gib(OVERHEAD_BYTES)} = {_gib(required)}"
    return JobMemoryPlan(-(-required // MIB), SOURCE_PLANNER, detail)


_CHEAPER: Mapping[Quantization, tuple[Quantization, ...]] = {
    Quantization.NONE: (Quantization.INT8, Quantization.NF4),
    Quantization.INT8: (Quantization.NF4,),
    Quantization.NF4: (),
}


def does_not_fit_message(
    plan: MemoryPlan | JobMemoryPlan,
    gpu_mib: int,
    quantization: Quantization | None = None,
) -> str:
    """Why a job can never run, and what to change.

    E.g. "needs 45.9 GiB at int8; largest GPU offers 24.0 GiB; no quantization
    of mixtral-8x7b-instruct fits: choose a smaller model (e.g.
    mistral-7b-instruct) or larger GPUs". ``quantization`` defaults to the
    plan's own; ``gpu_mib`` is the largest GPU's total memory.
    """
    memory_plan = plan.plan if isinstance(plan, JobMemoryPlan) else plan
    if memory_plan is not None and quantization is None:
        quantization = memory_plan.quantization
    required_mib = plan.required_mib if isinstance(plan, JobMemoryPlan) else plan.total_mib
    if isinstance(plan, JobMemoryPlan) and plan.source == SOURCE_SPEC:
        needs = f"needs {_gib(required_mib * MIB)} (spec.gpuMemory)"
        hint = "lower spec.gpuMemory"
    else:
        needs = f"needs {_gib(required_mib * MIB)}"
        if quantization is not None:
            needs += f" at {Quantization(quantization).value}"
        hint = _hint(memory_plan, gpu_mib)
    message = f"{needs}; largest GPU offers {_gib(gpu_mib * MIB)}"
    return f"{message}; {hint}" if hint else message


def _hint(plan: MemoryPlan | None, gpu_mib: int) -> str:
    if plan is None:
        return ""
    for cheaper in _CHEAPER[plan.quantization]:
        alternative = plan_memory(
            plan.model,
            cheaper,
            context_tokens=plan.context_tokens,
            batch_size=plan.batch_size,
            ocr=plan.ocr_bytes > 0,
            label_tokens=plan.label_tokens,
        )
        if alternative.total_mib <= gpu_mib:
            return f"quantization {cheaper.value} would need {_gib(alternative.total_bytes)}"
    return f"no quantization of {plan.model.name} fits: choose a smaller model or larger GPUs"
