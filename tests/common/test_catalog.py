"""The model catalog: parameter counts from configs, lookups, errors."""

from __future__ import annotations

import pytest
from zopilot_common.catalog import (
    CATALOG,
    MIXTRAL_8X7B_CONFIG,
    ModelSpec,
    UnknownModelError,
    get_model,
)


@pytest.mark.parametrize(
    ("name", "architecture", "params_billion"),
    [
        # Published sizes: Mixtral 8x7B 46.7 B, 8x22B 141 B, Mistral 7B 7.24 B.
        ("mixtral-8x7b-instruct", "MixtralForCausalLM", 46.70),
        ("mixtral-8x22b-instruct", "MixtralForCausalLM", 140.63),
        ("mistral-7b-instruct", "MistralForCausalLM", 7.24),
    ],
)
def test_catalog_parameter_counts(name: str, architecture: str, params_billion: float) -> None:
    spec = get_model(name)
    assert spec.architecture == architecture
    assert spec.total_params / 1e9 == pytest.approx(params_billion, abs=0.01)


def test_mixtral_8x7b_from_real_config() -> None:
    spec = ModelSpec.from_hf_config(
        "m", MIXTRAL_8X7B_CONFIG | {"_name_or_path": "mistralai/Mixtral-8x7B-Instruct-v0.1"}
    )
    # The exact count transformers reports for this config.
    assert spec.total_params == 46_702_792_704
    assert spec.hf_id == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert spec.local_dir == "m"
    assert (spec.head_dim, spec.num_key_value_heads, spec.num_local_experts) == (128, 8, 8)
    assert spec.is_moe


def test_dense_config_has_no_router() -> None:
    spec = get_model("mistral-7b-instruct")
    assert not spec.is_moe
    assert spec.params.router == 0
    assert spec.num_local_experts == 1


def test_tied_embeddings_count_once() -> None:
    untied = ModelSpec.from_hf_config("a", MIXTRAL_8X7B_CONFIG)
    tied = ModelSpec.from_hf_config("b", MIXTRAL_8X7B_CONFIG | {"tie_word_embeddings": True})
    assert untied.total_params - tied.total_params == 32000 * 4096


def test_breakdown_sums_to_total() -> None:
    p = get_model("mixtral-8x7b-instruct").params
    assert p.quantizable + p.kept == p.total
    # Experts dominate a Mixtral: what quantization cannot shrink is ~0.6 %.
    assert p.kept / p.total < 0.006


def test_every_entry_names_a_local_dir_and_hub_id() -> None:
    assert {
        "mixtral-8x7b-instruct",
        "mixtral-8x22b-instruct",
        "mistral-7b-instruct",
        "tiny-mixtral",
    } <= set(CATALOG)
    for name, spec in CATALOG.items():
        assert spec.name == name
        assert spec.local_dir and "/" not in spec.local_dir
        assert "/" in spec.hf_id


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_model("foo")
    message = str(info.value)
    assert message.startswith("unknown model 'foo'; known models: ")
    assert "mixtral-8x7b-instruct" in message
    assert isinstance(info.value, ValueError)


def test_catalog_is_read_only() -> None:
    with pytest.raises(TypeError):
        CATALOG["x"] = get_model("tiny-mixtral")  # type: ignore[index]
