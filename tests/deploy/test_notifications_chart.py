"""The chart's notification ingress: port, own Service, Ingress, secrets, NetworkPolicy, guards.

The rendered objects are also validated against the Kubernetes schemas with every ci values file
(test_helm_chart.py): ci/all-features-values.yaml has the ingress behind an Ingress with TLS and
both authentications from the chart's Secret, ci/notifications-values.yaml a LoadBalancer with a
path token from an existing Secret.
"""

from __future__ import annotations

from typing import Any

import pytest
from helmtools import CHART_DIR, MINIMAL_VALUES, NAMESPACE, by_kind, one, render, render_fails
from test_manifests import (
    FULLNAME,
    container,
    metrics_service,
    pod_labels,
    pod_spec,
    settings,
    subset,
)

ALL_FEATURES = CHART_DIR / "ci" / "all-features-values.yaml"
LOAD_BALANCER = CHART_DIR / "ci" / "notifications-values.yaml"
SERVICE = f"{FULLNAME}-notifications"
SECRET_DIR = "/var/run/secrets/notifications"
# On top of the minimal values (which name an existing Secret): the ingress on, default auth.
ENABLED = ("ingress.notifications.enabled=true",)
# A chart-managed Secret instead of the existing one.
CHART_SECRET = ("secrets.existingSecret=", "secrets.norceApiKey=k")


Docs = tuple[dict[str, Any], ...]


def notifications_service(docs: Docs) -> dict[str, Any]:
    """The notifications Service."""
    (service,) = [d for d in by_kind(docs, "Service") if d["metadata"]["name"] == SERVICE]
    return service


def volume_items(docs: Docs, name: str) -> dict[str, str]:
    """Secret key -> file name of one secret volume of the pod."""
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    return {item["key"]: item["path"] for item in volumes[name]["secret"]["items"]}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes LabelSelector (matchLabels and matchExpressions) selects labels."""
    if not subset(selector.get("matchLabels", {}), labels):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def test_ingress_is_off_by_default() -> None:
    """Without ingress.notifications.enabled: no port, Service, Ingress, secret or ingress setting;
    the topic names are passed all the same (the order-state store is used by every command)."""
    docs = render((MINIMAL_VALUES,))
    assert [p["name"] for p in container(docs)["ports"]] == ["http"]
    assert [s["metadata"]["name"] for s in by_kind(docs, "Service")] == [FULLNAME]
    assert not by_kind(docs, "Ingress")
    env = settings(docs)
    assert not [k for k in env if k.startswith("BRIDGE_INGRESS__")]
    assert env["BRIDGE_TOPICS__NOTIFICATIONS"] == "norce.order.notifications"
    assert env["BRIDGE_TOPICS__ORDER_STATE"] == "norce.order.bridge-state"
    assert "notification-auth" not in {v["name"] for v in pod_spec(docs)["volumes"]}


def test_enabled_ingress_gets_its_port_settings_and_secret_files() -> None:
    """The container port `notifications`, BRIDGE_INGRESS__* and both secret files from the
    chart's Secret; no probe on the ingress port."""
    docs = render((ALL_FEATURES,))
    c = container(docs)
    assert c["ports"][1] == {"name": "notifications", "containerPort": 8081, "protocol": "TCP"}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] == "http"
    env = settings(docs)
    assert subset(
        {
            "BRIDGE_INGRESS__ENABLED": "true",
            "BRIDGE_INGRESS__PORT": "8081",
            "BRIDGE_INGRESS__MAX_BODY_BYTES": "262144",
            "BRIDGE_INGRESS__BODY_TIMEOUT_S": "5",
            "BRIDGE_INGRESS__ACK_TIMEOUT_S": "8",
            "BRIDGE_INGRESS__RETRY_AFTER_S": "10",
            "BRIDGE_INGRESS__MAX_CONNECTIONS": "512",
            "BRIDGE_INGRESS__SECRET_HEADER": "X-Acme-Webhook-Secret",
            "BRIDGE_INGRESS__RELAY": "true",
            "BRIDGE_INGRESS__SECRET_FILE": f"{SECRET_DIR}/secret",
            "BRIDGE_INGRESS__PATH_TOKEN_FILE": f"{SECRET_DIR}/path-token",
            "BRIDGE_TOPICS__NOTIFICATIONS": "norce.order.notifications",
        },
        env,
    )
    secret = next(d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == FULLNAME)
    assert {"notification-secret", "notification-path-token"} <= set(secret["data"])
    assert volume_items(docs, "notification-auth") == {
        "notification-secret": "secret",
        "notification-path-token": "path-token",
    }
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["notification-auth"]["secret"]["secretName"] == FULLNAME


