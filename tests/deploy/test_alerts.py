"""Alert rules: promtool check/test, annotations, known metric names, one source of truth."""

from __future__ import annotations

import yaml
from helmtools import find_tool, run
from promql import (
    RULES_COPY,
    RULES_FILE,
    RULES_TEST_FILE,
    known_metric_names,
    load_rules,
    metric_names,
    rule_expressions,
)

REQUIRED_ALERTS = {
    "NorceBridgeConsumerLagGrowing",
    "NorceBridgeNoProgress",
    "NorceBridgeDeadLetters",
    "NorceBridgeApiErrorRate",
    "NorceBridgeCircuitOpen",
    "NorceBridgeFrequentRestarts",
}


def alerts() -> list[dict[str, object]]:
    """Every alerting rule of the rules file."""
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


def test_alerts_copy_is_identical_to_the_chart_file():
    """alerts/ holds a byte-identical copy of the chart's rules (the chart's file is the source)."""
    assert RULES_COPY.read_bytes() == RULES_FILE.read_bytes(), f"run: cp {RULES_FILE} {RULES_COPY}"


def test_promtool_check_rules():
    """promtool check rules accepts the rule file."""
    proc = run([find_tool("promtool"), "check", "rules", str(RULES_COPY)])
    assert "SUCCESS" in proc.stdout


def test_promtool_test_rules():
    """promtool's unit tests of the alerts pass."""
    proc = run([find_tool("promtool"), "test", "rules", str(RULES_TEST_FILE)])
    assert "SUCCESS" in proc.stdout


def test_required_alerts_exist():
    """Lag growing, no progress, dead letters, API errors, circuit open and restarts are covered."""
    assert {a["alert"] for a in alerts()} >= REQUIRED_ALERTS


def test_every_alert_says_what_is_wrong_and_what_to_do():
    """Every alert has a severity and summary/description/runbook annotations."""
    for alert in alerts():
        labels = alert["labels"]
        annotations = alert["annotations"]
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        assert labels["severity"] in {"warning", "critical"}, alert["alert"]
        for key in ("summary", "description", "runbook"):
            assert len(str(annotations.get(key, ""))) > 20, f"{alert['alert']} lacks {key}"


def test_every_alert_has_firing_and_quiet_unit_tests():
    """The promtool tests make each alert fire in one case and stay quiet in another."""
    doc = yaml.safe_load(RULES_TEST_FILE.read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {str(a["alert"]) for a in alerts()}
    assert names <= fires, f"no firing test for {names - fires}"
    assert names <= quiet, f"no quiet test for {names - quiet}"


def test_alert_expressions_use_only_exported_metrics():
    """Every metric an alert selects is exported by BridgeMetrics."""
    known = known_metric_names()
    for source, expr in rule_expressions():
        unknown = metric_names(expr) - known
        assert not unknown, f"{source} references unknown metrics {sorted(unknown)}"
