"""DocumentJob spec (zopilot.dev/v1alpha1) as pydantic models.

Mirrors ``crds/documentjob.yaml``: the API server validates and defaults a
manifest against the CRD; these models parse the result on the other side (the
operator, and the worker's job runner which gets the spec as JSON). Field names
are the CRD's camelCase, exposed as snake_case attributes.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "zopilot.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DocumentJob"
PLURAL = "documentjobs"

MIB = 1024 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Task(StrEnum):
    EXTRACT = "extract"
    CLASSIFY = "classify"


class Quantization(StrEnum):
    NONE = "none"
    INT8 = "int8"
    NF4 = "nf4"


class ConfigMapSource(_Model):
    name: str
    key: str


class VolumeSource(_Model):
    claim_name: str
    path: str


class DocumentSource(_Model):
    """Exactly one of url, config_map, volume."""

    url: str | None = None
    config_map: ConfigMapSource | None = None
    volume: VolumeSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DocumentSource:
        n = sum(x is not None for x in (self.url, self.config_map, self.volume))
        if n != 1:
            raise ValueError("each document needs exactly one of url, configMap or volume")
        return self


class ExtractOptions(_Model):
    format: Literal["markdown", "text"] = "markdown"
    ocr: Literal["auto", "always", "never"] = "auto"


class ClassifyOptions(_Model):
    labels: list[str] = Field(min_length=2, max_length=64)
    model: str = "mixtral-8x7b-instruct"
    quantization: Quantization = Quantization.NF4
    max_input_tokens: int = Field(default=2048, ge=64, le=32768)

    @field_validator("labels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("labels must be unique")
        return v


class OutputVolume(_Model):
    claim_name: str
    path: str = ""


class OutputSpec(_Model):
    volume: OutputVolume | None = None


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTORS = {
    None: 1,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}


def parse_quantity_bytes(value: str | int) -> int:
    """Bytes of a Kubernetes memory quantity ("20Gi", "512Mi", 1073741824)."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"quantity must be positive, got {value}")
        return value
    m = _QUANTITY.match(value.strip())
    if not m:
        raise ValueError(f'not a memory quantity: "{value}" (expected e.g. 20Gi or 512Mi)')
    number = float(m.group(1)) * _FACTORS[m.group(2)]
    if number <= 0:
        raise ValueError(f"quantity must be positive, got {value}")
    return int(number)


class DocumentJobSpec(_Model):
    documents: list[DocumentSource] = Field(min_length=1, max_length=1000)
    tasks: list[Task] = Field(min_length=1, max_length=2)
    extract: ExtractOptions = ExtractOptions()
    classify: ClassifyOptions | None = None
    output: OutputSpec | None = None
    gpu_memory: str | int = "auto"
    priority: int = Field(default=0, ge=-1000, le=1000)
    deadline_seconds: int = Field(default=3600, ge=30, le=604800)
    retries: int = Field(default=2, ge=0, le=10)

    @model_validator(mode="after")
    def _classify_needs_options(self) -> DocumentJobSpec:
        if Task.CLASSIFY in self.tasks and self.classify is None:
            raise ValueError(
                "spec.classify (labels, model) is required when spec.tasks contains classify"
            )
        if self.gpu_memory != "auto":
            parse_quantity_bytes(self.gpu_memory)
        return self

    @property
    def explicit_gpu_memory_mib(self) -> int | None:
        """The explicit gpuMemory in MiB (rounded up), or None for "auto"."""
        if self.gpu_memory == "auto":
            return None
        return -(-parse_quantity_bytes(self.gpu_memory) // MIB)

    @classmethod
    def from_k8s(cls, spec: dict[str, Any]) -> DocumentJobSpec:
        return cls.model_validate(spec)

    def to_k8s(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
