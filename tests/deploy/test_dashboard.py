"""The Grafana dashboard: structure, PromQL validity and metric names, one source of truth."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helmtools import find_tool, run
from prometheus_client import CollectorRegistry
from promql import (
    CONTRACT_METRICS,
    DASHBOARD_COPY,
    DASHBOARD_FILE,
    all_promql_expressions,
    dashboard_expressions,
    exercised_metrics,
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
        (r"Notification deliveries", "norce_bridge_notifications_received_total"),
        (r"Notification auth failures", 'outcome="unauthorized"'),
        (r"Notification Kafka write failures", 'outcome="kafka_unavailable"'),
        (
            r"Notification ingress latency p50 / p99",
            "norce_bridge_notification_ingress_seconds_bucket",
        ),
        (
            r"Notification → snapshot latency",
            "norce_bridge_notification_to_snapshot_seconds_bucket",
        ),
        (r"Notification relay", "norce_bridge_notifications_relayed_total"),
        (
            r"Refresh commands by outcome",
            'instance=~"$instance", type="RefreshOrder"}[$__rate_interval]',
        ),
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


def test_notification_row_is_collapsed_and_holds_every_notification_panel() -> None:
    """The notification ingress is optional: its panels sit in one collapsed row, below the rest,
    and every contract metric of issue 14 is shown there."""
    dash = load_dashboard()
    (row,) = [p for p in dash["panels"] if p["type"] == "row" and "Notification" in p["title"]]
    assert row["title"] == "Notification ingress"
    assert row["collapsed"] is True
    assert row is dash["panels"][-1]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"] if p is not row)
    assert row["gridPos"]["y"] >= bottom
    exprs = " ".join(t["expr"] for p in row["panels"] for t in p["targets"])
    for family in CONTRACT_METRICS:
        assert family in exprs, f"no panel of the notification row reads {family}"
    for panel in row["panels"]:
        assert panel["gridPos"]["y"] > row["gridPos"]["y"]


def test_contract_metrics_match_what_the_bridge_exports() -> None:
    """Issue 14's metrics, once BridgeMetrics exports them, have the contract's type, labels and
    outcome values (until then the dashboard and alerts are checked against the contract)."""
    reg = CollectorRegistry()
    exercised_metrics(reg)
    families = {f.name: f for f in reg.collect()}
    for name, (kind, labels) in CONTRACT_METRICS.items():
        family = families.get(name)
        if family is None:
            print(f"{name}: not exported yet, checked against the issue 14 contract")
            continue
        assert family.type == kind, f"{name} is a {family.type}, the contract says {kind}"
        seen: dict[str, set[str]] = {}
        for sample in family.samples:
            for key, value in sample.labels.items():
                seen.setdefault(key, set()).add(value)
        seen.pop("le", None)
        assert set(seen) == set(labels), f"{name} labels {sorted(seen)}, contract {sorted(labels)}"
        for key, values in labels.items():
            assert seen[key] >= values, f"{name}{{{key}}} lacks {sorted(values - seen[key])}"
