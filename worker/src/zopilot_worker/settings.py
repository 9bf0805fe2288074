"""Settings of the worker process (``serve`` and ``run-job``), read from the environment.

One pydantic-settings class, env prefix ``ZOPILOT_WORKER_`` (e.g.
``ZOPILOT_WORKER_EXTRACT_CONCURRENCY=2``). Every field states its unit and why
its default is what it is.

This module also pins the Hugging Face hub offline: importing it sets
``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``. huggingface_hub reads those
variables once, when it is first imported, so they must be set before anything
imports transformers. ``zopilot_worker.cli.main`` calls
:func:`enforce_offline_hub` before it imports any subcommand, and
``zopilot_worker.pipeline`` imports this module at the top while it imports
the transformers-backed classifier lazily, so library users (tests, the app
factory) get the same guarantee. Models come from the mounted model volume only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from zopilot_common.spec import Quantization

MIB = 1024 * 1024

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def enforce_offline_hub() -> None:
    """Forbid any contact with the Hugging Face hub from this process.

    Forced, not ``setdefault``: the model volume is mounted read-only and a
    silent download of 90 GB of weights in a pod is never what anyone wants.
    """
    os.environ.update(OFFLINE_ENV)
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        # Imported before us (e.g. by a test helper): patch the value it cached.
        hub.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


enforce_offline_hub()


class WorkerSettings(BaseSettings):
    """Configuration of one worker process. Env prefix ``ZOPILOT_WORKER_``."""

    model_config = SettingsConfigDict(env_prefix="ZOPILOT_WORKER_", extra="ignore", frozen=True)

    # --- HTTP -----------------------------------------------------------------
    host: str = Field(
        default="0.0.0.0",
        description="Address `serve` binds to. All interfaces: inside a pod the pod IP is what "
        "the Service and probes use.",
    )
    port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        description="TCP port of `serve`. 8080: unprivileged, and what the chart's probes use.",
    )
    metrics_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="TCP port on which `run-job` serves /metrics and /health while it works; "
        "0 disables it. Same as `port` so the chart's ServiceMonitor finds both modes.",
    )

    # --- HTTP: authentication and slow clients (issue 10, section 2) ------------
    api_token: SecretStr | None = Field(
        default=None,
        min_length=1,
        description="Bearer token (env ZOPILOT_WORKER_API_TOKEN) that /extract, /classify, "
        "/docs, /redoc and /openapi.json require when set; compared in constant time. "
        "/health, /ready and /metrics stay open for kubelets and Prometheus. None: no "
        "authentication (the Service is cluster-internal; use a NetworkPolicy then).",
    )
    body_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Seconds a client has to send its whole request body; slower uploads "
        "get 408. 120: a 50 MiB upload then needs ~3.5 Mbit/s, any in-cluster client has "
        "far more, while a client trickling bytes holds its connection at most this long.",
    )
    request_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="Seconds from the request's arrival to its answer (body, queue, work); "
        "beyond it the answer is 504 while work already running finishes in the background "
        "and keeps its slot. 900: a cold Mixtral load (60-180 s) plus a full queue of "
        "10-30 s documents.",
    )
    max_concurrent_uploads: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description="Request bodies read at once, across endpoints; beyond it 503 + "
        "Retry-After. Bodies are read before a request takes a place in an endpoint's "
        "queue, so slow uploads never hold extraction or classification places; this "
        "bounds the memory they buffer (32 x the upload limit at worst).",
    )

    # --- models ---------------------------------------------------------------
    model_root: Path = Field(
        default=Path("/models"),
        description="Directory with one sub-directory per catalog model (named by the "
        "catalog's `local_dir`); the model volume is mounted here read-only.",
    )
    classify_model: str = Field(
        default="mixtral-8x7b-instruct",
        description="Catalog name of the classification model `serve` uses; a job's "
        "spec.classify.model overrides it in `run-job`. Default: the model the service "
        "grew up with.",
    )
    quantization: Quantization = Field(
        default=Quantization.NF4,
        description="Weight quantization of the classification model. NF4 (~26 GB for "
        "Mixtral 8x7B) is the CRD's default and the smallest footprint; int8 needs ~47 GB.",
    )
    device: str | None = Field(
        default=None,
        description='torch device for the classifier ("cuda", "cuda:1", "cpu"); None lets '
        "the classifier pick CUDA when it exists.",
    )
    ocr_model_dir: Path | None = Field(
        default=None,
        description="Directory of the OCR model for scanned pages; None keeps OCR pages "
        "pending (reported in `ocr_pending`) instead of downloading anything.",
    )
    load_model_on_start: bool = Field(
        default=True,
        description="`serve`: load the classifier during startup; /ready answers 503 until "
        "it is loaded. True because a cold load (60-180 s for Mixtral) must not hit the "
        "first user request. False loads it on the first /classify.",
    )
    run_doctor_on_start: bool = Field(
        default=True,
        description="`serve`: run the NumPy/ABI doctor checks at startup; /ready stays 503 "
        "with the failing check's message if they fail.",
    )

    # --- limits ---------------------------------------------------------------
    extract_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Extractions running at once (threads). 4: what the RunPod worker ran "
        "per RTX 4090 node, CPU-bound work on a typical 4-8 vCPU GPU node.",
    )
    classify_concurrency: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Classifications admitted to run at once. 1: one model instance on one "
        "GPU; the classifier runs one forward pass at a time anyway (the engine serializes "
        "them), so more only moves waiting from the queue into the engine.",
    )
    extract_queue_size: int = Field(
        default=16,
        ge=0,
        le=10_000,
        description="Requests allowed to wait for an extraction slot (bounded queue); "
        "beyond it /extract answers 503 + Retry-After. 16 = 4 waves of 4, i.e. a wait of "
        "about a minute at 10-30 s per document, about what a client's timeout tolerates.",
    )
    classify_queue_size: int = Field(
        default=4,
        ge=0,
        le=10_000,
        description="Requests allowed to wait for a classification slot. 4: at 10-30 s per "
        "classification a longer queue only turns into client timeouts.",
    )
    retry_after_s: int = Field(
        default=5,
        ge=1,
        le=3600,
        description="Seconds sent in Retry-After with 503 overloaded / GPU memory busy.",
    )
    max_upload_bytes: int = Field(
        default=50 * MIB,
        ge=1,
        description="Largest document accepted, in bytes (uploads, fetched URLs, files). "
        "50 MiB: the RunPod worker's limit; larger inputs are almost always scans that "
        "belong in a DocumentJob.",
    )
    max_pages: int = Field(
        default=500,
        ge=1,
        description="Largest number of pages extracted from one document.",
    )
    max_input_tokens: int = Field(
        default=2048,
        ge=64,
        le=32768,
        description="Default number of document tokens the classifier reads (the rest is "
        "truncated). 2048: the CRD's default; the start of a document decides its type.",
    )
    gpu_memory_headroom_mib: int = Field(
        default=512,
        ge=0,
        description="MiB of free GPU memory the gate keeps on top of a model's estimate: "
        "CUDA context, allocator fragmentation, another tenant's growth on a shared GPU.",
    )

    # --- document parsing processes (extract/isolation.py) --------------------
    parse_processes: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Child processes that parse documents (each one document at a time, "
        "with its own PDFium). 0: one per CPU this process may run on "
        "(os.sched_getaffinity), since parsing is CPU-bound.",
    )
    parse_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Wall-clock seconds one document may spend being parsed in its child "
        "process (OCR, done in the service process, is not counted); past it the child is "
        "killed and the document fails with parsing_timeout (422). 120: ~10x what a "
        "500-page PDF or a 50 MiB Office file takes on one core.",
    )
    parse_memory_limit_mib: int = Field(
        default=3072,
        ge=0,
        description="Address-space limit (RLIMIT_AS) of each parsing process, in MiB; "
        "0 = unlimited. A document that needs more fails with parsing_memory_exceeded or "
        "parser_crashed (422). 3072: a child with every parser loaded maps ~300 MiB; "
        "the rest covers pandas/openpyxl building a sheet from the 200 MiB of XML the "
        "zip-bomb guard lets through.",
    )

    # --- job runner -----------------------------------------------------------
    fetch_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds allowed for each network phase (connect, read, write) of one "
        "URL fetch; a timeout is a retriable failure.",
    )
    fetch_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Attempts per URL on a retriable error (5xx, 429, timeout), with "
        "exponential backoff, before the document counts as failed retriably.",
    )
    fetch_backoff_s: float = Field(
        default=1.0,
        ge=0,
        description="Seconds before the second fetch attempt; doubled for each further one.",
    )
    configmap_root: Path = Field(
        default=Path("/var/run/zopilot/configmaps"),
        description="Where the operator mounts each ConfigMap source: `<root>/<name>/<key>`.",
    )
    volume_root: Path = Field(
        default=Path("/var/run/zopilot/volumes"),
        description="Where the operator mounts each PVC (input and output): `<root>/<claimName>/`.",
    )
    termination_log: Path = Field(
        default=Path("/dev/termination-log"),
        description="File for the job summary (at most 4 KiB): Kubernetes' default "
        "terminationMessagePath, which the operator reads into the job status.",
    )

    # --- job runner: fetch safety, resume, memory plan (issue 10, section 3) ---
    fetch_allow_http: bool = Field(
        default=False,
        description="Fetch plain-http URLs too. Off: only https, so a document's bytes and "
        "any credentials in its URL are never sent in clear text; redirects to http are "
        "refused as well.",
    )
    fetch_allow_private_networks: bool = Field(
        default=False,
        description="Let URLs reach loopback, private (RFC 1918), unique-local, CGNAT and "
        "other non-global addresses: for tests and on-prem object stores. Link-local and the "
        "cloud-metadata addresses (169.254.169.254, fd00:ec2::254, 100.100.100.200, ...) stay "
        "refused even then. Off: a URL can only reach the public internet, on every hop.",
    )
    fetch_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="When non-empty, the only hosts a URL (and each of its redirects) may "
        'name: exact host names or IP literals, or ".example.com" for every sub-domain. The '
        "address checks still apply. Env: a JSON list.",
    )
    fetch_private_hosts: list[str] = Field(
        default_factory=list,
        description='Hosts (names or IP literals, ".example.com" for sub-domains) that may '
        "resolve to private addresses although fetch_allow_private_networks is off: an "
        "on-prem object store. Link-local and metadata addresses stay refused. Env: a JSON list.",
    )
    fetch_max_redirects: int = Field(
        default=5,
        ge=0,
        le=20,
        description="Redirects followed per fetch; each hop is checked like the first URL. "
        "5: presigned-URL services redirect once or twice.",
    )
    fetch_deadline_s: float = Field(
        default=300.0,
        gt=0,
        description="Seconds one document's fetch may take in all: DNS aside, every connect, "
        "TLS handshake, read, redirect, retry and backoff counts, so a server trickling "
        "bytes cannot hold a document past it. 300: 50 MiB at ~170 KiB/s.",
    )
    required_mib: int = Field(
        default=0,
        ge=0,
        validation_alias=AliasChoices("ZOPILOT_REQUIRED_MIB", "required_mib"),
        description="The job's GPU-memory plan in MiB, set by the operator as "
        "$ZOPILOT_REQUIRED_MIB (no ZOPILOT_WORKER_ prefix). `run-job` caps this process's "
        "CUDA allocations at it, so a worker that outgrows its plan fails itself with a CUDA "
        "OOM (exit 76, re-planned) instead of its neighbours on a shared GPU. 0: no cap.",
    )

    # --- logging --------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the worker and uvicorn."
    )

    @property
    def gpu_memory_headroom_bytes(self) -> int:
        return self.gpu_memory_headroom_mib * MIB
