"""Every PromQL expression of the Grafana dashboard and of the alert rules, ready to evaluate.

``all_promql_expressions()`` returns ``(source, expr)`` pairs with Grafana's template variables
substituted (``$__rate_interval`` -> ``1m``, ``$namespace``/``$job``/``$instance`` -> ``.*``), so a
real Prometheus can evaluate them as they are. Dashboard expressions return data once the bridge
has been scraped a few times (``exercised_metrics()`` creates every series); alert expressions
are conditions and return nothing while the bridge is healthy, so ``alert_input_selectors()``
lists the metrics each alert reads. ``metric_names(expr)`` lists the metric names an expression
selects, ``known_metric_names()`` the names ``BridgeMetrics`` exports and ``exported_labels()``
the label names and values of each (topics are labelled by role: ``TOPIC_ROLES``). Both include
the issue 14 contract metrics (``CONTRACT_METRICS``) while ``BridgeMetrics`` does not export them.

The chart's ``files/`` hold the source of truth (``dashboards/`` and ``alerts/`` are checked
copies). Import from another test folder by path, e.g.::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
    from promql import all_promql_expressions
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from bridge.metrics import BridgeMetrics
from bridge.runtime import COMMANDS_ROLE
from bridge.vocabulary import TOPIC_ROLES as OUTPUT_TOPIC_ROLES

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "norce-order-bridge"
DASHBOARD_FILE = CHART_DIR / "files" / "norce-order-bridge.json"
RULES_FILE = CHART_DIR / "files" / "norce-order-bridge.rules.yaml"
DASHBOARD_COPY = ROOT / "dashboards" / "norce-order-bridge.json"
RULES_COPY = ROOT / "alerts" / "norce-order-bridge.rules.yaml"
RULES_TEST_FILE = ROOT / "alerts" / "norce-order-bridge.rules.test.yaml"

# The values of the `topic` label: the role of a topic, never its configured name.
TOPIC_ROLES: frozenset[str] = frozenset({COMMANDS_ROLE, *OUTPUT_TOPIC_ROLES.values()})

# Issue 14 (contract 3): the metrics of the notification ingress, its relay and RefreshOrder. They
# land in BridgeMetrics from the ingress and refresh branches, merged together with the dashboard
# row and the alerts that read them. While BridgeMetrics exports no family of that name, the
# contract's sample names and labels stand in for it; as soon as it exports the family, only the
# real names and labels count (and test_dashboard.py checks them against the contract), so nothing
# here needs removing after the merge.
NOTIFICATION_OUTCOMES: frozenset[str] = frozenset(
    {
        "accepted",
        "unauthorized",
        "too_large",
        "malformed",
        "invalid",
        "timeout",
        "kafka_unavailable",
    }
)
RELAY_OUTCOMES: frozenset[str] = frozenset({"relayed", "invalid"})
# family name -> (type, label name -> values of the closed label set)
CONTRACT_METRICS: dict[str, tuple[str, dict[str, frozenset[str]]]] = {
    "norce_bridge_notifications_received": ("counter", {"outcome": NOTIFICATION_OUTCOMES}),
    "norce_bridge_notification_ingress_seconds": ("histogram", {}),
    "norce_bridge_notifications_relayed": ("counter", {"outcome": RELAY_OUTCOMES}),
    "norce_bridge_notification_to_snapshot_seconds": ("histogram", {}),
}


def contract_samples(family: str) -> dict[str, dict[str, set[str]]]:
    """Sample name -> label name -> values of one contract family (as prometheus_client names)."""
    kind, labels = CONTRACT_METRICS[family]
    own = {k: set(v) for k, v in labels.items()}
    if kind == "counter":
        return {family: own, f"{family}_total": own}
    buckets = {**own, "le": {"+Inf"}}
    return {
        family: buckets,
        f"{family}_bucket": buckets,
        f"{family}_count": own,
        f"{family}_sum": own,
    }


def pending_contract_families(registry: CollectorRegistry) -> list[str]:
    """Contract families BridgeMetrics does not export (yet) on this registry."""
    exported = {family.name for family in registry.collect()}
    return sorted(set(CONTRACT_METRICS) - exported)


# Grafana's built-in interval variables and the value used when evaluating outside Grafana.
BUILTIN_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}
# Dashboard (query) variables are only used in regex matchers; ".*" also matches a missing label.
VARIABLE_VALUE = ".*"

_VAR_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES_RE = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*$", re.S)
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    }
)


def substitute(expr: str) -> str:
    """Replace Grafana variables by values a plain Prometheus accepts."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return BUILTIN_VARIABLES.get(name, VARIABLE_VALUE)

    return _VAR_RE.sub(repl, expr)


def variables_in(expr: str) -> set[str]:
    """Names of the Grafana variables an expression uses."""
    return {m.group(1) or m.group(2) for m in _VAR_RE.finditer(expr)}