def test_unset_options_are_left_to_the_bridge() -> None:
    """Only ENABLED, PORT and the secret file are rendered by default: the bridge's defaults
    apply to the rest; relay=false is passed (not dropped as empty)."""
    env = settings(render((), ENABLED))
    assert {k for k in env if k.startswith("BRIDGE_INGRESS__")} == {
        "BRIDGE_INGRESS__ENABLED",
        "BRIDGE_INGRESS__PORT",
        "BRIDGE_INGRESS__SECRET_FILE",
    }
    env = settings(render((), (*ENABLED, "ingress.notifications.relay=false")))
    assert env["BRIDGE_INGRESS__RELAY"] == "false"


def test_existing_secret_with_a_path_token_only() -> None:
    """From an existing Secret under a custom key, only the path token is mounted and passed."""
    docs = render((LOAD_BALANCER,))
    assert not by_kind(docs, "Secret")
    env = settings(docs)
    assert env["BRIDGE_INGRESS__PATH_TOKEN_FILE"] == f"{SECRET_DIR}/path-token"
    assert "BRIDGE_INGRESS__SECRET_FILE" not in env
    assert env["BRIDGE_INGRESS__PORT"] == "9443"
    assert env["BRIDGE_TOPICS__NOTIFICATIONS"] == "acme.order.notifications"
    assert env["BRIDGE_TOPICS__ORDER_STATE"] == "acme.order.bridge-state"
    assert volume_items(docs, "notification-auth") == {"webhook-token": "path-token"}
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["notification-auth"]["secret"]["secretName"] == "norce-order-bridge-credentials"
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert ports == {"http": 8000, "notifications": 9443}


def test_existing_secret_with_the_default_shared_secret() -> None:
    """Enabling the ingress on an existing Secret mounts its `notification-secret` key."""
    docs = render((), ENABLED)
    env = settings(docs)
    assert env["BRIDGE_INGRESS__SECRET_FILE"] == f"{SECRET_DIR}/secret"
    assert "BRIDGE_INGRESS__PATH_TOKEN_FILE" not in env
    assert volume_items(docs, "notification-auth") == {"notification-secret": "secret"}


def test_notifications_service_exposes_only_the_ingress_port() -> None:
    """A Service of its own selects the bridge's pods and targets only the `notifications` port;
    the metrics Service is unchanged."""
    docs = render((ALL_FEATURES,))
    service = notifications_service(docs)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "notifications", "port": 8081, "targetPort": "notifications", "protocol": "TCP"}
    ]
    assert subset(service["spec"]["selector"], pod_labels(docs))
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "notifications"
    assert [p["targetPort"] for p in metrics_service(docs)["spec"]["ports"]] == ["http"]
    assert "loadBalancerSourceRanges" not in service["spec"]


def test_load_balancer_service_with_source_ranges() -> None:
    """ci/notifications-values.yaml: a LoadBalancer on 443 to the container's 9443, limited to
    Norce's range, with the load balancer's annotations; the metrics Service stays ClusterIP."""
    docs = render((LOAD_BALANCER,))
    service = notifications_service(docs)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"][0]["port"] == 443
    assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert (
        "service.beta.kubernetes.io/aws-load-balancer-ssl-cert"
        in (service["metadata"]["annotations"])
    )
    assert metrics_service(docs)["spec"]["type"] == "ClusterIP"
    assert not by_kind(docs, "Ingress")


