"""Mixtral with one linear layer per expert, so bitsandbytes can quantize the experts.

transformers 5 stores Mixtral's experts fused in two 3-D parameters
(``experts.gate_up_proj``, ``experts.down_proj``); bitsandbytes only replaces
``nn.Linear`` modules, so ``load_in_8bit`` / ``load_in_4bit`` leave ~97 % of a
Mixtral's weights in bf16 (Mixtral 8x7B: ~91 GB "at int8" instead of ~47 GB),
which makes the memory planner's figures wrong by 2x. This module swaps each
layer's fused experts for per-expert ``gate_proj``/``up_proj``/``down_proj``
linears (the checkpoint's ``w1``/``w3``/``w2``, one ``nn.Linear`` each) before
the weights load; a ``key_mapping`` sends the checkpoint's per-expert keys
straight to them, past transformers' merge into the fused tensors.

Used for quantized loads only: unquantized, the stock fused experts are as
small and faster.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import MixtralConfig, MixtralForCausalLM
from transformers.activations import ACT2FN

# Checkpoint key -> module name (regex substitutions, applied by from_pretrained
# before its own conversions, which then no longer see keys to merge).
EXPERT_KEY_MAPPING: dict[str, str] = {
    r"\.w1\.weight$": ".gate_proj.weight",
    r"\.w3\.weight$": ".up_proj.weight",
    r"\.w2\.weight$": ".down_proj.weight",
}


class ExpertMLP(nn.Module):
    """One SwiGLU expert: down(act(gate(x)) * up(x))."""

    def __init__(self, config: MixtralConfig) -> None:
        super().__init__()
        h, i = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))  # type: ignore[no-any-return]


class LinearExperts(nn.ModuleList):
    """Drop-in for ``MixtralExperts``: same call signature, one module per expert."""

    def __init__(self, config: MixtralConfig) -> None:
        super().__init__([ExpertMLP(config) for _ in range(config.num_local_experts)])
        self.num_experts = config.num_local_experts

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        # Same routing arithmetic as transformers' MixtralExperts.forward.
        out = torch.zeros_like(hidden_states)
        with torch.no_grad():
            mask = nn.functional.one_hot(top_k_index, num_classes=self.num_experts).permute(2, 1, 0)
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for expert_idx in hit[:, 0].tolist():
            top_k_pos, token_idx = torch.where(mask[expert_idx])
            expert_out = self[expert_idx](hidden_states[token_idx])
            expert_out = expert_out * top_k_weights[token_idx, top_k_pos, None]
            out.index_add_(0, token_idx, expert_out.to(out.dtype))
        return out


class QuantizableMixtralForCausalLM(MixtralForCausalLM):  # type: ignore[no-untyped-call]
    """A MixtralForCausalLM with ``LinearExperts``; load with ``key_mapping=EXPERT_KEY_MAPPING``."""

    def __init__(self, config: MixtralConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        # Created inside from_pretrained's meta-device context: no memory yet.
        for layer in self.model.layers:
            layer.mlp.experts = LinearExperts(config)
