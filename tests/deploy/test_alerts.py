"""Alert rules: promtool check/test, annotations, known metric names, one source of truth."""

from __future__ import annotations

import re

import yaml
from helmtools import CHART_DIR, find_tool, run
from promql import (
    ROOT,
    RULES_COPY,
    RULES_FILE,
    RULES_TEST_FILE,
    TOPIC_ROLES,
    exported_labels,
    known_metric_names,
    load_rules,
    metric_names,
    rule_expressions,
)

RUNBOOK = ROOT / "docs" / "runbook.md"
# Labels Prometheus adds to every scraped series (the target's), not exported by the bridge.
TARGET_LABELS = {"namespace", "job", "instance", "pod", "container", "service", "endpoint"}
REQUIRED_ALERTS = {
    "NorceBridgeAbsent",
    "NorceBridgeDown",
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


def test_alerts_copy_is_identical_to_the_chart_file() -> None:
    """alerts/ holds a byte-identical copy of the chart's rules (the chart's file is the source)."""
    assert RULES_COPY.read_bytes() == RULES_FILE.read_bytes(), f"run: cp {RULES_FILE} {RULES_COPY}"


def test_promtool_check_rules() -> None:
    """promtool check rules accepts the rule file."""
    proc = run([find_tool("promtool"), "check", "rules", str(RULES_COPY)])
    assert "SUCCESS" in proc.stdout


def test_promtool_test_rules() -> None:
    """promtool's unit tests of the alerts pass."""
    proc = run([find_tool("promtool"), "test", "rules", str(RULES_TEST_FILE)])
    assert "SUCCESS" in proc.stdout


def test_required_alerts_exist() -> None:
    """Lag growing, no progress, dead letters, API errors, circuit open and restarts are covered."""
    assert {a["alert"] for a in alerts()} >= REQUIRED_ALERTS


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings (lower case, spaces to dashes, no punctuation)."""
    anchors = set()
    for line in RUNBOOK.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_alert_says_what_is_wrong_and_links_its_runbook() -> None:
    """Every alert has a severity, a summary, a description and a runbook_url that points at its
    own section of docs/runbook.md in the repository (Chart.yaml's home)."""
    home = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["home"]
    base = f"{home}/blob/main/docs/runbook.md#"
    anchors = runbook_anchors()
    for alert in alerts():
        name = str(alert["alert"])
        labels = alert["labels"]
        annotations = alert["annotations"]
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        assert labels["severity"] in {"warning", "critical"}, name
        for key in ("summary", "description"):
            assert len(str(annotations.get(key, ""))) > 20, f"{name} lacks {key}"
        assert "runbook" not in annotations, f"{name}: the runbook lives in docs/runbook.md"
        url = str(annotations["runbook_url"])
        assert url == base + name.lower(), f"{name}: runbook_url {url}"
        assert name.lower() in anchors, f"docs/runbook.md has no section '## {name}'"


def test_runbook_sections_explain_meaning_checks_and_fix() -> None:
    """Each alert's runbook section says what it means, what to check first and how to fix it."""
    text = RUNBOOK.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    for alert in alerts():
        body = sections.get(str(alert["alert"]), "")
        for part in ("**Meaning.**", "**Fix.**"):
            assert part in body, f"runbook section {alert['alert']} lacks {part}"
        assert "**First checks.**" in body or "check" in body.lower(), alert["alert"]


def test_ratio_alerts_have_a_minimum_traffic_guard() -> None:
    """An alert on a ratio of rates also needs a minimum volume, so a few calls cannot fire it."""
    ratio_alerts = 0
    for alert in alerts():
        expr = str(alert["expr"])
        if not re.search(r"rate\([^)]*\)\)?\s*/", expr):
            continue
        ratio_alerts += 1
        assert re.search(r"\band\b[^/]*(increase|rate)\([^)]*\)\)\s*>=?\s*\d", expr), (
            f"{alert['alert']} has no minimum-traffic clause"
        )
    assert ratio_alerts >= 1


def test_down_and_absent_alerts_watch_up_of_the_bridge_job() -> None:
    """Bridge down / not scraped are caught from Prometheus' own `up`, which exists without the
    bridge's metrics."""
    exprs = {str(a["alert"]): " ".join(str(a["expr"]).split()) for a in alerts()}
    assert exprs["NorceBridgeAbsent"] == 'absent(up{job="norce-order-bridge"})'
    assert 'up{job="norce-order-bridge"}) == 0' in exprs["NorceBridgeDown"]


def parse_series(series: str) -> tuple[str, dict[str, str]]:
    """Metric name and labels of a promtool input series ('name{a="b", c="d"}')."""
    match = re.fullmatch(r"\s*([a-zA-Z_:][\w:]*)\s*(?:\{(.*)\})?\s*", series, flags=re.S)
    assert match, series
    labels = dict(re.findall(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"', match.group(2) or ""))
    return match.group(1), labels


def test_alert_unit_tests_feed_the_labels_the_bridge_exports() -> None:
    """The promtool inputs use the bridge's own metric names, label names and topic roles, so a
    passing unit test means the alert fires on real data."""
    doc = yaml.safe_load(RULES_TEST_FILE.read_text())
    labels_of = exported_labels()
    seen_topics: set[str] = set()
    for test in doc["tests"]:
        for item in test["input_series"]:
            name, labels = parse_series(item["series"])
            if name == "up":
                continue
            assert name in labels_of, f"{test['name']}: {name} is not exported by the bridge"
            own = set(labels) - TARGET_LABELS
            unknown = own - set(labels_of[name])
            assert not unknown, f"{test['name']}: {name} has no labels {sorted(unknown)}"
            if "topic" in labels:
                assert labels["topic"] in TOPIC_ROLES, (
                    f"{test['name']}: topic={labels['topic']!r} is a topic name; the bridge "
                    f"labels topics by role {sorted(TOPIC_ROLES)}"
                )
                seen_topics.add(labels["topic"])
    assert seen_topics == {"commands"}


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
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


def test_alert_expressions_use_only_exported_metrics() -> None:
    """Every metric an alert selects is exported by BridgeMetrics (or is Prometheus' own `up`)."""
    known = known_metric_names() | {"up"}
    for source, expr in rule_expressions():
        unknown = metric_names(expr) - known
        assert not unknown, f"{source} references unknown metrics {sorted(unknown)}"
