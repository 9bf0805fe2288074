"""``zopilot-operator``: run the kopf operator (all namespaces, or those given)."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import sys

import kopf

from zopilot_operator import handlers
from zopilot_operator.settings import ENV_PREFIX, OperatorSettings

M_ARENA_MAX = -8  # glibc mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (default 8 per core) before threads start.

    API calls run in a pool of threads; each would otherwise get an arena of
    its own that keeps freed memory, which shows as RSS growing with the
    number of threads rather than with the work. Same as MALLOC_ARENA_MAX=2.
    False where there is no glibc (nothing changes then).
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="zopilot-operator", description=__doc__)
    ap.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="plan, admit and follow jobs only in these namespaces (repeatable); default: "
        "the watch_namespaces setting, or all",
    )
    ap.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="kopf liveness endpoint ('' to disable)",
    )
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("kopf.objects", "kopf.activities.probe", "kubernetes.client.rest", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    assert handlers.startup  # the handlers register on import
    limit_malloc_arenas()
    if args.namespace:
        # The operator's settings carry it to admission's lists and the pod watch.
        os.environ[f"{ENV_PREFIX}WATCH_NAMESPACES"] = json.dumps(args.namespace)
    namespaces = OperatorSettings().watch_namespaces
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=not namespaces,
                namespaces=namespaces,
                # Our own Lease elects the one admitting instance; kopf's peering
                # (which needs extra CRDs) would pause every handler instead.
                standalone=True,
                liveness_endpoint=args.liveness or None,
            )
        )
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
