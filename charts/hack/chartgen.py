"""Generate the chart's operator settings block and values.schema.json.

One source of truth for operator settings: ``OperatorSettings``
(operator/src/zopilot_operator/settings.py). This script writes

* the ``operator.config`` block of charts/zopilot/values.yaml (one camelCase
  key per settings field, its default and its description), and
* charts/zopilot/values.schema.json (the whole values schema; the
  ``operator.config`` part from the settings' own JSON schema), with
  ``additionalProperties: false`` on every object users edit.

Fields the chart derives from other values (``DERIVED``) are left out of
``operator.config``; the ConfigMap template sets them. tests/chart checks that
both files are what this script writes, and that the rendered ConfigMap sets
every settings field.

    .venv/bin/python charts/hack/chartgen.py          # rewrite both files
    .venv/bin/python charts/hack/chartgen.py --check  # exit 1 if they drift
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from zopilot_operator.settings import OperatorSettings

CHART = Path(__file__).resolve().parent.parent / "zopilot"
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
BEGIN = "    # BEGIN generated operator.config\n"
END = "    # END generated operator.config\n"
HOW = ".venv/bin/python charts/hack/chartgen.py"
ENV_PREFIX = "ZOPILOT_OPERATOR_"

# Settings set by the chart from other values (settings field -> where it comes from).
DERIVED = {
    "watch_namespaces": "watchNamespaces",
    "leader_election_namespace": "the release namespace",
    "metrics_port": "operator.metrics.port",
    "worker_image": "worker.image",
    "worker_image_pull_policy": "worker.image.pullPolicy",
    "worker_service_account": "worker.serviceAccount",
    "model_pvc_name": "worker.modelVolume.claimName",
    "model_mount_path": "worker.modelVolume.mountPath",
    "gpu_product": "worker.gpuProduct",
    "price_per_gpu_second_usd": "worker.pricePerGpuSecondUsd",
}


def camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def config_fields() -> dict[str, Any]:
    """Settings fields users set through operator.config, in class order."""
    return {n: f for n, f in OperatorSettings.model_fields.items() if n not in DERIVED}


def values_block() -> str:
    defaults = OperatorSettings()
    lines: list[str] = []
    for name, field in config_fields().items():
        text = f"-- {field.description or name} (env {env_name(name)})"
        lines += [f"    # {line}" for line in textwrap.wrap(text, 84)]
        value = getattr(defaults, name)
        lines.append(f"    {camel(name)}: {json.dumps(value)}")
    return "".join(line + "\n" for line in lines)


def render_values(current: str) -> str:
    start, end = current.index(BEGIN) + len(BEGIN), current.index(END)
    return current[:start] + values_block() + current[end:]


# ------------------------------------------------------------------- schema
def obj(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A closed object: unknown keys (typos) are refused with their name."""
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


STR: dict[str, Any] = {"type": "string"}
BOOL: dict[str, Any] = {"type": "boolean"}
INT: dict[str, Any] = {"type": "integer"}
PORT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 65535}
MAP: dict[str, Any] = {"type": "object"}  # Kubernetes objects: the API server validates them
LIST: dict[str, Any] = {"type": "array"}
STR_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
STR_LIST: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
DNS_LABEL: dict[str, Any] = {
    "type": "string",
    "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "maxLength": 63,
}
DURATION: dict[str, Any] = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}
SERVICE_TYPES = ["ClusterIP", "NodePort", "LoadBalancer"]
PULL_POLICY: dict[str, Any] = {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]}


def image() -> dict[str, Any]:
    return obj(
        {
            "repository": {"type": "string", "minLength": 1},
            "tag": STR,
            "digest": {"type": "string", "pattern": "^(|sha256:[a-f0-9]{64})$"},
            "pullPolicy": PULL_POLICY,
        },
        required=["repository"],
    )


def service_account() -> dict[str, Any]:
    return obj({"create": BOOL, "name": STR, "annotations": STR_MAP})


def monitor() -> dict[str, Any]:
    return obj(
        {
            "enabled": BOOL,
            "additionalLabels": STR_MAP,
            "namespace": STR,
            "interval": DURATION,
            "scrapeTimeout": DURATION,
            "relabelings": LIST,
            "metricRelabelings": LIST,
        }
    )


def settings_schema() -> dict[str, Any]:
    """operator.config from the settings class's own JSON schema (types, bounds, enums)."""
    source = OperatorSettings.model_json_schema()["properties"]
    props: dict[str, Any] = {}
    for name in config_fields():
        prop = {
            k: v
            for k, v in source[name].items()
            if k in ("type", "items", "enum", "minimum", "maximum", "exclusiveMinimum")
            or k == "exclusiveMaximum"
        }
        if "const" in source[name]:
            prop["enum"] = [source[name]["const"]]
        prop["description"] = f"{source[name].get('description', '')} (env {env_name(name)})"
        props[camel(name)] = prop
    return obj(props)