def test_service_monitor_scrapes_the_metrics_service_only() -> None:
    """The ServiceMonitor's selector matches the metrics Service, not the notifications one."""
    docs = render((ALL_FEATURES,))
    selector = one(docs, "ServiceMonitor")["spec"]["selector"]
    assert selects(selector, metrics_service(docs)["metadata"]["labels"])
    assert not selects(selector, notifications_service(docs)["metadata"]["labels"])


def test_ingress_routes_only_notifications_with_tls() -> None:
    """The Ingress has the class, annotations and TLS of the values and routes only the path
    /notifications (Prefix, so /notifications/<token> too) to the notifications Service."""
    docs = render((ALL_FEATURES,))
    ingress = one(docs, "Ingress")
    assert ingress["metadata"]["name"] == SERVICE
    assert ingress["metadata"]["namespace"] == NAMESPACE
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert spec["tls"] == [{"secretName": "hooks-acme-tls", "hosts": ["hooks.acme.example.com"]}]
    assert [r["host"] for r in spec["rules"]] == ["hooks.acme.example.com"]
    for rule in spec["rules"]:
        assert rule["http"]["paths"] == [
            {
                "path": "/notifications",
                "pathType": "Prefix",
                "backend": {"service": {"name": SERVICE, "port": {"number": 8081}}},
            }
        ]


def test_ingress_without_class_or_tls_and_several_hosts() -> None:
    """className and tls are optional; every host gets the same single path."""
    docs = render(
        (),
        (
            *ENABLED,
            "ingress.notifications.kubernetesIngress.enabled=true",
            "ingress.notifications.kubernetesIngress.hosts={a.example.com,b.example.com}",
        ),
    )
    spec = one(docs, "Ingress")["spec"]
    assert "ingressClassName" not in spec
    assert "tls" not in spec
    assert [r["host"] for r in spec["rules"]] == ["a.example.com", "b.example.com"]
    assert {p["path"] for r in spec["rules"] for p in r["http"]["paths"]} == {"/notifications"}


def test_network_policy_admits_the_ingress_port_from_its_peers_only() -> None:
    """The ingress port admits the configured peers (the ingress controller's pods; an ipBlock),
    separately from the metrics port's peers; disabled ingress, no rule."""
    np = one(render((ALL_FEATURES,)), "NetworkPolicy", hook=False)
    metrics, notifications = np["spec"]["ingress"]
    assert notifications["ports"] == [{"port": "notifications", "protocol": "TCP"}]
    assert notifications["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
        }
    ]
    assert metrics["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    np = one(render((LOAD_BALANCER,)), "NetworkPolicy", hook=False)
    assert np["spec"]["ingress"][1]["from"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    # Without peers the port is open to any source (as the metrics port), with the ingress off
    # there is no rule for it.
    open_np = one(render((), (*ENABLED, "networkPolicy.enabled=true")), "NetworkPolicy", hook=False)
    assert "from" not in open_np["spec"]["ingress"][1]
    off = one(render((), ("networkPolicy.enabled=true",)), "NetworkPolicy", hook=False)
    assert len(off["spec"]["ingress"]) == 1


def test_secret_checksum_rolls_pods_on_webhook_secret_rotation() -> None:
    """A new chart-managed webhook secret rolls the pods (the bridge reads it at startup)."""

    def checksum(*sets: str) -> str:
        deployment = one(render((ALL_FEATURES,), sets), "Deployment")
        value: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
        return value

    assert checksum() != checksum("secrets.notificationSecret=rotated")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            [*ENABLED, "ingress.notifications.auth.sharedSecret=false"],
            "ingress.notifications.enabled needs authentication",
        ),
        (
            [*ENABLED, *CHART_SECRET],
            "ingress.notifications.auth.sharedSecret needs the webhook secret",
        ),
        (
            [
                *ENABLED,
                *CHART_SECRET,
                "secrets.notificationSecret=s",
                "ingress.notifications.auth.pathToken=true",
            ],
            "ingress.notifications.auth.pathToken needs the path token",
        ),
        (
            [*CHART_SECRET, "secrets.notificationSecret=s"],
            "secrets.notificationSecret is set but unused",
        ),
        (
            [
                *ENABLED,
                *CHART_SECRET,
                "secrets.notificationSecret=s",
                "secrets.notificationPathToken=t",
            ],
            "secrets.notificationPathToken is set but unused",
        ),
        (
            [*ENABLED, "secrets.notificationSecret=s"],
            "are ignored when secrets.existingSecret is set",
        ),
        (
            [*ENABLED, "ingress.notifications.port=8000"],
            "ingress.notifications.port (8000) must differ from containerPort (8000)",
        ),
        (
            [
                "ingress.notifications.kubernetesIngress.enabled=true",
                "ingress.notifications.kubernetesIngress.hosts={a.example.com}",
            ],
            "kubernetesIngress.enabled needs ingress.notifications.enabled=true",
        ),
        (
            [*ENABLED, "ingress.notifications.kubernetesIngress.enabled=true"],
            "ingress.notifications.kubernetesIngress.hosts is empty",
        ),
    ],
)
def test_template_rejects_inconsistent_ingress_values(sets: list[str], message: str) -> None:
    """An unauthenticated webhook, a missing or unused credential, a port clash and an Ingress
    without the ingress or hosts fail the install with a message naming the values."""
    assert message in render_fails(sets)


