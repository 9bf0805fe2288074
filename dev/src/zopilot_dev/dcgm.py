"""A stand-in for NVIDIA's DCGM exporter, for simulated GPUs (SIMULATED).

Serves the framebuffer gauges the real dcgm-exporter serves
(``DCGM_FI_DEV_FB_FREE``/``_USED``/``_RESERVED``, MiB, labels ``gpu``,
``UUID``, ``device``, ``modelName``, ``Hostname``) for each simulated RTX 4090
(one per kwok GPU node and per real GPU-labelled node: the real nodes have no
GPU either), scraped by the real Prometheus. The numbers come from two sources:

* pods: with ``--follow-pods``, each running worker pod
  (``app.kubernetes.io/name=zopilot-worker``) on a GPU node adds its
  ``zopilot.dev/required-mib`` annotation to that GPU's used memory once it
  has been running for ``--follow-delay`` seconds (a real GPU fills while the
  model loads, and DCGM samples only every 30 s);
* tests: ``PUT /gpus/<uuid-or-node>`` with ``{"used_mib": N}`` (base usage by
  other processes, pods still add), ``{"free_mib": N}`` (pins free memory),
  ``{"frozen": true}`` (keep serving the current sample with an old,
  barely advancing timestamp: a stale exporter as Prometheus sees it); ``DELETE /gpus/<key>`` and
  ``POST /reset`` clear overrides. ``GET /gpus`` shows the state.

The node label follows ``--host-label`` (or ``PUT /labels {"style": ...}``):
``node`` (default) writes ``Hostname="<node>"``, as an exporter on the host
network does; ``hostname`` writes ``hostname="<node>"``, as dcgm-exporter 4.x
names the label; ``pod`` writes ``Hostname="<exporter pod name>"``
(:func:`exporter_pod_name`), as a real exporter pod does without hostNetwork,
so the operator must map the pod to its node through the API. ``/reset``
restores the style the exporter started with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .nodes import SimulatedGPU

log = logging.getLogger("zopilot.dcgm")

WORKER_SELECTOR = "app.kubernetes.io/name=zopilot-worker"
REQUIRED_MIB_ANNOTATION = "zopilot.dev/required-mib"
# What a real RTX 4090 reports as DCGM_FI_DEV_FB_RESERVED is a few hundred MiB
# (driver/ECC bookkeeping); a constant keeps free + used + reserved == total.
DEFAULT_RESERVED_MIB = 300
DRIVER_VERSION = "550.54.15"
LABEL_STYLES = ("node", "hostname", "pod")
EXPORTER_POD_PREFIX = "dcgm-exporter-"


def exporter_pod_name(node: str) -> str:
    """The name a DaemonSet pod of dcgm-exporter on ``node`` has here (stable per node)."""
    return EXPORTER_POD_PREFIX + hashlib.sha256(node.encode()).hexdigest()[:5]


def host_label(style: str, node: str) -> str:
    """The exposition's node label for ``node`` in a label ``style``."""
    if style == "hostname":
        return f'hostname="{node}"'
    if style == "pod":
        return f'Hostname="{exporter_pod_name(node)}"'
    return f'Hostname="{node}"'


@dataclass
class GPUState:
    gpu: SimulatedGPU
    reserved_mib: int = DEFAULT_RESERVED_MIB
    base_used_mib: int = 0
    pinned_free_mib: int | None = None
    pods_used_mib: int = 0
    frozen: tuple[int, int, int, int] | None = None  # (ts_ms, free, used, reserved)
    pods: list[str] = field(default_factory=list)

    def sample(self) -> tuple[int, int, int]:
        total = self.gpu.total_mib
        if self.pinned_free_mib is not None:
            free = max(0, min(self.pinned_free_mib, total - self.reserved_mib))
            used = total - self.reserved_mib - free
        else:
            used = min(total - self.reserved_mib, self.base_used_mib + self.pods_used_mib)
            free = total - self.reserved_mib - used
        return free, used, self.reserved_mib


