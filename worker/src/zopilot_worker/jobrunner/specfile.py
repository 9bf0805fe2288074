"""Loading the DocumentJob spec the operator hands to the worker (file or env, JSON)."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError
from zopilot_common.catalog import UnknownModelError, get_model
from zopilot_common.spec import DocumentJobSpec, Task

SPEC_ENV = "ZOPILOT_JOB_SPEC"


class InvalidSpec(Exception):
    """The spec cannot be read or does not validate; the message says what to fix."""


def load_spec(path: Path | None, environ: Mapping[str, str] = os.environ) -> DocumentJobSpec:
    """Read ``--spec PATH`` (JSON, or gzipped JSON) or else ``$ZOPILOT_JOB_SPEC``.

    Accepts the bare spec or a whole DocumentJob object (``{"kind": ..., "spec": {...}}``),
    as ``kubectl get -o json`` prints it.
    """
    if path is not None:
        try:
            raw = path.read_bytes()
            if raw[:2] == b"\x1f\x8b":  # gzip: the operator packs specs past 1 MB so
                raw = gzip.decompress(raw)  # they fit the ConfigMap it mounts them from
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise InvalidSpec(f"cannot read the spec file {path}: {exc}") from None
        origin = str(path)
    elif environ.get(SPEC_ENV):
        text, origin = environ[SPEC_ENV], f"${SPEC_ENV}"
    else:
        raise InvalidSpec(f"no job spec: pass --spec PATH or set {SPEC_ENV} to the spec as JSON")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSpec(f"the spec in {origin} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and "spec" in data and ("kind" in data or "apiVersion" in data):
        data = data["spec"]
    try:
        spec = DocumentJobSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"spec.{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise InvalidSpec(f"invalid DocumentJob spec in {origin}: {problems}") from None
    if Task.CLASSIFY in spec.tasks and spec.classify is not None:
        try:
            get_model(spec.classify.model)
        except UnknownModelError as exc:
            raise InvalidSpec(f"spec.classify.model: {exc}") from None
    return spec