def load_dashboard(path: Path = DASHBOARD_FILE) -> dict[str, Any]:
    """The dashboard JSON."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def load_rules(path: Path = RULES_FILE) -> dict[str, Any]:
    """The Prometheus rule file."""
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def iter_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """All panels, including those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_expressions(dashboard: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(source, raw expr) of every panel target and query variable, variables not substituted."""
    dash = dashboard if dashboard is not None else load_dashboard()
    out: list[tuple[str, str]] = []
    for panel in iter_panels(dash):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                out.append((f"dashboard panel {panel['title']!r} {target['refId']}", expr))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = _LABEL_VALUES_RE.match(query)
        if match:
            selector, label = match.group(1) or "up", match.group(2)
            query = f"group by ({label}) ({selector})"
        out.append((f"dashboard variable {var['name']!r}", query))
    return out


def rule_expressions(rules: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(source, expr) of every alerting/recording rule."""
    data = rules if rules is not None else load_rules()
    out: list[tuple[str, str]] = []
    for group in data["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            out.append((f"alert {name}", rule["expr"].strip()))
    return out


def all_promql_expressions() -> list[tuple[str, str]]:
    """Every dashboard and alert expression, with template variables substituted."""
    return [(src, substitute(expr)) for src, expr in dashboard_expressions()] + [
        (src, substitute(expr)) for src, expr in rule_expressions()
    ]


def alert_input_selectors() -> list[tuple[str, str]]:
    """(source, metric name) of every metric an alert reads.

    Alert expressions are conditions: on a healthy bridge they evaluate without error but return
    nothing. To show an alert would see data, evaluate these selectors instead.
    """
    return [
        (source, name) for source, expr in rule_expressions() for name in sorted(metric_names(expr))
    ]


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (functions, keywords and labels excluded)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text):
        name = match.group(1)
        if name.lower() not in _KEYWORDS:
            names.add(name)
    # `{__name__="x"}` selectors name metrics too.
    names.update(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    return names


def exercised_metrics(registry: CollectorRegistry | None = None) -> BridgeMetrics:
    """A BridgeMetrics on a fresh registry with every method called once (every series exists)."""
    reg = registry if registry is not None else CollectorRegistry()
    m = BridgeMetrics(
        reg, version="0.0.0-test", processing_guarantee="at_least_once", ordering="key"
    )
    m.command_finished("SetOrderState", "applied", 0.05)
    m.e2e_latency(0.2)
    m.command_succeeded_now()
    m.api_request("PUT", "/api/v0/checkout/orders/{order_id}/state", 200, 0.02)
    m.on_request("GET", "/api/v0/checkout/orders/{order_id}", 503, 0.02)
    m.on_retry("/api/v0/checkout/orders/{order_id}", "5xx")
    m.dead_lettered("invalid_json")
    for role in sorted(OUTPUT_TOPIC_ROLES.values()):
        m.published(role)
    m.set_in_flight(1)
    m.set_buffered(2)
    m.set_paused_partitions(0)
    # As the runtime reports them: by the role of the topic, not its name.
    m.set_lag(COMMANDS_ROLE, 0, 3)
    m.set_committed(COMMANDS_ROLE, 0, 10)
    m.set_circuit("closed")
    m.event_loop_lag(0.001)
    m.rebalance()
    m.set_ready(True)
    return m


def known_metric_names() -> set[str]:
    """Every sample and family name the bridge exports (after exercising every method)."""
    reg = CollectorRegistry()
    exercised_metrics(reg)
    names: set[str] = set()
    for family in reg.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    for family_name in pending_contract_families(reg):
        names.update(contract_samples(family_name))
    return names


def pending_metric_names() -> set[str]:
    """Sample names of the contract families BridgeMetrics does not export yet (empty once it does).

    A real bridge has no such series: queries that read them cannot return data before the merge.
    """
    reg = CollectorRegistry()
    exercised_metrics(reg)
    return {name for family in pending_contract_families(reg) for name in contract_samples(family)}


def awaits_contract(expr: str) -> bool:
    """Whether an expression reads issue 14 series BridgeMetrics does not produce yet: a contract
    family it does not export, or ``commands_total`` rows of a command type it does not know
    (``RefreshOrder``). Such queries evaluate but cannot return data before the merge."""
    if metric_names(expr) & pending_metric_names():
        return True
    types = exported_labels()["norce_bridge_commands_total"]["type"]
    return any(t not in types for t in re.findall(r'\btype\s*=\s*"(\w+)"', expr))


def exported_labels() -> dict[str, dict[str, set[str]]]:
    """Sample name -> label name -> values, as the bridge exports them (every method exercised).

    The label names are exact; the values are those the runtime produces for closed label sets
    (e.g. ``topic`` is always one of ``TOPIC_ROLES``).
    """
    reg = CollectorRegistry()
    exercised_metrics(reg)
    out: dict[str, dict[str, set[str]]] = {}
    for family in reg.collect():
        for name in {family.name, *(sample.name for sample in family.samples)}:
            out.setdefault(name, {})
        for sample in family.samples:
            for target in (family.name, sample.name):
                for key, value in sample.labels.items():
                    out[target].setdefault(key, set()).add(value)
    for family_name in pending_contract_families(reg):
        out.update(contract_samples(family_name))
    return out
