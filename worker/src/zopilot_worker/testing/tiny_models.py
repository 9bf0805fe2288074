"""Tiny random models of the real architectures, built locally for tests and the demo.

``build_tiny_mixtral`` writes a MixtralForCausalLM with random weights (the
catalog's ``tiny-mixtral`` shape) and a small byte-level BPE tokenizer trained
in-process, via ``save_pretrained``: the classifier then loads it through
exactly the production path (``from_pretrained`` of a local directory). No
network, deterministic for a given seed, and idempotent: a directory that
already holds the same recipe is reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from zopilot_common.catalog import TINY_MISTRAL_CONFIG, TINY_MIXTRAL_CONFIG

from zopilot_worker.settings import enforce_offline_hub

enforce_offline_hub()

# Bumped whenever the recipe below changes, so stale directories are rebuilt.
_RECIPE_VERSION = 1
_MARKER = "zopilot-tiny-model.json"

# Label words of the tests, the demo and the bench, so they tokenize into a
# few tokens each instead of single bytes; plus the prompt's own words.
_CORPUS = [
    "invoice receipt contract other letter report memo resume form statement",
    "Invoice number 2024-001: total due 1,250.00 EUR, payment within 30 days.",
    "Receipt: paid by card, thank you for your purchase. Subtotal, tax, total.",
    "This contract is made between the parties; the agreement term is one year.",
    "Dear customer, please find attached our letter regarding your account.",
    "Classify the document into exactly one of these labels. Answer with the label only.",
    "Document: Label: Answer: The document is a",
    "the of and to in is for on with as by at from this that be are was it an or",
    "0 1 2 3 4 5 6 7 8 9 . , : ; ! ? ' \" ( ) - / % $ EUR USD",
]

_SPECIAL = {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}
# Mistral-style instruction tags, so the chat-template path is exercised too.
_INSTRUCTION_TAGS = ["[INST]", "[/INST]"]
# Same shape as Mixtral-8x7B-Instruct's template (BOS, then [INST] ... [/INST]).
_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% else %}{{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


def build_tiny_mixtral(dest: Path, *, seed: int = 0) -> Path:
    """Build (or reuse) the catalog's ``tiny-mixtral`` in ``dest``; returns ``dest``."""
    return _build(dest, "mixtral", TINY_MIXTRAL_CONFIG, seed)


def build_tiny_mistral(dest: Path, *, seed: int = 0) -> Path:
    """Build (or reuse) the catalog's dense ``tiny-mistral`` in ``dest``; returns ``dest``."""
    return _build(dest, "mistral", TINY_MISTRAL_CONFIG, seed)


def _build(dest: Path, family: str, fields: dict[str, Any], seed: int) -> Path:
    dest = Path(dest)
    recipe = {"version": _RECIPE_VERSION, "family": family, "config": fields, "seed": seed}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    marker = dest / _MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("digest") == digest:
        _readable_by_all(dest)  # one built before this was fixed kept mkdtemp's 0700
        return dest
    if dest.exists() and any(dest.iterdir()) and not marker.is_file():
        raise FileExistsError(f"{dest} is not empty and holds no tiny model; refusing to overwrite")
    # Build next to dest and rename into place, so a concurrent or interrupted
    # build never leaves a half-written model that looks complete.
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        tokenizer = _build_tokenizer()
        tokenizer.save_pretrained(staging)
        _build_model(family, fields, seed, tokenizer).save_pretrained(staging)
        (staging / _MARKER).write_text(json.dumps({"digest": digest, "recipe": recipe}, indent=1))
        _readable_by_all(staging)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    except OSError:
        if marker.is_file() and json.loads(marker.read_text()).get("digest") == digest:
            return dest  # another process won the race with the same recipe
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _readable_by_all(model_dir: Path) -> None:
    """A worker pod reads the model as another user (10001) than the one who built it;
    mkdtemp makes the directory 0700 and some writers make files 0600."""
    model_dir.chmod(0o755)
    for p in model_dir.iterdir():
        if p.is_file():
            p.chmod(0o644)


def _build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    vocab_size = int(TINY_MIXTRAL_CONFIG["vocab_size"])
    specials = [_SPECIAL["unk"], _SPECIAL["bos"], _SPECIAL["eos"], _SPECIAL["pad"]]
    tok = Tokenizer(models.BPE(unk_token=_SPECIAL["unk"]))
    # Byte level: any text encodes (no unknown tokens), like the real tokenizers.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials + _INSTRUCTION_TAGS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    bos = _SPECIAL["bos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=_SPECIAL["eos"],
        unk_token=_SPECIAL["unk"],
        pad_token=_SPECIAL["pad"],
        additional_special_tokens=_INSTRUCTION_TAGS,
        chat_template=_CHAT_TEMPLATE,
        model_max_length=int(TINY_MIXTRAL_CONFIG["max_position_embeddings"]),
    )


def _build_model(family: str, fields: dict[str, Any], seed: int, tokenizer: Any) -> Any:
    import torch
    from transformers import (
        GenerationConfig,
        MistralConfig,
        MistralForCausalLM,
        MixtralConfig,
        MixtralForCausalLM,
    )

    kwargs = {k: v for k, v in fields.items() if k != "architectures"}
    kwargs.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        sliding_window=None,
        # Wider than the default 0.02, so the random model's next-token
        # distributions are peaked enough for label scores to differ visibly.
        initializer_range=0.2,
    )
    config_cls: Any = MixtralConfig if family == "mixtral" else MistralConfig
    model_cls: Any = MixtralForCausalLM if family == "mixtral" else MistralForCausalLM
    config = config_cls(**kwargs)
    # fork_rng: seed locally without disturbing the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config).eval()
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model
