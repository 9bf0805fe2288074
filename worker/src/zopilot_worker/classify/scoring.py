"""Prompt construction and label scoring by log-likelihood.

The document is run through the model once; every candidate label is then
scored in one more forward pass in which all labels' tokens are packed into a
single sequence after the prompt's KV cache. A 4-D attention mask lets each
label token see the whole prompt and the earlier tokens of its own label only,
and position ids restart at the prompt's end for each label, so each label is
scored exactly as if it followed the prompt alone (the tests check this
against one full forward pass per label). Packing instead of batching means
the prompt's KV cache is never copied per label: memory stays at one prompt
plus the labels' few tokens, which is what the memory planner assumes.

Logits are computed only where they are used: the prompt pass keeps its last
position (the first label token's distribution), the label pass keeps only the
positions that predict a label's next token (``logits_to_keep`` with those
indices, so lm_head never projects the other positions onto the vocabulary),
and log-probabilities are taken in float32 chunks of ``LOGPROB_CHUNK_ROWS``
rows. The memory planner counts exactly that (``label_scoring_bytes``).

A label's score is the mean log-probability of its tokens (length-normalised,
so long labels are not penalised for having more tokens); the softmax of those
means over the label set is the normalised score.

User text never becomes control tokens: the document and the labels are
tokenized with ``split_special_tokens=True``, so a literal ``</s>`` or
``[/INST]`` in them is text; only the chat template's own markup (rendered
around a sentinel) is tokenized with the special tokens recognised.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from zopilot_common.planner import LOGPROB_CHUNK_ROWS as LOGPROB_CHUNK_ROWS
from zopilot_common.planner import MAX_LABEL_TOKENS as MAX_LABEL_TOKENS
from zopilot_common.planner import MAX_LABELS as MAX_LABELS

from zopilot_worker.errors import InvalidLabels

MAX_LABEL_CHARS = 100
# Text longer than this many characters per allowed token cannot fit; cutting
# it first saves tokenizing a 500-page document only to keep its head.
_MAX_CHARS_PER_TOKEN = 16
_SENTINEL = "\u2063DOCUMENT\u2063"


def validate_labels(labels: Sequence[str]) -> list[str]:
    """The labels as a list, or InvalidLabels saying what to fix."""
    if isinstance(labels, str):
        raise InvalidLabels("labels must be a list of strings, not one string")
    labels = list(labels)
    if not labels:
        raise InvalidLabels("at least one label is required")
    if len(labels) > MAX_LABELS:
        raise InvalidLabels(f"at most {MAX_LABELS} labels are allowed, got {len(labels)}")
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise InvalidLabels("labels must be non-empty strings")
        if len(label) > MAX_LABEL_CHARS:
            raise InvalidLabels(f"labels must be at most {MAX_LABEL_CHARS} characters")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise InvalidLabels(f"labels must be unique; repeated: {', '.join(duplicates)}")
    return labels


@dataclass(frozen=True)
class Prompt:
    """Token ids of the classification prompt, ending where the label begins."""

    input_ids: list[int]
    tail: str
    """The text after the document (template end), used to tokenize labels in context."""
    truncated: bool
    document_tokens: int
    """Tokens of the document kept in the prompt."""


def instruction(labels: Sequence[str]) -> str:
    return (
        "Classify the document into exactly one of these labels: "
        f"{', '.join(labels)}.\nAnswer with the label only.\n\nDocument:\n"
    )


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    labels: Sequence[str],
    *,
    max_input_tokens: int,
) -> Prompt:
    """Instruction + the document's first ``max_input_tokens`` tokens + the answer cue.

    Uses the tokenizer's chat template when it has one (instruct models answer
    after their ``[/INST]``), else a plain "Label:" cue. The template's markup
    is tokenized with its special tokens; the instruction (which lists the
    labels) and the document as plain text (see the module docstring).
    """
    if max_input_tokens <= 0:
        raise ValueError("max_input_tokens must be positive")
    if tokenizer.chat_template:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": _SENTINEL}],
            tokenize=False,
            add_generation_prompt=True,
        )
        head, tail = str(rendered).split(_SENTINEL, 1)
        # The template writes the BOS token itself.
        head_ids = _encode(tokenizer, head, special=False)
    else:
        tail = "\n\nLabel:"
        head_ids = _encode(tokenizer, "", special=True)  # the BOS token, if any
    head_ids += text_ids(tokenizer, instruction(labels))
    char_budget = max_input_tokens * _MAX_CHARS_PER_TOKEN
    doc_ids = text_ids(tokenizer, text[:char_budget])
    truncated = len(text) > char_budget or len(doc_ids) > max_input_tokens
    kept = doc_ids[:max_input_tokens]
    ids = head_ids + kept + _encode(tokenizer, tail, special=False)
    return Prompt(input_ids=ids, tail=tail, truncated=truncated, document_tokens=len(kept))


def encode_labels(
    tokenizer: PreTrainedTokenizerBase, labels: Sequence[str], tail: str
) -> list[list[int]]:
    """Token ids of each label as the model would see it after the prompt.

    A label is tokenized together with the prompt's tail and its tail tokens
    cut off, so word-boundary handling (leading space, SentencePiece's "▁")
    matches the context it is scored in. All of it as plain text: a label
    is user input, and the tail's markup only has to end where the label starts.
    """
    tail_ids = text_ids(tokenizer, tail)
    encoded = []
    for label in labels:
        joint = text_ids(tokenizer, f"{tail} {label}")
        if joint[: len(tail_ids)] == tail_ids and len(joint) > len(tail_ids):
            encoded.append(joint[len(tail_ids) :])
        else:  # the tail merged with the label's first token: tokenize the label alone
            encoded.append(text_ids(tokenizer, f" {label}"))
    return encoded


def check_label_tokens(
    labels: Sequence[str], label_ids: Sequence[Sequence[int]], *, model: str
) -> None:
    """InvalidLabels naming the first label longer than MAX_LABEL_TOKENS tokens.

    The memory plan assumes at most MAX_LABELS x MAX_LABEL_TOKENS packed label
    tokens (zopilot_common.planner); characters alone do not bound tokens
    (an emoji can be 4 byte tokens).
    """
    for label, ids in zip(labels, label_ids, strict=True):
        if len(ids) > MAX_LABEL_TOKENS:
            raise InvalidLabels(
                f"label {label!r} is {len(ids)} tokens long for {model}'s tokenizer; "
                f"at most {MAX_LABEL_TOKENS} tokens per label are allowed: shorten it"
            )


@torch.inference_mode()
def label_log_likelihoods(
    model: PreTrainedModel, prompt_ids: Sequence[int], label_ids: Sequence[Sequence[int]]
) -> list[float]:
    """Mean log-probability of each label's tokens after the prompt (see module docstring)."""
    embeddings = input_embedding_weight(model)
    device = embeddings.device
    n_prompt = len(prompt_ids)
    prompt = torch.tensor([list(prompt_ids)], device=device)
    # logits_to_keep=1: only the last position's logits (the first label
    # token's distribution); the full prompt's logits would cost
    # tokens x vocab x 4 bytes for nothing.
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)

    # Token k-1 of a label (packed position start+k-1) predicts its token k:
    # only those positions' logits are needed.
    rows: list[int] = []
    targets: list[int] = []
    owners: list[int] = []
    start = 0
    for j, ids in enumerate(label_ids):
        for k in range(1, len(ids)):
            rows.append(start + k - 1)
            targets.append(ids[k])
            owners.append(j)
        start += len(ids)
    totals = [float(first[ids[0]]) for ids in label_ids]
    if rows:  # else every label is one token: the prompt pass said everything
        packed = [t for ids in label_ids for t in ids]
        segment = torch.tensor([j for j, ids in enumerate(label_ids) for _ in ids], device=device)
        position = torch.tensor([i for ids in label_ids for i in range(len(ids))], device=device)
        # Token a may attend to token b of the packed labels iff same label, b not after a.
        own = (segment[:, None] == segment[None, :]) & (position[None, :] <= position[:, None])
        visible = torch.cat([own.new_ones(len(packed), n_prompt), own], dim=1)
        # Additive mask in the attention's dtype (that of the hidden states).
        dtype = embeddings.dtype
        mask = torch.zeros(visible.shape, dtype=dtype, device=device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        out = model(
            input_ids=torch.tensor([packed], device=device),
            position_ids=(position + n_prompt)[None, :],
            attention_mask=mask[None, None, :, :],
            cache=out.cache,
            use_cache=True,
            logits_to_keep=torch.tensor(rows, device=device),
        )
        picked = token_log_probs(out.logits[0], torch.tensor(targets, device=device))
        for owner, value in zip(owners, picked.tolist(), strict=True):
            totals[owner] += value
    return [total / len(ids) for total, ids in zip(totals, label_ids, strict=True)]


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[i, targets[i]] per row, in float32, LOGPROB_CHUNK_ROWS rows at a time.

    Never materialises float32 log-probabilities for all rows at once.
    """
    values = []
    for begin in range(0, logits.shape[0], LOGPROB_CHUNK_ROWS):
        block = logits[begin : begin + LOGPROB_CHUNK_ROWS].float()
        chosen = block.gather(1, targets[begin : begin + LOGPROB_CHUNK_ROWS, None]).squeeze(1)
        values.append(chosen - torch.logsumexp(block, dim=-1))
    return torch.cat(values)


def softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def find_label(generated: str, labels: Sequence[str]) -> str | None:
    """The label a free-text answer names as a whole word (case-insensitive), or None."""
    lowered = generated.lower()
    found = []
    for index, label in enumerate(labels):
        match = re.search(rf"(?<!\w){re.escape(label.lower())}(?!\w)", lowered)
        if match:
            found.append((match.start(), -len(label), index))
    return labels[min(found)[2]] if found else None


def parse_label(generated: str, labels: Sequence[str]) -> str:
    """The label a free-text answer names; falls back to the closest label, then the first.

    The earliest mention wins; among labels starting at the same place, the
    longest (so "credit note" beats "credit").
    """
    named = find_label(generated, labels)
    if named is not None:
        return named
    lowered = generated.lower()
    first_line = (lowered.strip().splitlines() or [""])[0].strip(" .,:;!?\"'")
    guess = difflib.get_close_matches(first_line, [x.lower() for x in labels], n=1)
    if guess:
        return next(label for label in labels if label.lower() == guess[0])
    return labels[0]


def input_embedding_weight(model: PreTrainedModel) -> torch.Tensor:
    """The input embedding matrix: its device takes the inputs, its dtype is the compute dtype."""
    weight = model.get_input_embeddings().weight
    assert isinstance(weight, torch.Tensor)
    return weight


def text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of user text: special-token strings in it are split into ordinary tokens."""
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, *, special: bool) -> list[int]:
    """Token ids of our own template text (its markup becomes special tokens)."""
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])