@pytest.mark.parametrize(
    "sets",
    [
        [*ENABLED],
        [*ENABLED, "ingress.notifications.auth.pathToken=true"],
        [
            *ENABLED,
            *CHART_SECRET,
            "ingress.notifications.auth.sharedSecret=false",
            "ingress.notifications.auth.pathToken=true",
            "secrets.notificationPathToken=t",
        ],
        [*ENABLED, *CHART_SECRET, "secrets.notificationSecret=s"],
        [*ENABLED, "ingress.notifications.port=8000", "containerPort=9000"],
    ],
)
def test_template_accepts_consistent_ingress_values(sets: list[str]) -> None:
    """The close neighbours of the rejected values render."""
    assert notifications_service(render((), tuple(sets)))


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["ingress.notifications.enabled=yes"], "enabled"),
        (["ingress.notifications.port=0"], "port"),
        (["ingress.notifications.service.type=ExternalName"], "type"),
        (["ingress.notifications.service.port=70000"], "port"),
        (["ingress.notifications.service.loadBalancerSourceRanges={10.0.0.1}"], "loadBalancer"),
        (["ingress.notifications.auth.header=X Secret"], "header"),
        (["ingress.notifications.bodyTimeoutSeconds=0"], "bodyTimeoutSeconds"),
        (["ingress.notifications.maxBodyBytes=1023"], "maxBodyBytes"),
        (["ingress.notifications.maxBodyBytes=16777217"], "maxBodyBytes"),
        (["ingress.notifications.ackTimeoutSeconds=301"], "ackTimeoutSeconds"),
        (["ingress.notifications.retryAfterSeconds=0"], "retryAfterSeconds"),
        (["ingress.notifications.maxConnections=0"], "maxConnections"),
        (["ingress.notifications.relay=sometimes"], "relay"),
        (["ingress.notifications.kubernetesIngress.hosts={https://hooks.example.com}"], "hosts"),
        (["ingress.notifications.kubernetesIngress.path=/"], "path"),
        (["ingress.notifications.unknown=1"], "unknown"),
        (["config.topics.notifications=bad topic"], "notifications"),
        (["config.topics.orderState="], "orderState"),
        (["extraEnv[0].name=BRIDGE_INGRESS__SECRET", "extraEnv[0].value=x"], "extraEnv"),
        (["extraEnv[0].name=bridge_ingress__path_token", "extraEnv[0].value=x"], "extraEnv"),
    ],
)
def test_schema_rejects_invalid_ingress_values(sets: list[str], message: str) -> None:
    """values.schema.json rejects wrong ingress values at install time."""
    err = render_fails(sets)
    assert "values don't meet the specifications of the schema" in err or "extraEnv" in err
    assert message in err
