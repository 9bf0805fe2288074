"""``dev/cluster up|down|status|logs|env``: the local cluster from a shell."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from .cluster import ClusterError, LocalCluster
from .config import ClusterConfig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dev/cluster", description=__doc__)
    ap.add_argument("command", choices=["up", "down", "status", "logs", "env"])
    ap.add_argument("--name", default="zopilot")
    ap.add_argument("--state-dir", type=Path, help="default: $ZOPILOT_CLUSTER_DIR or .cluster/")
    ap.add_argument("--gpu-nodes", type=int, default=2)
    ap.add_argument("--gpu-replicas", type=int, default=4)
    ap.add_argument("--cpu-nodes", type=int, default=1)
    ap.add_argument(
        "--real-gpu-nodes",
        type=int,
        help="real GPU-labelled nodes (kubelet + containerd); default $ZOPILOT_REAL_NODES or 1",
    )
    ap.add_argument(
        "--real-cpu-nodes", type=int, help="real CPU nodes; default $ZOPILOT_REAL_NODES or 1"
    )
    ap.add_argument(
        "--scrape-interval", type=float, default=1.0, help="Prometheus scrape interval (s)"
    )
    ap.add_argument("--apiserver-port", type=int, default=0, help="0 = a free port")
    ap.add_argument("--prometheus-port", type=int, default=0, help="0 = a free port")
    ap.add_argument(
        "--podrunner", action="store_true", help="also run worker pods as local processes"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[cluster] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    kw: dict[str, Any] = {"state_dir": args.state_dir} if args.state_dir else {}
    if args.real_gpu_nodes is not None:
        kw["real_gpu_nodes"] = args.real_gpu_nodes
    if args.real_cpu_nodes is not None:
        kw["real_cpu_nodes"] = args.real_cpu_nodes
    try:
        cfg = ClusterConfig(
            name=args.name,
            gpu_nodes=args.gpu_nodes,
            gpu_replicas=args.gpu_replicas,
            cpu_nodes=args.cpu_nodes,
            scrape_interval_s=args.scrape_interval,
            apiserver_port=args.apiserver_port,
            prometheus_port=args.prometheus_port,
            **kw,
        )
    except ValueError as e:  # e.g. a bad ZOPILOT_REAL_NODES
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = LocalCluster(cfg)
    try:
        if args.command == "up":
            t0 = time.monotonic()
            c.up(podrunner=args.podrunner)
            print(f"cluster {cfg.name} up in {time.monotonic() - t0:.1f} s")
            print(f"export KUBECONFIG={c.state.kubeconfig}")
        elif args.command == "down":
            c.down()
            print(f"cluster {cfg.name} down")
        elif args.command == "status":
            st = c.status()
            nodes_txt = st.pop("nodes", "")
            print(json.dumps(st, indent=2))
            print(nodes_txt)
            return 0 if st.get("up") else 1
        elif args.command == "logs":
            print(c.log_tails())
        elif args.command == "env":
            for k, v in c.env().items():
                print(f"export {k}={v}")
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
