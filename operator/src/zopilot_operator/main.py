"""``zopilot-operator``: run the kopf operator (all namespaces, or those named)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

import kopf

from zopilot_operator import handlers
from zopilot_operator.settings import OperatorSettings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="zopilot-operator", description=__doc__)
    ap.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch only these namespaces (repeatable); default: watch_namespaces, else all",
    )
    ap.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="kopf liveness endpoint ('' to disable)",
    )
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.namespace:
        # The flags win over the settings' watch_namespaces; the handlers read
        # the settings, so both name the same namespaces.
        os.environ["ZOPILOT_OPERATOR_WATCH_NAMESPACES"] = json.dumps(args.namespace)
    namespaces = list(OperatorSettings().watch_namespaces)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("kopf.objects", "kopf.activities.probe", "kubernetes.client.rest", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    assert handlers.startup  # the handlers register on import
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
