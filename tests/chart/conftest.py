"""Helpers for the chart tests: helm and promtool, rendering, metric names defined in code."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from zopilot_dev.cluster import tools_bin_dir
from zopilot_dev.config import REPO_ROOT

CHART = REPO_ROOT / "charts" / "zopilot"
HACK = REPO_ROOT / "charts" / "hack"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
# helm template assumes Kubernetes v1.20 without a cluster; the chart needs >= 1.29.
KUBE_VERSION = "1.34.4"


def hack_module(name: str) -> ModuleType:
    """charts/hack/<name>.py (generator scripts, not an installed package)."""
    spec = importlib.util.spec_from_file_location(f"chart_hack_{name}", HACK / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _tool(name: str, hint: str) -> str:
    built = tools_bin_dir(build=False) / name
    path = str(built) if built.exists() else shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: {hint}")
    return path


@pytest.fixture(scope="session")
def helm() -> str:
    return _tool("helm", "run dev/install-deps.sh (builds helm into ~/.cache/zopilot/bin)")


@pytest.fixture(scope="session")
def promtool() -> str:
    return _tool("promtool", "run dev/install-deps.sh (Debian's prometheus package)")


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
    return result


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """render(*values_files, set=[...], namespace=...) -> the manifests of `helm template`."""

    def _render(
        *values: Path, set: Iterable[str] = (), namespace: str = "zopilot-system"
    ) -> list[dict[str, Any]]:
        argv = [helm, "template", "rel", str(CHART), "--namespace", namespace]
        argv += ["--kube-version", KUBE_VERSION]
        for v in values:
            argv += ["-f", str(v)]
        for s in set:
            argv += ["--set", s]
        out = run(argv).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    return _render


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def defined_metric_names() -> set[str]:
    """Every series name the code exposes: operator, worker, DCGM (what we query), up."""
    from zopilot_operator import prometheus as op_prometheus
    from zopilot_operator.metrics import OperatorMetrics
    from zopilot_worker.metrics import WorkerMetrics

    registry = CollectorRegistry()
    OperatorMetrics(registry)
    WorkerMetrics(registry, gpu_probe=lambda: {0: (1, 2, 3, 4)})
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
        "summary": ("", "_sum", "_count", "_created"),
    }
    names = {
        family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]
    }
    names |= {op_prometheus.FREE, op_prometheus.USED, op_prometheus.RESERVED, "up"}
    return names


# PromQL words that look like metric names: functions, aggregations, keywords.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
    "time", "timestamp", "absent", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "bool", "offset", "label_replace", "clamp_min",
    "clamp_max", "topk", "bottomk", "vector", "scalar", "delta", "deriv",
}  # fmt: skip


def metric_names_in(expr: str) -> set[str]:
    """Metric names an expression reads (label matchers, strings, grouping lists removed)."""
    import re

    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\$\w+", "", text)
    words = set(re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {w for w in words if w not in PROMQL_WORDS}


def check_exprs_parse(promtool: str, exprs: dict[str, str], tmp: Path) -> None:
    """Every expression parses: promtool checks them as recording rules."""
    rules = [{"record": f"check:{i}", "expr": expr} for i, expr in enumerate(exprs.values())]
    path = tmp / "exprs.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}))
    result = run([promtool, "check", "rules", str(path)], check=False)
    assert result.returncode == 0, (
        f"queries that do not parse:\n{result.stdout}{result.stderr}\n"
        + json.dumps(list(exprs), indent=1)
    )


@pytest.fixture(scope="session")
def control_dir(cluster: Any) -> Path:
    """Where the stand-in worker (zopilot_dev.fakeworker) reads its scripts."""
    d: Path = cluster.config.state_dir / "fakeworker"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def script(control_dir: Path) -> Callable[..., Path]:
    """script(ns, job, **control) writes the stand-in worker's control file for a job."""
    from zopilot_dev import fakeworker

    def write(ns: str, job: str, **control: object) -> Path:
        files = fakeworker.paths(control_dir, ns, job)
        files["control"].write_text(json.dumps(control))
        return Path(files["release"])

    return write
