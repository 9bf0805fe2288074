"""Tiny model builder, the quantizable Mixtral, and loaded footprints vs the planner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from zopilot_common.catalog import TINY_MIXTRAL_CONFIG, get_model
from zopilot_common.planner import plan_memory
from zopilot_common.spec import Quantization
from zopilot_worker.classify import loading
from zopilot_worker.classify.moe import LinearExperts
from zopilot_worker.errors import ModelLoadError
from zopilot_worker.testing.tiny_models import build_tiny_mistral, build_tiny_mixtral

TOKENS = torch.tensor([[1, 5, 9, 33, 70, 100, 200, 300, 400, 17]])


def test_tiny_mixtral_matches_the_catalog(tiny_mixtral_dir: Path) -> None:
    config = json.loads((tiny_mixtral_dir / "config.json").read_text())
    for key, value in TINY_MIXTRAL_CONFIG.items():
        assert config[key] == value, key
    model = loading.load_weights(
        tiny_mixtral_dir, name="tiny-mixtral", quantization=Quantization.NONE, dtype=torch.float32
    )
    assert sum(p.numel() for p in model.parameters()) == get_model("tiny-mixtral").total_params


def test_a_tiny_model_is_readable_by_another_user(tiny_mixtral_dir: Path) -> None:
    """The worker pod reads it as UID 10001 from a volume the test filled as root."""
    assert tiny_mixtral_dir.stat().st_mode & 0o005 == 0o005
    assert all(p.stat().st_mode & 0o004 for p in tiny_mixtral_dir.iterdir())


def test_tiny_builder_is_idempotent_and_deterministic(
    tiny_mixtral_dir: Path, tmp_path: Path
) -> None:
    weights = tiny_mixtral_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_tiny_mixtral(tiny_mixtral_dir) == tiny_mixtral_dir
    assert weights.stat().st_mtime_ns == before  # reused, not rebuilt
    again = build_tiny_mixtral(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_mixtral_dir / name).read_bytes(), name


def test_tiny_builder_refuses_foreign_directories(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_tiny_mixtral(tmp_path)


def test_tiny_mistral(tmp_path: Path) -> None:
    path = build_tiny_mistral(tmp_path / "tiny-mistral")
    model = loading.load_weights(
        path, name="tiny-mistral", quantization=Quantization.NONE, dtype=torch.float32
    )
    assert type(model).__name__ == "MistralForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == get_model("tiny-mistral").total_params


def test_linear_experts_compute_what_the_fused_ones_do(tiny_mixtral_dir: Path) -> None:
    from zopilot_worker.classify.moe import EXPERT_KEY_MAPPING, QuantizableMixtralForCausalLM

    stock = loading.load_weights(
        tiny_mixtral_dir, name="t", quantization=Quantization.NONE, dtype=torch.float32
    )
    unfused = QuantizableMixtralForCausalLM.from_pretrained(
        tiny_mixtral_dir, local_files_only=True, dtype=torch.float32, key_mapping=EXPERT_KEY_MAPPING
    ).eval()
    assert isinstance(unfused.model.layers[0].mlp.experts, LinearExperts)
    with torch.inference_mode():
        expected = stock(input_ids=TOKENS).logits
        actual = unfused(input_ids=TOKENS).logits
    assert torch.allclose(actual, expected, atol=1e-5)


def _bnb_cpu() -> bool:
    """bitsandbytes >= 0.46 also runs on CPU: these tests check quantized layouts here."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _bnb_cpu(), reason="bitsandbytes not importable")
@pytest.mark.parametrize(
    ("quantization", "dtype"),
    [
        (Quantization.NONE, torch.bfloat16),
        (Quantization.INT8, torch.float16),
        (Quantization.NF4, torch.bfloat16),
    ],
)
def test_footprint_follows_the_plan(
    tiny_mixtral_dir: Path, quantization: Quantization, dtype: torch.dtype
) -> None:
    # load_weights without the device policy, so bitsandbytes' CPU backend can
    # quantize here what it quantizes on a GPU.
    model = loading.load_weights(
        tiny_mixtral_dir,
        name="tiny-mixtral",
        quantization=quantization,
        dtype=dtype,
        device_map="cpu" if quantization is not Quantization.NONE else None,
    )
    if quantization is not Quantization.NONE:
        expert = model.model.layers[0].mlp.experts[0].gate_proj.weight
        assert not expert.is_floating_point()  # the experts are quantized too
    planned = plan_memory(get_model("tiny-mixtral"), quantization).weights_bytes
    # transformers' footprint omits bitsandbytes' scales, which the plan counts.
    assert 0.95 * planned <= model.get_memory_footprint() <= planned * 1.001


@pytest.mark.skipif(not _bnb_cpu(), reason="bitsandbytes not importable")
def test_unquantized_experts_are_caught(tiny_mixtral_dir: Path) -> None:
    # What a plain AutoModelForCausalLM load does with transformers 5's fused
    # experts: only attention gets quantized. The check must refuse it.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        tiny_mixtral_dir,
        local_files_only=True,
        dtype=torch.float16,
        device_map="cpu",
        quantization_config=loading.bnb_config(Quantization.INT8),
    )
    with pytest.raises(ModelLoadError, match=r"left 8\d% of its weights unquantized"):
        loading.check_quantized(model, "tiny-mixtral")