class Exporter:
    def __init__(self, gpus: list[SimulatedGPU], label_style: str = "node") -> None:
        if label_style not in LABEL_STYLES:
            raise ValueError(f"label style {label_style!r}: use one of {', '.join(LABEL_STYLES)}")
        self._default_style = self.label_style = label_style
        self._lock = threading.Lock()
        self._state = {g.uuid: GPUState(g) for g in gpus}
        # Time (ms) of the last scrape served. Every sample carries an explicit
        # timestamp: Prometheus writes a staleness marker when a series switches
        # from scrape-time to explicit stamps, so "frozen" would read as
        # "missing" instead of "stale" unless all samples are stamped.
        self._last_scrape_ms = int(time.time() * 1000)

    def _find(self, key: str) -> GPUState:
        for s in self._state.values():
            if key in (s.gpu.uuid, s.gpu.node):
                return s
        raise KeyError(key)

    def set_override(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            s = self._find(key)
            if "used_mib" in body:
                s.base_used_mib = int(body["used_mib"])
                s.pinned_free_mib = None
            if "free_mib" in body:
                s.pinned_free_mib = int(body["free_mib"])
            if "reserved_mib" in body:
                s.reserved_mib = int(body["reserved_mib"])
            if "frozen" in body:
                s.frozen = (self._last_scrape_ms + 1, *s.sample()) if body["frozen"] else None
            return self._describe(s)

    def set_label_style(self, style: str) -> dict[str, Any]:
        if style not in LABEL_STYLES:
            raise ValueError(f"label style {style!r}: use one of {', '.join(LABEL_STYLES)}")
        with self._lock:
            self.label_style = style
        return self.labels()

    def labels(self) -> dict[str, Any]:
        """The label style and, per node, the exporter pod name the pod style uses."""
        nodes = sorted({s.gpu.node for s in self._state.values()})
        return {"style": self.label_style, "pods": {n: exporter_pod_name(n) for n in nodes}}

    def clear(self, key: str | None = None) -> None:
        with self._lock:
            if key is None:
                self.label_style = self._default_style
            for s in self._state.values():
                if key is None or key in (s.gpu.uuid, s.gpu.node):
                    s.base_used_mib, s.pinned_free_mib, s.frozen = 0, None, None
                    s.reserved_mib = DEFAULT_RESERVED_MIB

    def set_pod_usage(self, usage: dict[str, tuple[int, list[str]]]) -> None:
        """usage: node -> (MiB used by worker pods, pod names)."""
        with self._lock:
            for s in self._state.values():
                s.pods_used_mib, s.pods = usage.get(s.gpu.node, (0, []))

    def _describe(self, s: GPUState) -> dict[str, Any]:
        free, used, reserved = s.sample()
        return {
            "node": s.gpu.node,
            "gpu": s.gpu.index,
            "uuid": s.gpu.uuid,
            "total_mib": s.gpu.total_mib,
            "free_mib": free,
            "used_mib": used,
            "reserved_mib": reserved,
            "pods": s.pods,
            "frozen": s.frozen is not None,
        }

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._describe(s) for s in self._state.values()]

    def exposition(self) -> str:
        families = {
            "DCGM_FI_DEV_FB_FREE": ("Framebuffer memory free (in MiB).", 0),
            "DCGM_FI_DEV_FB_USED": ("Framebuffer memory used (in MiB).", 1),
            "DCGM_FI_DEV_FB_RESERVED": ("Framebuffer memory reserved (in MiB).", 2),
        }
        with self._lock:
            style = self.label_style
            self._last_scrape_ms = int(time.time() * 1000)
            rows: list[tuple[SimulatedGPU, list[int], str]] = []
            for s in self._state.values():
                if s.frozen is not None:
                    # Each scrape advances a frozen stamp by 1 ms: Prometheus
                    # accepts it in order, yet the sample ages like a stuck DCGM.
                    ts, free, used, reserved = s.frozen
                    s.frozen = (ts + 1, free, used, reserved)
                    rows.append((s.gpu, [free, used, reserved], f" {ts + 1}"))
                else:
                    # Pod-style series go unstamped: Prometheus writes staleness
                    # markers only for unstamped series, so when the style switches
                    # back they vanish at once instead of lingering for the 5 min
                    # lookback (tests switch styles on a shared Prometheus).
                    stamp = "" if style == "pod" else f" {self._last_scrape_ms}"
                    rows.append((s.gpu, list(s.sample()), stamp))
        out: list[str] = []
        for name, (help_text, i) in families.items():
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            for gpu, vals, stamp in rows:
                labels = (
                    f'gpu="{gpu.index}",UUID="{gpu.uuid}",device="{gpu.device}",'
                    f'modelName="{gpu.model_name}",{host_label(style, gpu.node)},'
                    f'DCGM_FI_DRIVER_VERSION="{DRIVER_VERSION}"'
                )
                out.append(f"{name}{{{labels}}} {vals[i]}{stamp}")
        return "\n".join(out) + "\n"


