"""The model catalog: which classification models exist and how big they are.

A ``ModelSpec`` holds the architecture numbers the memory planner needs
(parameter counts per kind of layer, KV-cache shape) and where the weights lie
on the model volume. Specs are built from the models' own ``config.json``
values with :meth:`ModelSpec.from_hf_config`, so the parameter counts follow
from the architecture instead of being typed in by hand.

Pure: stdlib only (the operator image imports this and must stay light).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


class UnknownModelError(ValueError):
    """A model name that is not in the catalog; the message lists the known names."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown model {name!r}; known models: {', '.join(sorted(known))}")
        self.name = name
        self.known = sorted(known)


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameter counts by role, as the quantizer treats them.

    ``quantizable`` are the weights of the linear layers bitsandbytes replaces
    (attention projections, MLP/expert projections); ``quantized_rows`` is the
    sum of their output features (LLM.int8 stores one fp32 scale per row).
    ``kept`` are the parameters that stay in 16 bit under quantization: token
    embeddings, lm_head (transformers never quantizes the output head), RMSNorm
    weights and the MoE router (tiny, and routing is precision-sensitive).
    """

    embeddings: int
    attention: int
    mlp: int
    router: int
    norms: int
    lm_head: int
    quantized_rows: int

    @property
    def quantizable(self) -> int:
        return self.attention + self.mlp

    @property
    def kept(self) -> int:
        return self.embeddings + self.router + self.norms + self.lm_head

    @property
    def total(self) -> int:
        return self.quantizable + self.kept


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry. Dense models have ``num_local_experts == 1`` (no router)."""

    name: str
    hf_id: str
    architecture: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_local_experts: int
    num_experts_per_tok: int
    vocab_size: int
    max_position_embeddings: int
    local_dir: str
    """Directory name of the weights under the model root (the mounted model volume)."""
    tie_word_embeddings: bool = False

    @property
    def is_moe(self) -> bool:
        return self.num_local_experts > 1

    @property
    def params(self) -> ParamBreakdown:
        """Parameter counts of a Mistral/Mixtral-style decoder (no biases)."""
        h, i, layers = self.hidden_size, self.intermediate_size, self.num_layers
        q_dim = self.num_attention_heads * self.head_dim
        kv_dim = self.num_key_value_heads * self.head_dim
        # q, k, v, o projections.
        attention = h * q_dim + 2 * h * kv_dim + q_dim * h
        attention_rows = q_dim + 2 * kv_dim + h
        # SwiGLU MLP per expert: gate (w1) and up (w3) project h -> i, down (w2) i -> h.
        mlp = self.num_local_experts * 3 * h * i
        mlp_rows = self.num_local_experts * (2 * i + h)
        router = h * self.num_local_experts if self.is_moe else 0
        embeddings = self.vocab_size * h
        return ParamBreakdown(
            embeddings=embeddings,
            attention=layers * attention,
            mlp=layers * mlp,
            router=layers * router,
            # Two RMSNorms per layer plus the final norm.
            norms=(2 * layers + 1) * h,
            lm_head=0 if self.tie_word_embeddings else embeddings,
            quantized_rows=layers * (attention_rows + mlp_rows),
        )

    @property
    def total_params(self) -> int:
        return self.params.total

    @classmethod
    def from_hf_config(
        cls,
        name: str,
        config: Mapping[str, Any],
        *,
        hf_id: str | None = None,
        local_dir: str | None = None,
    ) -> ModelSpec:
        """Build a spec from a ``config.json`` dict (Mixtral or Mistral).

        ``hf_id`` defaults to the config's ``_name_or_path``; ``local_dir`` to
        ``name``. A Mistral config has no expert fields and counts as dense.
        """
        architectures = config.get("architectures") or ["MixtralForCausalLM"]
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        # Mistral-family configs may leave head_dim null: it is then hidden / heads.
        head_dim = config.get("head_dim") or hidden // heads
        return cls(
            name=name,
            hf_id=hf_id or str(config.get("_name_or_path") or name),
            architecture=str(architectures[0]),
            num_layers=int(config["num_hidden_layers"]),
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(head_dim),
            num_local_experts=int(config.get("num_local_experts") or 1),
            num_experts_per_tok=int(config.get("num_experts_per_tok") or 1),
            vocab_size=int(config["vocab_size"]),
            max_position_embeddings=int(config["max_position_embeddings"]),
            local_dir=local_dir or name,
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )


# The architecture fields of the models' config.json on the Hub (copied, not
# downloaded: the catalog must work offline and in the light operator image).
MIXTRAL_8X7B_CONFIG: dict[str, Any] = {
    "architectures": ["MixtralForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "vocab_size": 32000,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
}

MIXTRAL_8X22B_CONFIG: dict[str, Any] = {
    "architectures": ["MixtralForCausalLM"],
    "hidden_size": 6144,
    "intermediate_size": 16384,
    "num_hidden_layers": 56,
    "num_attention_heads": 48,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "vocab_size": 32768,
    "max_position_embeddings": 65536,
    "tie_word_embeddings": False,
}

MISTRAL_7B_CONFIG: dict[str, Any] = {
    "architectures": ["MistralForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
}

# The tiny random Mixtral that tests and the local demo build with
# zopilot_worker.testing.tiny_models (which passes these very values to
# MixtralConfig, so catalog and built model cannot drift apart).
TINY_MIXTRAL_CONFIG: dict[str, Any] = {
    "architectures": ["MixtralForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "vocab_size": 512,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}

TINY_MISTRAL_CONFIG: dict[str, Any] = {
    "architectures": ["MistralForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 512,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}


def _build_catalog() -> dict[str, ModelSpec]:
    specs = [
        ModelSpec.from_hf_config(
            "mixtral-8x7b-instruct",
            MIXTRAL_8X7B_CONFIG,
            hf_id="mistralai/Mixtral-8x7B-Instruct-v0.1",
        ),
        ModelSpec.from_hf_config(
            "mixtral-8x22b-instruct",
            MIXTRAL_8X22B_CONFIG,
            hf_id="mistralai/Mixtral-8x22B-Instruct-v0.1",
        ),
        ModelSpec.from_hf_config(
            "mistral-7b-instruct",
            MISTRAL_7B_CONFIG,
            hf_id="mistralai/Mistral-7B-Instruct-v0.2",
        ),
        ModelSpec.from_hf_config(
            "tiny-mixtral", TINY_MIXTRAL_CONFIG, hf_id="zopilot/tiny-random-mixtral"
        ),
        ModelSpec.from_hf_config(
            "tiny-mistral", TINY_MISTRAL_CONFIG, hf_id="zopilot/tiny-random-mistral"
        ),
    ]
    return {spec.name: spec for spec in specs}


CATALOG: Mapping[str, ModelSpec] = MappingProxyType(_build_catalog())


def get_model(name: str, catalog: Mapping[str, ModelSpec] = CATALOG) -> ModelSpec:
    """The catalog entry for ``name``; :class:`UnknownModelError` lists the known names."""
    try:
        return catalog[name]
    except KeyError:
        raise UnknownModelError(name, list(catalog)) from None
