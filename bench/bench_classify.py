"""Benchmark: classification by label scoring vs by free generation, same run.

Classifies N generated documents with the tiny random Mixtral three ways:
- scoring: ``Classifier.classify`` (prompt once, all labels in one packed pass);
- per-label: the naive reference, one full forward pass over prompt + label
  per label (what the one-pass scoring replaces);
- generation: ``Classifier.classify_by_generation`` (greedy, then parse).
Machines are noisy, so the figures to compare are the ratios between methods
measured in the same process, not absolute times.

    .venv/bin/python bench/bench_classify.py --docs 40 --labels 8

The tiny model's answers are random, so accuracy means nothing here; what the
run shows is cost, and how often free generation names no label at all.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from zopilot_worker.classify import Classifier, scoring
from zopilot_worker.testing.tiny_models import build_tiny_mixtral

LABELS = [
    "invoice",
    "receipt",
    "contract",
    "letter",
    "report",
    "memo",
    "resume",
    "form",
    "statement",
    "purchase order",
    "credit note",
    "other",
]
_WORDS = {
    "invoice": [
        "invoice",
        "number",
        "total",
        "due",
        "payment",
        "terms",
        "amount",
        "VAT",
        "EUR",
        "days",
    ],
    "receipt": ["receipt", "paid", "card", "thank", "you", "purchase", "subtotal", "tax", "total"],
    "contract": ["contract", "parties", "agreement", "term", "clause", "signed", "liability"],
}
_FILLER = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "this",
    "that",
]


def make_documents(n: int, *, seed: int = 0, words: tuple[int, int] = (60, 400)) -> list[str]:
    rng = random.Random(seed)
    topics = list(_WORDS)
    docs = []
    for _ in range(n):
        vocab = _WORDS[rng.choice(topics)] + _FILLER
        docs.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(*words))))
    return docs


def per_label_forward(classifier: Classifier, text: str, labels: Sequence[str]) -> str:
    """The naive reference: one full forward pass per label, no shared cache."""
    prompt = scoring.build_prompt(classifier.tokenizer, text, labels, max_input_tokens=2048)
    means = []
    with torch.inference_mode():
        for ids in scoring.encode_labels(classifier.tokenizer, labels, prompt.tail):
            full = torch.tensor([[*prompt.input_ids, *ids]])
            logp = torch.log_softmax(classifier.model(input_ids=full).logits[0].float(), dim=-1)
            n = len(prompt.input_ids)
            means.append(sum(float(logp[n - 1 + k, t]) for k, t in enumerate(ids)) / len(ids))
    return labels[max(range(len(labels)), key=means.__getitem__)]


def interleaved(
    methods: dict[str, Callable[[str], str]], docs: Sequence[str]
) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    """Seconds and answers per method and document.

    The methods run back to back on each document, in an order that rotates
    from one document to the next, so that load from other processes on a
    shared machine hits every method alike and per-document ratios stay fair.
    """
    names = list(methods)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    answers: dict[str, list[str]] = {name: [] for name in names}
    for i, doc in enumerate(docs):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            answers[name].append(methods[name](doc))
            seconds[name].append(time.perf_counter() - start)
    return seconds, answers


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=40, help="documents to classify")
    parser.add_argument("--labels", type=int, default=8, help=f"labels (<= {len(LABELS)})")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="generation budget")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "zopilot-bench" / "tiny-mixtral",
        help="where the tiny Mixtral is built (reused when present)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    labels: list[str] = LABELS[: args.labels]
    max_new_tokens: int = args.max_new_tokens
    classifier = Classifier.load(build_tiny_mixtral(args.model_dir), name="tiny-mixtral")
    docs = make_documents(args.docs)
    # Warm-up: first calls pay for lazy initialisation in torch and the tokenizer.
    classifier.classify(docs[0], labels)
    classifier.classify_by_generation(docs[0], labels, max_new_tokens=args.max_new_tokens)

    # What classify_by_generation does, keeping the raw answer to count fallbacks.
    raw: list[str] = []

    def generate(doc: str) -> str:
        answer, _ = classifier.generate_answer(doc, labels, max_new_tokens=max_new_tokens)
        raw.append(answer)
        label: str = scoring.parse_label(answer, labels)
        return label

    seconds, answers = interleaved(
        {
            "scoring": lambda d: classifier.classify(d, labels).label,
            "per-label": lambda d: per_label_forward(classifier, d, labels),
            "generation": generate,
        },
        docs,
    )
    named = sum(scoring.find_label(a, labels) is not None for a in raw)
    agree = sum(a == b for a, b in zip(answers["scoring"], answers["per-label"], strict=True))
    print(f"documents {len(docs)}, labels {len(labels)}, torch threads {args.threads}")
    for name, label in [
        ("scoring", "scoring (one pass)"),
        ("per-label", "per-label forward passes"),
        ("generation", f"generation ({max_new_tokens} new tokens)"),
    ]:
        print(f"{label:<28} median {statistics.median(seconds[name]) * 1e3:7.1f} ms/doc")
    for name in ("generation", "per-label"):
        ratio = median_ratio(seconds[name], seconds["scoring"])
        print(f"median per-doc ratio {name} / scoring: {ratio:5.2f}")
    print(f"scoring picks the per-label pick: {agree}/{len(docs)}")
    print(f"generation named a label: {named}/{len(docs)} (the rest fell back)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
