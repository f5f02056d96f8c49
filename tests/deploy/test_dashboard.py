"""The Grafana dashboard: structure, PromQL validity and metric names, one source of truth."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helmtools import find_tool, run
from promql import (
    DASHBOARD_COPY,
    DASHBOARD_FILE,
    all_promql_expressions,
    dashboard_expressions,
    iter_panels,
    known_metric_names,
    load_dashboard,
    metric_names,
    substitute,
    variables_in,
)


def test_dashboard_copy_is_identical_to_the_chart_file() -> None:
    """dashboards/ holds a byte-identical copy of the chart's dashboard (the source of truth)."""
    assert DASHBOARD_COPY.read_bytes() == DASHBOARD_FILE.read_bytes(), (
        f"run: cp {DASHBOARD_FILE} {DASHBOARD_COPY}"
    )


def test_dashboard_metadata() -> None:
    """A current schema, a stable uid and a Prometheus datasource variable."""
    dash = load_dashboard()
    assert dash["schemaVersion"] >= 39
    assert dash["uid"] == "norce-order-bridge"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["includeAll"] is True
        assert variables[name]["allValue"] == ".*"


def test_panels_use_the_datasource_variable_and_fit_the_grid() -> None:
    """Every panel queries ${datasource}, ids are unique and panels fit 24 columns."""
    panels = iter_panels(load_dashboard())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize(
    ("title_pattern", "metric"),
    [
        (r"by outcome", "norce_bridge_commands_total"),
        (r"API latency p50 / p99", "norce_bridge_api_request_duration_seconds_bucket"),
        (r"API error rate", "norce_bridge_api_requests_total"),
        (r"Consumer lag per partition", "norce_bridge_consumer_lag"),
        (r"Dead letters by reason", "norce_bridge_dead_letters_total"),
        (r"In-flight commands", "norce_bridge_in_flight_commands"),
        (r"Circuit", "norce_bridge_circuit_state"),
        (r"Event-loop lag", "norce_bridge_event_loop_lag_seconds"),
        (r"Version and mode", "norce_bridge_build_info"),
        (r"Buffered records and paused partitions", "norce_bridge_paused_partitions"),
        (r"End-to-end latency", "norce_bridge_command_e2e_latency_seconds_bucket"),
    ],
)
def test_required_panels_exist(title_pattern: str, metric: str) -> None:
    """The dashboard shows each required view, backed by the right metric."""
    matching = [
        p
        for p in iter_panels(load_dashboard())
        if re.search(title_pattern, p["title"]) and p["type"] != "row"
    ]
    assert matching, f"no panel titled like {title_pattern!r}"
    exprs = " ".join(t["expr"] for p in matching for t in p["targets"])
    assert metric in exprs


def test_dashboard_expressions_use_only_exported_metrics() -> None:
    """Every metric a panel or variable selects is exported by BridgeMetrics."""
    known = known_metric_names()
    exprs = dashboard_expressions()
    assert len(exprs) > 20
    for source, expr in exprs:
        names = metric_names(substitute(expr))
        assert names, f"{source} selects no metric"
        unknown = names - known
        assert not unknown, f"{source} references unknown metrics {sorted(unknown)}"


def test_metric_name_check_catches_unknown_names() -> None:
    """The metric-name extraction finds a misspelt metric (guards the test above)."""
    expr = 'sum by (outcome) (rate(norce_bridge_comands_total{job=~".*", outcome="x"}[1m]))'
    assert metric_names(expr) == {"norce_bridge_comands_total"}
    assert "norce_bridge_comands_total" not in known_metric_names()


def test_template_variables_are_only_used_in_regex_matchers() -> None:
    """$namespace/$job/$instance appear only as =~ values, so substituting .* is faithful."""
    for source, expr in dashboard_expressions():
        for var in variables_in(expr) - {"__rate_interval", "__interval", "__range"}:
            uses = re.findall(rf'(\w+)\s*(=~|!~|=|!=)\s*"\$\{{?{var}\}}?"', expr)
            total = len(re.findall(rf"\$\{{?{var}\b", expr))
            assert len(uses) == total, f"{source}: ${var} used outside a matcher"
            assert all(op == "=~" for _, op in uses), f"{source}: ${var} needs =~"


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    """Prometheus's parser (promtool check rules) accepts every dashboard and alert expression."""
    exprs = all_promql_expressions()
    rules = [{"record": f"check:expr_{i}", "expr": expr} for i, (_, expr) in enumerate(exprs)]
    path = tmp_path / "exprs.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = run([find_tool("promtool"), "check", "rules", str(path)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout
