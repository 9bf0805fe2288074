"""The classifier: a loaded model + tokenizer answering "which of these labels?".

``Classifier.classify`` scores every label by log-likelihood (see
``classify.scoring``) and never answers outside the label set;
``classify_by_generation`` is the free-text baseline the benchmark compares
against. Not thread-safe: the service runs one classification at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from zopilot_common.spec import Quantization

from zopilot_worker.classify import loading, scoring
from zopilot_worker.errors import GPUOutOfMemory

DEFAULT_MAX_INPUT_TOKENS = 2048


@dataclass(frozen=True)
class Classification:
    label: str
    """Always one of the given labels."""
    scores: dict[str, float]
    """Normalised (sums to 1) over the labels, in the given order."""
    model: str
    input_tokens: int
    """Tokens of the prompt the model read (instruction + document + template)."""
    truncated: bool
    """True when the document was cut to ``max_input_tokens``."""


class Classifier:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str,
        quantization: Quantization = Quantization.NONE,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.quantization = quantization

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        name: str,
        quantization: Quantization = Quantization.NONE,
        max_memory: dict[int | str, str] | None = None,
        device: str | None = None,
    ) -> Classifier:
        """Load ``model_dir`` (a local directory; the hub is never contacted).

        Raises ModelNotFound (incomplete directory), ModelLoadError (e.g. int8
        or nf4 without CUDA) or GPUMemoryUnavailable (OOM while loading).
        """
        model_dir = Path(model_dir)
        tokenizer = loading.load_tokenizer(model_dir, name)
        model = loading.load_model(
            model_dir, name=name, quantization=quantization, max_memory=max_memory, device=device
        )
        return cls(model, tokenizer, name=name, quantization=Quantization(quantization))

    @property
    def memory_footprint_bytes(self) -> int:
        """Bytes of the loaded weights and buffers (as transformers counts them)."""
        return int(self.model.get_memory_footprint())  # type: ignore[no-untyped-call]

    def classify(
        self,
        text: str,
        labels: Sequence[str],
        *,
        max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS,
    ) -> Classification:
        """The most likely label for ``text`` and a normalised score per label."""
        labels = scoring.validate_labels(labels)
        # Reserve room for the longest label after the prompt.
        prompt = self._prompt(text, labels, max_input_tokens, reserve=scoring.MAX_LABEL_TOKENS)
        label_ids = scoring.encode_labels(self.tokenizer, labels, prompt.tail)
        scoring.check_label_tokens(labels, label_ids, model=self.name)
        try:
            means = scoring.label_log_likelihoods(self.model, prompt.input_ids, label_ids)
        except torch.OutOfMemoryError as exc:
            # The plan (KV cache for max_input_tokens) was too small: say so, so
            # the job runner exits EXIT_GPU_OOM and the operator re-plans.
            raise GPUOutOfMemory(
                f"CUDA out of memory scoring {len(labels)} labels over "
                f"{len(prompt.input_ids)} tokens with {self.name!r}",
                detail=repr(exc),
            ) from exc
        probabilities = scoring.softmax(means)
        best = max(range(len(labels)), key=probabilities.__getitem__)
        return Classification(
            label=labels[best],
            scores=dict(zip(labels, probabilities, strict=True)),
            model=self.name,
            input_tokens=len(prompt.input_ids),
            truncated=prompt.truncated,
        )

    def classify_by_generation(
        self, text: str, labels: Sequence[str], *, max_new_tokens: int = 8
    ) -> Classification:
        """Baseline: let the model write an answer and map it onto a label.

        Scores are one-hot on the parsed label; an answer naming no label falls
        back to the closest label by spelling, else the first.
        """
        labels = scoring.validate_labels(labels)
        answer, prompt = self.generate_answer(text, labels, max_new_tokens=max_new_tokens)
        label = scoring.parse_label(answer, labels)
        return Classification(
            label=label,
            scores={x: 1.0 if x == label else 0.0 for x in labels},
            model=self.name,
            input_tokens=len(prompt.input_ids),
            truncated=prompt.truncated,
        )

    def generate_answer(
        self, text: str, labels: Sequence[str], *, max_new_tokens: int = 8
    ) -> tuple[str, scoring.Prompt]:
        """The model's free-text (greedy) answer to the classification prompt, and the prompt."""
        prompt = self._prompt(text, labels, DEFAULT_MAX_INPUT_TOKENS, reserve=max_new_tokens)
        device = scoring.input_embedding_weight(self.model).device
        input_ids = torch.tensor([prompt.input_ids], device=device)
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            # generate() comes from GenerationMixin, which PreTrainedModel does not declare.
            output = cast(Any, self.model).generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad if pad is not None else self.tokenizer.eos_token_id,
            )
        new_tokens = output[0, input_ids.shape[1] :]
        return str(self.tokenizer.decode(new_tokens, skip_special_tokens=True)), prompt

    def _prompt(
        self, text: str, labels: Sequence[str], max_input_tokens: int, *, reserve: int
    ) -> scoring.Prompt:
        prompt = scoring.build_prompt(
            self.tokenizer, text, labels, max_input_tokens=max_input_tokens
        )
        # Keep prompt + answer within the model's context, whatever the caller
        # asked: cut the document further by what overflows.
        limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        overflow = len(prompt.input_ids) + reserve - limit
        if limit and overflow > 0:
            budget = max(1, prompt.document_tokens - overflow)
            prompt = scoring.build_prompt(self.tokenizer, text, labels, max_input_tokens=budget)
        return prompt
