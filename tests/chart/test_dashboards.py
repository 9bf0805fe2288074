"""Grafana dashboards: generated, parseable queries, units, datasource variable, names from code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import CHART, check_exprs_parse, defined_metric_names, hack_module, metric_names_in

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.stem, panel)
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
    ]


def _exprs() -> dict[str, str]:
    return {
        f"{name}: {panel['title']} {t['refId']}": t["expr"]
        for name, panel in _panels()
        for t in panel["targets"]
    }


def test_dashboards_are_generated_from_the_panel_declarations() -> None:
    assert hack_module("dashboards").main(["--check"]) == 0
    assert [p.stem for p in DASHBOARDS] == ["gpu-memory", "overview", "worker"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_datasource_variable_and_no_hard_coded_uid(path: Path) -> None:
    board = json.loads(path.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    text = path.read_text()
    uids = set(re.findall(r'"uid": "([^"]*)"', text)) - {board["uid"]}
    assert uids == {"${datasource}"}, f"hard-coded datasource uids: {uids}"


def test_every_panel_has_a_unit_a_description_and_queries() -> None:
    for name, panel in _panels():
        where = f"{name}: {panel['title']}"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert panel.get("description"), f"{where}: no description"
        assert panel["targets"], f"{where}: no query"


def test_rates_use_rate_interval_and_counters_are_never_read_raw() -> None:
    for where, expr in _exprs().items():
        for window in re.findall(r"\b(?:rate|irate)\([^\[]*\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", f"{where}: rate over [{window}]"
        for counter in re.findall(r"\b\w+_total\b", expr):
            assert re.search(rf"\b(rate|irate|increase)\(\s*{counter}", expr), (
                f"{where}: counter {counter} outside rate/irate/increase"
            )


def test_every_query_parses(promtool: str, tmp_path: Path) -> None:
    grafana = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m"}
    exprs = {}
    for where, expr in _exprs().items():
        for var, value in grafana.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{where}: unknown variable in {expr}"
        exprs[where] = expr
    check_exprs_parse(promtool, exprs, tmp_path)


def test_queries_use_only_metric_names_defined_in_code() -> None:
    known = defined_metric_names()
    for where, expr in _exprs().items():
        unknown = metric_names_in(expr) - known
        assert not unknown, f"{where} reads metrics no code defines: {sorted(unknown)}"
