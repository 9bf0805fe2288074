"""The PrometheusRule's alerts: promtool unit tests, both outcomes per alert, names from code."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import yaml

from .conftest import CHART, defined_metric_names, metric_names_in, run

RULES = CHART / "rules" / "alerts.yaml"
UNIT_TESTS = Path(__file__).parent / "alerts_test.yaml"
REQUIRED_ALERTS = {
    "ZopilotOperatorDown",
    "ZopilotNoAdmissionLeader",
    "ZopilotAdmissionStalled",
    "ZopilotDCGMMetricsMissing",
    "ZopilotDCGMMetricsStale",
    "ZopilotJobFailureRatioHigh",
    "ZopilotReservationLeak",
    "ZopilotWorker503RatioHigh",
    "ZopilotNeverFitsSubmissions",
}


def _alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rules_check_and_unit_tests_pass(promtool: str) -> None:
    run([promtool, "check", "rules", str(RULES)])
    result = run([promtool, "test", "rules", str(UNIT_TESTS)], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    outcomes: dict[str, set[bool]] = defaultdict(set)
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            outcomes[check["alertname"]].add(bool(check.get("exp_alerts")))
    names = {str(a["alert"]) for a in _alerts()}
    assert names >= REQUIRED_ALERTS
    untested = {n: sorted(outcomes.get(n, set())) for n in names if outcomes[n] != {True, False}}
    assert not untested, f"alerts without both a firing and a quiet test: {untested}"


def test_every_alert_has_summary_description_runbook_and_severity() -> None:
    for alert in _alerts():
        annotations = alert.get("annotations") or {}
        assert isinstance(annotations, dict)
        for key in ("summary", "description", "runbook"):
            assert str(annotations.get(key, "")).strip(), f"{alert['alert']}: no {key}"
        assert (alert.get("labels") or {}).get("severity") in {"critical", "warning", "info"}  # type: ignore[union-attr]


def test_alerts_use_only_metric_names_defined_in_code() -> None:
    known = defined_metric_names()
    for alert in _alerts():
        unknown = metric_names_in(str(alert["expr"])) - known
        assert not unknown, f"{alert['alert']} reads metrics no code defines: {sorted(unknown)}"


def test_metric_name_extraction_sees_through_promql() -> None:
    # The check above is only as good as this: names in, keywords and labels out.
    expr = (
        'sum by (node, gpu) (rate(foo_total{status="503", a=~"x|y"}[5m])) / on() '
        'max(DCGM_FI_DEV_FB_FREE) * 1048576 and absent(up{job="z"})'
    )
    assert metric_names_in(expr) == {"foo_total", "DCGM_FI_DEV_FB_FREE", "up"}
