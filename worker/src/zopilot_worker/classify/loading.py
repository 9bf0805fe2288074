"""Loading a causal LM and its tokenizer from a local model directory.

Weights come only from the mounted model volume (``local_files_only`` and the
hub pinned offline); a missing or incomplete directory is ``ModelNotFound``.
Device policy: CUDA loads in bf16 (int8: fp16) with accelerate's
``device_map="auto"`` and optional ``max_memory``, quantized with bitsandbytes
when asked; CPU loads unquantized float32 and refuses int8/nf4, because
bitsandbytes quantization is what the GPU plan assumes and needs CUDA.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from zopilot_common.spec import Quantization

from zopilot_worker.errors import GPUOutOfMemory, ModelLoadError, ModelNotFound
from zopilot_worker.settings import enforce_offline_hub

enforce_offline_hub()  # before transformers (and huggingface_hub) are imported

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from zopilot_worker.classify.moe import (  # noqa: E402
    EXPERT_KEY_MAPPING,
    QuantizableMixtralForCausalLM,
)

log = logging.getLogger(__name__)

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
# After a quantized load, at most this share of the parameters (embeddings and
# lm_head aside, which stay 16 bit on purpose) may still be floating point:
# norms and MoE routers are ~0.01 % of a real model, ~0.2 % of the tiny one.
# Anything more means layers escaped quantization and the memory plan is wrong.
_MAX_UNQUANTIZED_SHARE = 0.02


def check_model_dir(model_dir: Path, name: str) -> None:
    """Raise ModelNotFound unless ``model_dir`` holds a config, weights and a tokenizer."""
    if not model_dir.is_dir():
        missing = "its directory"
    elif not (model_dir / "config.json").is_file():
        missing = "config.json"
    elif not any(next(model_dir.glob(p), None) for p in ("*.safetensors", *_WEIGHT_FILES)):
        missing = "weights (*.safetensors)"
    elif not any((model_dir / f).is_file() for f in _TOKENIZER_FILES):
        missing = "the tokenizer (tokenizer.json)"
    else:
        return
    raise ModelNotFound(
        f"model {name!r} is not installed on this worker: missing {missing}",
        detail=f"model directory {model_dir}",
    )


def bnb_config(quantization: Quantization) -> BitsAndBytesConfig | None:
    """The bitsandbytes configuration the memory planner assumes for ``quantization``."""
    if quantization is Quantization.INT8:
        return BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]
    if quantization is Quantization.NF4:
        return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    return None


def load_tokenizer(model_dir: Path, name: str) -> PreTrainedTokenizerBase:
    check_model_dir(model_dir, name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not load the tokenizer of model {name!r}", detail=repr(exc)
        ) from exc
    return tokenizer


def load_model(
    model_dir: Path,
    *,
    name: str,
    quantization: Quantization = Quantization.NONE,
    max_memory: dict[int | str, str] | None = None,
    device: str | None = None,
) -> PreTrainedModel:
    """Load the model with the worker's device policy (see the module docstring)."""
    check_model_dir(model_dir, name)
    quantization = Quantization(quantization)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if target.type == "cpu":
        if quantization is not Quantization.NONE:
            raise ModelLoadError(
                f"quantization {quantization.value} needs a CUDA GPU (bitsandbytes); "
                "on CPU use quantization none"
            )
        model = load_weights(model_dir, name=name, quantization=quantization, dtype=torch.float32)
        return model
    if target.type != "cuda" or not torch.cuda.is_available():
        raise ModelLoadError(f"device {target} is not available on this worker")
    # LLM.int8's matmul runs in fp16 (bitsandbytes casts bf16 inputs anyway);
    # NF4 computes in bf16, the dtype Mixtral was trained in.
    dtype = torch.float16 if quantization is Quantization.INT8 else torch.bfloat16
    device_map: str | dict[str, int] = "auto" if target.index is None else {"": target.index}
    return load_weights(
        model_dir,
        name=name,
        quantization=quantization,
        dtype=dtype,
        device_map=device_map,
        max_memory=max_memory,
    )


def load_weights(
    model_dir: Path,
    *,
    name: str,
    quantization: Quantization,
    dtype: torch.dtype,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[int | str, str] | None = None,
) -> PreTrainedModel:
    """``from_pretrained`` of a local directory, without device policy.

    A quantized Mixtral loads as :class:`QuantizableMixtralForCausalLM` so that
    its experts are quantized too (see ``classify.moe``); every quantized load
    is then checked for layers that escaped quantization.
    """
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if max_memory is not None:
        kwargs["max_memory"] = max_memory
    quantization_config = bnb_config(quantization)
    loader: Any = AutoModelForCausalLM
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        if _model_type(model_dir) == "mixtral":
            loader = QuantizableMixtralForCausalLM
            kwargs["key_mapping"] = EXPERT_KEY_MAPPING
    try:
        model = loader.from_pretrained(model_dir, **kwargs)
    except torch.OutOfMemoryError as exc:
        raise GPUOutOfMemory(
            f"not enough free GPU memory to load model {name!r} at {quantization.value}",
            detail=repr(exc),
        ) from exc
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        raise ModelLoadError(
            f"could not load model {name!r} at {quantization.value}", detail=repr(exc)
        ) from exc
    model.eval()
    if quantization_config is not None:
        check_quantized(model, name)
    return model  # type: ignore[no-any-return]


def check_quantized(model: PreTrainedModel, name: str) -> None:
    """Raise ModelLoadError when a quantized load left real layers in 16/32 bit."""
    output_embeddings = model.get_output_embeddings()  # type: ignore[no-untyped-call]
    embeddings = (model.get_input_embeddings(), output_embeddings)
    kept = {id(p) for module in embeddings if module is not None for p in module.parameters()}
    total = floating = 0
    largest = ("", 0)
    for param_name, param in model.named_parameters():
        if id(param) in kept:
            continue
        total += param.numel()
        if param.is_floating_point():
            floating += param.numel()
            if param.numel() > largest[1]:
                largest = (param_name, param.numel())
    if total and floating / total > _MAX_UNQUANTIZED_SHARE:
        raise ModelLoadError(
            f"quantization of model {name!r} left {floating / total:.0%} of its weights "
            "unquantized; its memory would exceed the plan",
            detail=f"largest unquantized parameter: {largest[0]}",
        )


def _model_type(model_dir: Path) -> str | None:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) else None
