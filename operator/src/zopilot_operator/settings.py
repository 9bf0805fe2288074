"""Operator settings: one pydantic-settings class, environment prefix ``ZOPILOT_OPERATOR_``.

Every field states its unit and why its default is what it is. The Helm chart
sets them through the operator Deployment's environment; tests build
``OperatorSettings(...)`` directly with the values a case needs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ZOPILOT_OPERATOR_"


class OperatorSettings(BaseSettings):
    """Configuration of one operator process (read once at start)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # --- Prometheus / DCGM ---------------------------------------------------
    prometheus_url: str = Field(
        default="http://prometheus:9090",
        description="Base URL of the Prometheus that scrapes the DCGM exporter "
        "(the in-cluster Service name of a typical kube-prometheus install).",
    )
    prometheus_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds for one Prometheus HTTP request. Admission runs every "
        "admission_interval_s, so a hung Prometheus must not stall it longer than that.",
    )
    metrics_max_age_s: float = Field(
        default=90.0,
        gt=0,
        description="Seconds after which a DCGM sample is stale and not trusted for "
        "admission. The DCGM exporter samples every 30 s by default: 90 s tolerates two "
        "missed scrapes before admission stops.",
    )
    reservation_settle_s: float = Field(
        default=300.0,
        ge=0,
        description="Seconds a worker must have been running, as of a sample's timestamp, "
        "before that sample is assumed to show the worker's GPU memory. Until then the "
        "job's requiredMiB is also subtracted from the sampled free memory. The "
        "predecessor's cold start (model load) took 60-180 s; plus a 30 s scrape interval "
        "and headroom gives 300 s.",
    )
    safety_margin_mib: int = Field(
        default=1024,
        ge=0,
        description="MiB that must stay free on a GPU after placing a job. Covers planner "
        "error, allocator fragmentation and the driver's own growth; 1 GiB is ~4% of an "
        "RTX 4090.",
    )
    fail_open: bool = Field(
        default=False,
        description="When metrics are missing or stale: False (default) admits nothing "
        "(fail closed, reason on every waiting job); True admits by bookkeeping alone "
        "(GPU capacity minus the requiredMiB of admitted jobs), blind to memory used by "
        "anything else.",
    )
    gpu_product: str = Field(
        default="NVIDIA GeForce RTX 4090",
        description="The GPU model admitted onto, as DCGM's modelName label spells it "
        "(spaces). Matched against the node label nvidia.com/gpu.product (dashes, maybe a "
        "-SHARED suffix) after normalising both.",
    )
    gpu_memory_mib_fallback: int = Field(
        default=24564,
        gt=0,
        description="MiB of one GPU when neither the node label nvidia.com/gpu.memory nor "
        "DCGM (free+used+reserved) tells. 24564 is what nvidia-smi reports for an RTX 4090.",
    )
    # --- admission ------------------------------------------------------------
    admission_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between admission rounds when no event triggers one (see "
        "admission_debounce_s): catches node and DCGM changes, which are not watched. Well "
        "below the 30 s DCGM sample period would only re-read the same numbers.",
    )
    admission_debounce_s: float = Field(
        default=0.1,
        ge=0,
        description="Seconds an admission round waits after the event that triggered it (a "
        "job created or queued, a GPU released) so a burst of events, such as 1,000 jobs "
        "applied at once, becomes a few rounds instead of one per job. Rounds also run every "
        "admission_interval_s without any event (node or metrics changes).",
    )
    admission_on_events: bool = Field(
        default=True,
        description="Run a round shortly after an event that may let a job in. False: rounds "
        "only every admission_interval_s (kept to measure what event triggering gains).",
    )
    admission_write_concurrency: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Status patches (and their events) one round writes at a time. One after "
        "the other, 400 admissions wait 400 round trips; the API server's default "
        "max-mutating-requests-inflight is 200 for all clients together.",
    )
    starvation_age_s: float = Field(
        default=900.0,
        gt=0,
        description="Seconds a queued job may wait before smaller, later jobs may no "
        "longer backfill the GPU it needs (the GPU is then held for it). 15 min: a few "
        "typical job durations of the predecessor's workload.",
    )
    # --- worker pods ------------------------------------------------------------
    worker_image: str = Field(
        default="zopilot-worker:0.1.0",
        description="Image of the worker pods; the chart pins it to the release's tag.",
    )
    worker_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent",
        description="Pull policy of worker pods. Worker images are large (CUDA, torch): "
        "pull once per node and version.",
    )
    worker_namespace_policy: Literal["job"] = Field(
        default="job",
        description="Where worker pods run. Only 'job' (the DocumentJob's namespace) is "
        "possible: owner references (deleting the job deletes its pod) are namespace-local, "
        "and the job's ConfigMap and PVC inputs live in its namespace.",
    )
    worker_tolerated_taints: list[str] = Field(
        default_factory=list,
        description="Taint keys (besides nvidia.com/gpu, always tolerated) that worker pods "
        "tolerate with Exists, e.g. kwok.x-k8s.io/node in the local dev cluster. Nodes with "
        "other NoSchedule/NoExecute taints are not admitted onto. JSON list in the env.",
    )
    worker_service_account: str = Field(
        default="default",
        description="ServiceAccount of worker pods, which must exist in the job's namespace "
        "('default' always does). Its token is not mounted: the worker never calls the API.",
    )
    worker_cpu_request: str = Field(
        default="2",
        description="CPU request of a worker pod: document parsing and tokenisation run on "
        "the CPU next to the GPU work.",
    )
    worker_memory_request: str = Field(
        default="16Gi",
        description="Memory request of a worker pod: from_pretrained stages weight shards "
        "through host memory while loading (a few GiB per shard) plus documents in flight.",
    )
    worker_metrics_port: int = Field(
        default=8080,
        gt=0,
        lt=65536,
        description="Port of the worker's /metrics and /health while a job runs.",
    )
    model_pvc_name: str = Field(
        default="zopilot-models",
        description="PersistentVolumeClaim holding the model directories, mounted read-only "
        "into worker pods. Claims are namespaced: one must exist in every namespace that "
        "runs DocumentJobs (e.g. ReadOnlyMany claims bound to one shared volume). Empty: no "
        "model volume (models baked into the image, or a development setup).",
    )
    model_mount_path: str = Field(
        default="/models",
        description="Where the model claim is mounted in the worker (its model root).",
    )
    pod_pending_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="Seconds a worker pod may stay unscheduled or unstarted before the "
        "attempt is given up and retried (a pod that never starts would hold its GPU "
        "reservation forever; activeDeadlineSeconds only counts once the kubelet has it).",
    )
    pod_unschedulable_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a worker pod may be Unschedulable before the operator takes "
        "it as the scheduler's verdict on the admission (it counts what admission does "
        "not: GPU pods the operator did not create, terminating pods, CPU and memory "
        "requests): the pod is deleted and the job admitted again, preferring another "
        "node, without using up spec.retries.",
    )
    # --- retries ----------------------------------------------------------------
    retry_backoff_base_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds before the first retry; attempt n waits base * 2^(n-1). 30 s "
        "lets transient causes (a node restart, a flaky download) pass.",
    )
    retry_backoff_max_s: float = Field(
        default=600.0,
        gt=0,
        description="Upper bound in seconds of one retry delay.",
    )
    oom_memory_growth_factor: float = Field(
        default=1.25,
        gt=1.0,
        description="An OOM-killed attempt is re-planned with requiredMiB times this "
        "(capped at what the largest GPU offers). 1.25 is one step that covers the "
        "planner's known blind spots (fragmentation, long documents) without doubling.",
    )
    # --- cost / telemetry ---------------------------------------------------------
    price_per_gpu_second_usd: float = Field(
        default=0.00031,
        ge=0,
        description="USD per GPU-second for status.costUSD: the RTX 4090 serverless price "
        "the predecessor paid, so costs compare like for like.",
    )
    worker_command: list[str] = Field(
        default_factory=list,
        description="Override of the worker container's command (a JSON list). Empty: "
        "the worker's own `zopilot-worker run-job`. For stand-in workers in development.",
    )
    worker_env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment for every worker pod (a JSON object), e.g. the job "
        "runner's fetch policy: ZOPILOT_WORKER_FETCH_ALLOWED_HOSTS, "
        "ZOPILOT_WORKER_FETCH_PRIVATE_HOSTS, ZOPILOT_WORKER_FETCH_ALLOW_HTTP. Variables the "
        "operator sets itself (the job, the plan, mounts) cannot be overridden.",
    )
    watch_namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces whose DocumentJobs this operator plans, admits and follows, and "
        "whose worker pods it watches (JSON list in the env). Empty: all namespaces. The "
        "command line's --namespace sets it too. Another operator may own the other "
        "namespaces; GPU capacity is then shared between them without coordination. The "
        "chart's watchNamespaces sets it together with namespaced RBAC.",
    )
    leader_election_namespace: str = Field(
        default="default",
        description="Namespace of the Lease that elects the one instance running the "
        "admission loop (the chart sets the operator's own namespace).",
    )
    leader_election_lease_s: float = Field(
        default=15.0,
        gt=0,
        description="Seconds a leader's Lease stays valid without renewal; another "
        "instance takes over admission after it lapses (kube-controller-manager's default).",
    )
    job_resync_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between safety-net reconciles of each active job, in case a "
        "pod event was missed (watches can drop events across reconnects).",
    )
    metrics_port: int = Field(
        default=8000,
        ge=0,
        lt=65536,
        description="Port of the operator's own /metrics (zopilot_operator_*).",
    )
    # --- DCGM node join -----------------------------------------------------------
    dcgm_node_labels: list[str] = Field(
        default_factory=lambda: ["Hostname", "hostname", "node", "nodename", "kubernetes_node"],
        description="DCGM series labels that may name a GPU's node, tried in order (JSON list "
        "in the env). dcgm-exporter's Hostname (hostname since 4.x) holds the exporter "
        "pod's name unless it runs with hostNetwork; node/nodename/kubernetes_node are what "
        "scrape relabelings usually add from __meta_kubernetes_pod_node_name.",
    )
    dcgm_exporter_pod_selector: str = Field(
        default="app.kubernetes.io/name=dcgm-exporter",
        description="Label selector of the dcgm-exporter pods. When a series' node label "
        "names no node, it is taken for an exporter pod's name and mapped to that pod's "
        "node through the API. Empty: no fallback (such series are ignored).",
    )
    dcgm_exporter_namespace: str = Field(
        default="",
        description="Namespace of the dcgm-exporter pods for the pod-name fallback. Empty: "
        "all namespaces (needs cluster-wide pod list).",
    )