def _parse_time(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def pod_usage(
    pods: list[dict[str, Any]], now: float, delay_s: float
) -> dict[str, tuple[int, list[str]]]:
    """Pure: MiB per node of worker pods running for at least ``delay_s``."""
    usage: dict[str, tuple[int, list[str]]] = {}
    for p in pods:
        status, meta = p.get("status") or {}, p.get("metadata") or {}
        node = (p.get("spec") or {}).get("nodeName")
        if not node or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            continue
        started = None
        for cs in status.get("containerStatuses") or []:
            started = _parse_time(((cs.get("state") or {}).get("running") or {}).get("startedAt"))
        if started is None or now - started < delay_s:
            continue
        try:
            mib = int((meta.get("annotations") or {}).get(REQUIRED_MIB_ANNOTATION, "0"))
        except ValueError:
            continue
        total, names = usage.get(node, (0, []))
        usage[node] = (total + mib, [*names, f"{meta.get('namespace')}/{meta.get('name')}"])
    return usage


def follow_pods(exporter: Exporter, kubeconfig: str, delay_s: float, stop: threading.Event) -> None:
    from kubernetes import client, config  # imported here: the exporter runs without it

    api = client.CoreV1Api(
        config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    )
    while not stop.is_set():
        try:
            pods = api.list_pod_for_all_namespaces(label_selector=WORKER_SELECTOR)
            raw = api.api_client.sanitize_for_serialization(pods.items)
            exporter.set_pod_usage(pod_usage(raw, time.time(), delay_s))
        except Exception as e:  # keep serving the last numbers, like a real exporter
            log.warning("listing worker pods failed: %s", e)
        stop.wait(0.5)


def make_handler(exporter: Exporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: str, ctype: str = "application/json") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, exporter.exposition(), "text/plain; version=0.0.4")
            elif self.path == "/gpus":
                self._send(200, json.dumps(exporter.describe()))
            elif self.path == "/labels":
                self._send(200, json.dumps(exporter.labels()))
            elif self.path == "/health":
                self._send(200, '{"ok": true}')
            else:
                self._send(404, '{"error": "not found"}')

        def do_PUT(self) -> None:
            key = self.path.removeprefix("/gpus/")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path == "/labels":
                    self._send(200, json.dumps(exporter.set_label_style(str(body.get("style")))))
                    return
                self._send(200, json.dumps(exporter.set_override(key, body)))
            except KeyError:
                self._send(404, json.dumps({"error": f"no simulated GPU {key!r}"}))
            except (ValueError, TypeError) as e:
                self._send(400, json.dumps({"error": str(e)}))

        def do_DELETE(self) -> None:
            exporter.clear(self.path.removeprefix("/gpus/"))
            self._send(200, json.dumps(exporter.describe()))

        def do_POST(self) -> None:
            if self.path == "/reset":
                exporter.clear()
                self._send(200, json.dumps(exporter.describe()))
            else:
                self._send(404, '{"error": "not found"}')

        def log_message(self, fmt: str, *args: Any) -> None:
            if not self.path.startswith("/metrics"):
                log.info("%s %s", self.address_string(), fmt % args)

    return Handler


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--gpus", type=Path, required=True, help="JSON list of simulated GPUs")
    ap.add_argument("--kubeconfig", help="follow worker pods through this cluster")
    ap.add_argument("--follow-delay", type=float, default=2.0)
    ap.add_argument(
        "--host-label",
        choices=LABEL_STYLES,
        default="node",
        help="node label style: Hostname=<node>, hostname=<node>, or Hostname=<exporter pod>",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    gpus = [SimulatedGPU(**g) for g in json.loads(args.gpus.read_text())]
    exporter = Exporter(gpus, args.host_label)
    stop = threading.Event()
    if args.kubeconfig:
        threading.Thread(
            target=follow_pods,
            args=(exporter, args.kubeconfig, args.follow_delay, stop),
            daemon=True,
        ).start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(exporter))
    log.info(
        "serving %d simulated GPUs on 127.0.0.1:%d at %s", len(gpus), args.port, datetime.now(UTC)
    )
    try:
        server.serve_forever()
    finally:
        stop.set()


if __name__ == "__main__":
    main()