def values_schema() -> dict[str, Any]:
    probe = MAP
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "zopilot chart values (generated by charts/hack/chartgen.py)",
        **obj(
            {
                "nameOverride": STR,
                "fullnameOverride": STR,
                "commonLabels": STR_MAP,
                "watchNamespaces": {**STR_LIST, "items": DNS_LABEL, "uniqueItems": True},
                "rbac": obj({"create": BOOL}),
                "operator": obj(
                    {
                        "replicas": {"type": "integer", "minimum": 0},
                        "strategy": obj(
                            {
                                "type": {"type": "string", "enum": ["Recreate", "RollingUpdate"]},
                                "rollingUpdate": MAP,
                            }
                        ),
                        "image": image(),
                        "imagePullSecrets": LIST,
                        "verbose": BOOL,
                        "extraArgs": STR_LIST,
                        "extraEnv": LIST,
                        "health": obj({"port": PORT}),
                        "metrics": obj({"port": PORT}),
                        "service": obj(
                            {"type": {"type": "string", "enum": ["ClusterIP", "NodePort"]}}
                        ),
                        "livenessProbe": probe,
                        "readinessProbe": probe,
                        "startupProbe": probe,
                        "resources": MAP,
                        "podSecurityContext": MAP,
                        "securityContext": MAP,
                        "priorityClassName": STR,
                        "nodeSelector": STR_MAP,
                        "tolerations": LIST,
                        "affinity": MAP,
                        "topologySpreadConstraints": LIST,
                        "podAnnotations": STR_MAP,
                        "podLabels": STR_MAP,
                        "podDisruptionBudget": obj(
                            {
                                "enabled": {"type": ["boolean", "null"]},
                                "minAvailable": {"type": ["integer", "string"]},
                            }
                        ),
                        "serviceAccount": service_account(),
                        "config": settings_schema(),
                    }
                ),
                "worker": obj(
                    {
                        "image": image(),
                        "serviceAccount": service_account(),
                        "namespaces": {**STR_LIST, "items": DNS_LABEL},
                        "gpuProduct": {"type": "string", "minLength": 1},
                        "pricePerGpuSecondUsd": {"type": "number", "minimum": 0},
                        "modelVolume": obj({"claimName": STR, "mountPath": STR}),
                        "apiToken": obj({"existingSecret": STR, "key": STR}),
                    }
                ),
                "service": obj(
                    {
                        "enabled": BOOL,
                        "replicas": {"type": "integer", "minimum": 0},
                        "port": PORT,
                        "type": {"type": "string", "enum": SERVICE_TYPES},
                        "gpuMemoryMiB": {"type": "integer", "minimum": 1},
                        "settings": {
                            "type": "object",
                            "propertyNames": {"pattern": "^[A-Z][A-Z0-9_]*$"},
                            "additionalProperties": {"type": ["string", "number", "boolean"]},
                        },
                        "extraEnv": LIST,
                        "resources": MAP,
                        "nodeSelector": STR_MAP,
                        "tolerations": LIST,
                        "affinity": MAP,
                        "priorityClassName": STR,
                        "podAnnotations": STR_MAP,
                        "podLabels": STR_MAP,
                        "readinessProbe": probe,
                        "livenessProbe": probe,
                        "startupProbe": probe,
                    }
                ),
                "networkPolicy": obj(
                    {
                        "enabled": BOOL,
                        "prometheus": obj(
                            {"namespaceSelector": MAP, "podSelector": MAP, "port": PORT}
                        ),
                        "apiServer": obj(
                            {"cidrs": STR_LIST, "ports": {"type": "array", "items": PORT}}
                        ),
                        "serviceClients": LIST,
                    }
                ),
                "monitoring": obj(
                    {
                        "serviceMonitor": monitor(),
                        "podMonitor": monitor(),
                        "prometheusRule": obj(
                            {"enabled": BOOL, "additionalLabels": STR_MAP, "namespace": STR}
                        ),
                        "dashboards": obj(
                            {
                                "enabled": BOOL,
                                "namespace": STR,
                                "labels": STR_MAP,
                                "annotations": STR_MAP,
                            }
                        ),
                    }
                ),
                "tests": obj({"enabled": BOOL}),
                # Helm passes this to a chart installed as a subchart.
                "global": MAP,
            }
        ),
    }


def render_schema() -> str:
    return json.dumps(values_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    args = ap.parse_args(argv)
    wanted = {VALUES: render_values(VALUES.read_text()), SCHEMA: render_schema()}
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p} is out of date: run {HOW}", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(wanted[p])
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
