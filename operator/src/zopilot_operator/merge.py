"""JSON merge patches (RFC 7386), as the API server applies our status patches (pure)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``target`` with ``patch`` applied: None deletes a key, objects merge, anything
    else (lists too) replaces."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            base = out.get(key)
            out[key] = merge_patch(base if isinstance(base, Mapping) else {}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def compose_patches(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """One merge patch with the effect of ``first`` then ``second``.

    ValueError when there is none: ``first`` replaces or deletes a key that
    ``second`` then merges an object into (the object would merge with the
    target's old value instead of replacing it).
    """
    out = copy.deepcopy(dict(first))
    for key, value in second.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = compose_patches(out[key], value)
        elif isinstance(value, Mapping) and key in out:
            raise ValueError(f"no single merge patch sets {key!r} and then merges into it")
        else:
            out[key] = copy.deepcopy(value)
    return out
