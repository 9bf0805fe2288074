"""Document classification with a Mixtral-family LLM, by label log-likelihood.

Public surface: :class:`Classifier` (load from a local model directory,
classify) and :class:`Classification` (its answer). Modules: ``loading``
(local from_pretrained, quantization, device policy), ``moe`` (Mixtral experts
bitsandbytes can quantize), ``scoring`` (prompt and one-pass label scoring),
``classifier`` (the two put together).

Importing this package imports torch and transformers (seconds); import it
lazily where startup time matters.
"""

from zopilot_worker.classify.classifier import Classification, Classifier
from zopilot_worker.classify.scoring import MAX_LABELS, validate_labels

__all__ = ["MAX_LABELS", "Classification", "Classifier", "validate_labels"]
