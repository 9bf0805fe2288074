"""The chart rendered with `helm template` (no cluster): values schema, settings coverage,
labels and selectors, the operator Deployment, RBAC, and every supported scenario linted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from zopilot_operator.settings import OperatorSettings

from .conftest import CHART, CI_VALUES, KUBE_VERSION, Render, find, hack_module, run

CI = {p.name.removesuffix("-values.yaml"): p for p in CI_VALUES}
OPERATOR = "rel-zopilot-operator"
chartgen = hack_module("chartgen")


def ci(name: str) -> Path:
    return CI[name]


def test_the_supported_scenarios_exist() -> None:
    assert set(CI) == {"defaults", "all-features", "namespaced", "ha"}


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_lint_strict(helm: str, values: Path) -> None:
    result = run([helm, "lint", "--strict", str(CHART), "-f", str(values)], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------ values schema
def test_generated_values_block_and_schema_are_current() -> None:
    assert chartgen.main(["--check"]) == 0


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("operator.replicaCont=2", "replicaCont"),
        ("operatr.replicas=2", "operatr"),
        ("operator.config.prometheusURL=http://p:9090", "prometheusURL"),
        ("monitoring.serviceMonitor.enable=true", "enable"),
        ("worker.image.tags=x", "tags"),
    ],
)
def test_unknown_keys_fail_with_the_key_named(helm: str, setting: str, named: str) -> None:
    argv = [helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION]
    result = run([*argv, "--set", setting], check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr and "additional properties" in result.stderr.lower()


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("operator.replicas=two", "replicas"),
        ("operator.config.failOpen=maybe", "failOpen"),
        ("operator.config.safetyMarginMib=-1", "safetyMarginMib"),
        ("operator.config.workerNamespacePolicy=operator", "workerNamespacePolicy"),
        ("worker.image.pullPolicy=Sometimes", "pullPolicy"),
        ("watchNamespaces[0]=Not_A_Namespace", "watchNamespaces"),
    ],
)
def test_wrong_types_and_values_fail_with_the_key_named(
    helm: str, setting: str, named: str
) -> None:
    argv = [helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION]
    result = run([*argv, "--set", setting], check=False)
    assert result.returncode != 0 and named in result.stderr, result.stderr


# ------------------------------------------------------- settings coverage
def _config_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (cm,) = find(docs, "ConfigMap", OPERATOR)
    return dict(cm["data"])


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_every_operator_setting_is_set_by_the_chart(render: Render, values: Path) -> None:
    env = _config_env(render(values))
    wanted = {chartgen.env_name(f) for f in OperatorSettings.model_fields}
    assert not wanted - set(env), f"settings the chart cannot set: {sorted(wanted - set(env))}"
    assert not set(env) - wanted, f"variables no setting reads: {sorted(set(env) - wanted)}"


def test_rendered_defaults_are_the_code_defaults(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _config_env(render(ci("defaults"))).items():
        monkeypatch.setenv(key, value)
    from_chart = OperatorSettings().model_dump()
    defaults = OperatorSettings.model_construct().model_dump()
    chart_owned = {"leader_election_namespace", "worker_image", "worker_service_account"}
    differ = {k for k in defaults if from_chart[k] != defaults[k]}
    assert differ == chart_owned
    assert from_chart["leader_election_namespace"] == "zopilot-system"
    assert from_chart["worker_image"] == "zopilot/worker:0.1.0"


def test_settings_from_values_reach_the_operator(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _config_env(render(ci("all-features"))).items():
        monkeypatch.setenv(key, value)
    s = OperatorSettings()
    assert s.prometheus_url == "http://kube-prometheus-stack-prometheus.monitoring:9090"
    assert s.worker_tolerated_taints == ["example.com/dedicated"]
    assert s.dcgm_node_labels == ["nodename", "Hostname"]


def test_a_setting_the_chart_lacks_is_reported(render: Render) -> None:
    # The coverage check above compares against the settings class: a field the
    # values block does not know (here: one removed from the render) is named.
    env = _config_env(render(ci("defaults")))
    env.pop("ZOPILOT_OPERATOR_SAFETY_MARGIN_MIB")
    wanted = {chartgen.env_name(f) for f in OperatorSettings.model_fields}
    assert wanted - set(env) == {"ZOPILOT_OPERATOR_SAFETY_MARGIN_MIB"}


# --------------------------------------------------------- labels/selectors
def _selectors(doc: dict[str, Any]) -> list[dict[str, str]]:
    spec = doc.get("spec") or {}
    found = []
    if isinstance(spec.get("selector"), dict):
        found.append(spec["selector"].get("matchLabels", spec["selector"]))
    if isinstance(spec.get("podSelector"), dict):
        found.append(spec["podSelector"].get("matchLabels", {}))
    return found


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_labels_everywhere_and_chart_label_never_in_a_selector(
    render: Render, values: Path
) -> None:
    docs = render(values)
    for doc in docs:
        labels = doc["metadata"].get("labels") or {}
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        for key in ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of"):
            assert key in labels, f"{where}: no {key}"
        for selector in _selectors(doc):
            assert "helm.sh/chart" not in selector, f"{where}: helm.sh/chart in a selector"
            assert "app.kubernetes.io/version" not in selector, f"{where}: version in a selector"


# ------------------------------------------------------- operator Deployment
def _operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = find(docs, "Deployment", OPERATOR)
    return deployment


def test_operator_defaults_one_replica_recreate_restricted(render: Render) -> None:
    docs = render(ci("defaults"))
    d = _operator(docs)
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"}
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "zopilot/operator:0.1.0"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # Probes on the operator's real endpoints: kopf's /healthz (--liveness) and /metrics.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8000, "health": 8080}
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["startupProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert _config_env(docs)["ZOPILOT_OPERATOR_METRICS_PORT"] == "8000"
    assert not find(docs, "PodDisruptionBudget")


def test_pod_knobs_reach_the_pod(render: Render) -> None:
    pod = _operator(render(ci("all-features")))["spec"]["template"]
    spec = pod["spec"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "node-role.kubernetes.io/control-plane"
    assert "nodeAffinity" in spec["affinity"]
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["metadata"]["annotations"]["example.com/owner"] == "documents"
    assert pod["metadata"]["labels"]["example.com/tier"] == "control"
    (c,) = spec["containers"]
    assert {"name": "EXTRA", "value": "1"} in c["env"]
    assert "--verbose" in c["args"]


def test_a_settings_change_rolls_the_pod(render: Render) -> None:
    def checksum(*sets: str) -> str:
        d = _operator(render(ci("defaults"), set=sets))
        return str(d["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    base = checksum()
    assert checksum() == base
    assert checksum("operator.config.safetyMarginMib=2048") != base
    assert checksum("worker.gpuProduct=NVIDIA H200") != base


def test_ha_two_replicas_with_pdb_and_spread(render: Render) -> None:
    docs = render(ci("ha"))
    d = _operator(docs)
    assert d["spec"]["replicas"] == 2 and d["spec"]["strategy"]["type"] == "RollingUpdate"
    assert d["spec"]["template"]["spec"]["topologySpreadConstraints"]
    (pdb,) = find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]


# ---------------------------------------------------------------------- RBAC
def _rules(doc: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in doc["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


JOB_RULES = {
    ("", "pods"): {"create", "get", "delete", "list", "watch"},
    ("", "configmaps"): {"create", "get", "delete", "list", "watch"},
    ("", "events"): {"create"},
    ("zopilot.dev", "documentjobs"): {"get", "list", "watch"},
    ("zopilot.dev", "documentjobs/status"): {"patch"},
    ("zopilot.dev", "documentjobs/finalizers"): {"update"},
}


def test_rbac_cluster_wide_is_the_explicit_allow_list(render: Render) -> None:
    docs = render(ci("defaults"))
    (cluster_role,) = find(docs, "ClusterRole")
    rules = _rules(cluster_role)
    assert rules == {**JOB_RULES, ("", "nodes"): {"list"}}
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in cluster_role["rules"])
    (leader,) = find(docs, "Role", f"{OPERATOR}-leader-election")
    assert leader["metadata"]["namespace"] == "zopilot-system"
    assert _rules(leader) == {
        ("coordination.k8s.io", "leases"): {"create", "get", "update"},
        ("", "pods"): {"list"},  # the HTTP service's pods (their GPU memory)
    }
    assert find(docs, "ClusterRoleBinding")[0]["subjects"][0]["namespace"] == "zopilot-system"


def test_rbac_namespaced_uses_roles_and_namespace_flags(render: Render) -> None:
    docs = render(ci("namespaced"))
    (cluster_role,) = find(docs, "ClusterRole")
    assert ("", "pods") not in _rules(cluster_role)  # the exporter lookup has its own Role
    assert ("zopilot.dev", "documentjobs") not in _rules(cluster_role)
    assert _rules(cluster_role) == {("", "nodes"): {"list"}}  # kopf scans nothing
    roles = {r["metadata"]["namespace"]: r for r in find(docs, "Role", OPERATOR)}
    assert set(roles) == {"team-a", "team-b"}
    assert all(_rules(r) == JOB_RULES for r in roles.values())
    bindings = find(docs, "RoleBinding", OPERATOR)
    assert {b["metadata"]["namespace"] for b in bindings} == {"team-a", "team-b"}
    (dcgm,) = find(docs, "Role", f"{OPERATOR}-dcgm-pods")
    assert dcgm["metadata"]["namespace"] == "gpu-operator"
    (c,) = _operator(docs)["spec"]["template"]["spec"]["containers"]
    assert [a for a in c["args"] if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    assert yaml.safe_load(_config_env(docs)["ZOPILOT_OPERATOR_WATCH_NAMESPACES"]) == [
        "team-a",
        "team-b",
    ]


def test_namespaced_without_exporter_namespace_lists_pods_cluster_wide(render: Render) -> None:
    docs = render(ci("namespaced"), set=["operator.config.dcgmExporterNamespace="])
    (cluster_role,) = find(docs, "ClusterRole")
    assert _rules(cluster_role)[("", "pods")] == {"list"}
    assert not find(docs, "Role", f"{OPERATOR}-dcgm-pods")
    docs = render(ci("namespaced"), set=["operator.config.dcgmExporterPodSelector="])
    assert ("", "pods") not in _rules(find(docs, "ClusterRole")[0])
    assert not find(docs, "Role", f"{OPERATOR}-dcgm-pods")


# ------------------------------------------------------------------- worker
def test_worker_service_account_per_job_namespace_without_token(render: Render) -> None:
    docs = render(ci("namespaced"))
    accounts = find(docs, "ServiceAccount", "rel-zopilot-worker")
    assert {a["metadata"]["namespace"] for a in accounts} == {
        "zopilot-system",
        "team-a",
        "team-b",
    }
    assert all(a["automountServiceAccountToken"] is False for a in accounts)
    env = _config_env(docs)
    assert env["ZOPILOT_OPERATOR_WORKER_SERVICE_ACCOUNT"] == "rel-zopilot-worker"
    assert env["ZOPILOT_OPERATOR_WORKER_IMAGE"] == "zopilot/worker:0.1.0"


def test_http_service_runs_serve_with_ready_probe_token_and_models(render: Render) -> None:
    docs = render(ci("all-features"))
    (d,) = find(docs, "Deployment", "rel-zopilot-worker")
    pod = d["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["args"] == ["serve"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    token = next(e for e in c["env"] if e["name"] == "ZOPILOT_WORKER_API_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "zopilot-api-token", "key": "token"}
    assert {"name": "ZOPILOT_WORKER_EXTRACT_CONCURRENCY", "value": "4"} in c["env"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True and mounts["models"]["mountPath"] == "/models"
    assert pod["metadata"]["annotations"]["zopilot.dev/required-mib"] == "22000"
    assert pod["spec"]["automountServiceAccountToken"] is False
    (svc,) = find(docs, "Service", "rel-zopilot-worker")
    assert svc["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]


# --------------------------------------------------------------- monitoring
def test_monitoring_objects_with_additional_labels(render: Render) -> None:
    docs = render(ci("all-features"))
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        (obj,) = find(docs, kind)
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
    (sm,) = find(docs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["relabelings"][0]["targetLabel"] == "node"
    (rule,) = find(docs, "PrometheusRule")
    plain = yaml.safe_load((CHART / "rules" / "alerts.yaml").read_text())
    assert rule["spec"] == plain
    dashboards = find(docs, "ConfigMap")
    boards = [d for d in dashboards if d["metadata"].get("labels", {}).get("grafana_dashboard")]
    assert len(boards) == 3 and all(
        b["metadata"]["labels"]["grafana_dashboard"] == "1" for b in boards
    )


def test_monitoring_is_off_by_default(render: Render) -> None:
    docs = render(ci("defaults"))
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "NetworkPolicy"}


def test_network_policies_cover_operator_and_every_job_namespace(render: Render) -> None:
    docs = render(ci("all-features"))
    policies = find(docs, "NetworkPolicy")
    operator = next(p for p in policies if p["metadata"]["name"] == OPERATOR)
    assert operator["spec"]["policyTypes"] == ["Ingress", "Egress"]
    workers = [p for p in policies if p["metadata"]["name"] == "rel-zopilot-worker"]
    assert {p["metadata"]["namespace"] for p in workers} == {"zopilot-system", "docs"}
    for p in workers:
        ports = {port["port"] for rule in p["spec"]["ingress"] for port in rule["ports"]}
        assert 8080 in ports


def test_helm_test_pod_is_a_test_hook(render: Render) -> None:
    (pod,) = find(render(ci("defaults")), "Pod", "rel-zopilot-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
