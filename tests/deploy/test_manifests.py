"""Tests on rendered manifests: probes, security, selectors, secrets, autoscaling, monitoring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helmtools import (
    CHART_DIR,
    CI_VALUES,
    MINIMAL_VALUES,
    NAMESPACE,
    RELEASE,
    by_kind,
    one,
    render,
    values_id,
)
from promql import TOPIC_ROLES, exported_labels, known_metric_names

VALUES_CASES = CI_VALUES
FULLNAME = f"{RELEASE}-norce-order-bridge"
FAKE_SECRETS = (
    "ci-fake-norce-api-key",
    "ci-fake-sasl-password",
    "ci-fake-notification-secret",
    "ci-fake-notification-path-token",
)


# The bridge's settings (bridge/config.py); a typo in the chart would make the bridge fail to
# start or silently ignore a setting.
def _setting_names() -> set[str]:
    """Every BRIDGE_* variable the settings model reads, derived from the model itself."""
    from pydantic import BaseModel

    from bridge.config import BridgeSettings

    names: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name.upper()}__")
            else:
                names.add(f"{prefix}{name.upper()}")

    walk(BridgeSettings, "BRIDGE_")
    return names


# Issue 14 (contract 2): the notification ingress's settings and the order-state topic land in
# bridge/config.py from the ingress and refresh branches, merged together with this chart. While the
# settings model lacks a feature entirely (its marker setting), the contract's names stand in for
# it; once the model has the feature, every name the chart renders is checked against the model.
CONTRACT_SETTINGS: dict[str, frozenset[str]] = {
    "BRIDGE_INGRESS__ENABLED": frozenset(
        {
            "BRIDGE_INGRESS__ENABLED",
            "BRIDGE_INGRESS__PORT",
            "BRIDGE_INGRESS__SECRET_FILE",
            "BRIDGE_INGRESS__SECRET_HEADER",
            "BRIDGE_INGRESS__PATH_TOKEN_FILE",
            "BRIDGE_INGRESS__MAX_BODY_BYTES",
            "BRIDGE_INGRESS__BODY_TIMEOUT_S",
            "BRIDGE_INGRESS__ACK_TIMEOUT_S",
            "BRIDGE_INGRESS__RELAY",
            "BRIDGE_INGRESS__RETRY_AFTER_S",
            "BRIDGE_INGRESS__MAX_CONNECTIONS",
            "BRIDGE_TOPICS__NOTIFICATIONS",
        }
    ),
    "BRIDGE_TOPICS__ORDER_STATE": frozenset({"BRIDGE_TOPICS__ORDER_STATE"}),
}


def _accepted_settings() -> set[str]:
    """The model's settings plus the contract's names of features the model does not have yet."""
    names = _setting_names()
    for marker, contract in CONTRACT_SETTINGS.items():
        if marker not in names:
            names |= contract
    return names


KNOWN_SETTINGS = _accepted_settings()


def docs_for(values: Path) -> tuple[dict[str, Any], ...]:
    """Rendered manifests of one values case."""
    return render((values,))


def container(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The bridge container."""
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["bridge"]
    bridge_container: dict[str, Any] = containers[0]
    return bridge_container


def pod_spec(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The pod spec of the Deployment."""
    spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def pod_labels(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """Labels of the Deployment's pods."""
    labels: dict[str, str] = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def config_data(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The bridge's ConfigMap data."""
    cms = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == FULLNAME]
    assert len(cms) == 1
    data: dict[str, str] = cms[0]["data"]
    return data


def settings(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """Every BRIDGE_* variable the container gets (ConfigMap plus explicit env)."""
    c = container(docs)
    assert c["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]
    env = dict(config_data(docs))
    for item in c.get("env", []):
        assert "value" in item, f"{item['name']} must be a plain value (secrets are files)"
        env[item["name"]] = item["value"]
    return env


def metrics_service(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The metrics/health Service (the notifications Service is another one)."""
    (service,) = [d for d in by_kind(docs, "Service") if d["metadata"]["name"] == FULLNAME]
    return service


def subset(small: dict[str, str], big: dict[str, str]) -> bool:
    """Whether every key/value of small is in big."""
    return all(big.get(k) == v for k, v in small.items())


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_probes_use_the_health_endpoints_on_the_named_port(values: Path) -> None:
    """Liveness probes /healthz, readiness probes /readyz, both on the port named http (8000)."""
    docs = docs_for(values)
    c = container(docs)
    assert c["ports"][0] == {"name": "http", "containerPort": 8000, "protocol": "TCP"}
    assert [p["name"] for p in c["ports"][1:]] in ([], ["notifications"])
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    if "startupProbe" in c:
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert settings(docs)["BRIDGE_HTTP__PORT"] == "8000"


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_security_context_is_locked_down(values: Path) -> None:
    """Non-root 10001, read-only root filesystem, no privilege escalation, no capabilities."""
    docs = docs_for(values)
    pod = pod_spec(docs)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(docs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec(docs)["automountServiceAccountToken"] is False


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_tmp_is_a_writable_empty_dir(values: Path) -> None:
    """/tmp is an emptyDir, as the root filesystem is read-only."""
    docs = docs_for(values)
    mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_grace_period_exceeds_drain_deadline(values: Path) -> None:
    """terminationGracePeriodSeconds is longer than the bridge's drain deadline."""
    docs = docs_for(values)
    grace = pod_spec(docs)["terminationGracePeriodSeconds"]
    assert grace > float(settings(docs)["BRIDGE_PROCESSING__DRAIN_DEADLINE_S"])


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_entrypoint_is_not_overridden(values: Path) -> None:
    """The image's exec-form ENTRYPOINT stays PID 1 (no command override, no shell)."""
    c = container(docs_for(values))
    assert "command" not in c
    assert c["args"] == ["run"]


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_selectors_match_pod_labels(values: Path) -> None:
    """Deployment, Service, PDB, NetworkPolicy and ServiceMonitor select the bridge's pods."""
    docs = docs_for(values)
    labels = pod_labels(docs)
    deployment = one(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {
        "app.kubernetes.io/name": "norce-order-bridge",
        "app.kubernetes.io/instance": RELEASE,
    }
    assert subset(selector, labels)
    service = metrics_service(docs)
    assert subset(service["spec"]["selector"], labels)
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        assert subset(pdb["spec"]["selector"]["matchLabels"], labels)
    for np in by_kind(docs, "NetworkPolicy", hook=False):
        assert subset(np["spec"]["podSelector"]["matchLabels"], labels)
    for sm in by_kind(docs, "ServiceMonitor"):
        assert subset(sm["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_service_targets_the_named_port(values: Path) -> None:
    """The metrics Service targets the container port named http; the ServiceMonitor scrapes it."""
    docs = docs_for(values)
    service = metrics_service(docs)
    port_names = {p["name"] for p in container(docs)["ports"]}
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert "http" in port_names
    for sm in by_kind(docs, "ServiceMonitor"):
        for endpoint in sm["spec"]["endpoints"]:
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
            assert endpoint["path"] == "/metrics"


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_standard_labels_on_every_object(values: Path) -> None:
    """Every object carries the app.kubernetes.io/* and helm.sh/chart labels."""
    for doc in docs_for(values):
        labels = doc["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, f"{doc['kind']} {doc['metadata']['name']} lacks {key}"


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_config_keys_are_known_settings(values: Path) -> None:
    """Every BRIDGE_* variable is one of the bridge's settings."""
    env = settings(docs_for(values))
    unknown = {k for k in env if k.startswith("BRIDGE_")} - KNOWN_SETTINGS
    assert not unknown


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_secret_files_are_mounted_where_env_points(values: Path) -> None:
    """Each *_FILE / SSL_* path is a file of a mounted, read-only Secret volume."""
    docs = docs_for(values)
    c = container(docs)
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    mounts = c["volumeMounts"]
    env = settings(docs)
    file_settings = {
        k: v for k, v in env.items() if k.endswith("_FILE") or k.startswith("BRIDGE_KAFKA__SSL_")
    }
    for name, path in file_settings.items():
        mount = next((m for m in mounts if path.startswith(m["mountPath"] + "/")), None)
        assert mount is not None, f"{name}={path} is not under any volume mount"
        assert mount.get("readOnly") is True
        volume = volumes[mount["name"]]
        assert "secret" in volume, f"{name} must come from a Secret volume"
        filename = path[len(mount["mountPath"]) + 1 :]
        assert filename in {item["path"] for item in volume["secret"]["items"]}


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_no_secret_values_in_env_or_config(values: Path) -> None:
    """Secret values appear only in the Secret, never in env, ConfigMaps or annotations."""
    docs = docs_for(values)
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        for fake in FAKE_SECRETS:
            assert fake not in text, f"{doc['kind']} {doc['metadata']['name']} leaks a secret"
    for name in settings(docs):
        assert not name.endswith(("PASSWORD", "API_KEY")), f"{name} would carry a secret"


def test_minimal_install_reads_the_api_key_from_the_existing_secret() -> None:
    """With an existing Secret the chart creates none and mounts the API key from it."""
    docs = render((MINIMAL_VALUES,))
    assert not by_kind(docs, "Secret")
    assert settings(docs)["BRIDGE_NORCE__API_KEY_FILE"] == "/var/run/secrets/norce/api-key"
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["norce-api-key"]["secret"]["secretName"] == "norce-order-bridge-credentials"


def test_norce_environment_and_slug_replace_the_base_url() -> None:
    """environment + slug reach the bridge; no base URL is rendered then."""
    env = settings(
        render(
            (),
            (
                "config.norce.baseUrl=",
                "config.norce.environment=production",
                "config.norce.slug=acme-shop",
            ),
        )
    )
    assert env["BRIDGE_NORCE__ENVIRONMENT"] == "production"
    assert env["BRIDGE_NORCE__SLUG"] == "acme-shop"
    assert "BRIDGE_NORCE__BASE_URL" not in env


def test_insecure_http_is_passed_only_when_allowed() -> None:
    """allowInsecureHttp=true reaches the bridge; by default the variable is not set at all."""
    assert "BRIDGE_NORCE__ALLOW_INSECURE_HTTP" not in settings(render())
    env = settings(
        render(
            (),
            (
                "config.norce.baseUrl=http://norce-proxy.orders.svc:8080/",
                "config.norce.allowInsecureHttp=true",
            ),
        )
    )
    assert env["BRIDGE_NORCE__ALLOW_INSECURE_HTTP"] == "true"
    assert env["BRIDGE_NORCE__BASE_URL"] == "http://norce-proxy.orders.svc:8080/"


def test_wedged_after_reaches_the_bridge() -> None:
    """config.http.wedgedAfterSeconds sets the /healthz wedge threshold."""
    assert "BRIDGE_HTTP__WEDGED_AFTER_S" not in settings(render())
    env = settings(render((), ("config.http.wedgedAfterSeconds=45",)))
    assert env["BRIDGE_HTTP__WEDGED_AFTER_S"] == "45"


def _quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number (cores, bytes): enough suffixes for these values."""
    text = str(value)
    for suffix, factor in (("Mi", 2**20), ("Gi", 2**30), ("Ki", 2**10), ("m", 1e-3)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_every_container_has_requests_and_limits_for_cpu_memory_and_ephemeral_storage(
    values: Path,
) -> None:
    """What policy scanners (kube-score, checkov) require of every container, the bridge's and
    the test Pod's, with every ci values file: requests and limits of CPU, memory and ephemeral
    storage. The bridge's CPU limit is at least 2 cores, above what its one event-loop thread
    can use, so it never throttles the loop (and the Kafka heartbeats with it); its ephemeral
    storage limit holds the kubelet's rotated logs (50Mi) plus a full /tmp."""
    docs = render((values,))
    pods = [pod_spec(docs), *(p["spec"] for p in by_kind(docs, "Pod", hook=True))]
    for spec in pods:
        for c in spec["containers"]:
            resources = c["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory", "ephemeral-storage"} <= set(resources[kind]), (c, kind)
    limits = container(docs)["resources"]["limits"]
    assert _quantity(limits["cpu"]) >= 2
    tmp = next(v for v in pod_spec(docs)["volumes"] if "emptyDir" in v)
    assert _quantity(limits["ephemeral-storage"]) >= 50 * 2**20 + _quantity(
        tmp["emptyDir"]["sizeLimit"]
    )


def test_the_cpu_limit_can_be_dropped_with_null() -> None:
    """`resources.limits.cpu: null` (documented) removes the CPU limit and keeps the others."""
    limits = container(render((), ("resources.limits.cpu=null",)))["resources"]["limits"]
    assert set(limits) == {"memory", "ephemeral-storage"}


def test_pods_spread_over_zones_and_nodes_by_default() -> None:
    """Without explicit constraints the pods spread softly over zones and nodes."""
    docs = render()
    constraints = pod_spec(docs)["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    for c in constraints:
        assert c["whenUnsatisfiable"] == "ScheduleAnyway"
        assert c["maxSkew"] == 1
        assert subset(c["labelSelector"]["matchLabels"], pod_labels(docs))
    # Explicit constraints replace the default; disabling it leaves none.
    explicit = pod_spec(render((CHART_DIR / "ci" / "all-features-values.yaml",)))
    assert [c["topologyKey"] for c in explicit["topologySpreadConstraints"]] == [
        "topology.kubernetes.io/zone"
    ]
    off = pod_spec(render((), ("topologySpread.enabled=false",)))
    assert "topologySpreadConstraints" not in off


def test_chart_managed_secret_holds_the_credentials() -> None:
    """The chart-managed Secret carries both credentials and the pods mount it."""
    docs = render((CHART_DIR / "ci" / "sasl-values.yaml",))
    secrets = [d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == FULLNAME]
    assert len(secrets) == 1
    assert set(secrets[0]["data"]) == {"norce-api-key", "kafka-sasl-password"}
    secret_volumes = {v["secret"]["secretName"] for v in pod_spec(docs)["volumes"] if "secret" in v}
    assert FULLNAME in secret_volumes
    env = settings(docs)
    assert env["BRIDGE_NORCE__API_KEY_FILE"] == "/var/run/secrets/norce/api-key"
    assert env["BRIDGE_KAFKA__SASL_PASSWORD_FILE"] == "/var/run/secrets/kafka/sasl-password"
    assert env["BRIDGE_KAFKA__SSL_CAFILE"] == "/var/run/secrets/kafka-tls/ca/ca.crt"


def test_existing_secret_is_used_when_set() -> None:
    """With secrets.existingSecret no Secret is rendered and the volumes reference it."""
    docs = render((CHART_DIR / "ci" / "existing-secret-values.yaml",))
    assert not by_kind(docs, "Secret")
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    api_key = volumes["norce-api-key"]["secret"]
    sasl = volumes["kafka-sasl-password"]["secret"]
    assert api_key["secretName"] == "norce-order-bridge-credentials"
    assert sasl["secretName"] == "norce-order-bridge-credentials"
    assert api_key["items"] == [{"key": "api-key", "path": "api-key"}]
    assert sasl["items"] == [{"key": "sasl-password", "path": "sasl-password"}]
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" not in annotations


def test_checksums_roll_pods_on_config_and_secret_changes() -> None:
    """Changing a config value or a chart-managed secret changes the pod template annotations."""
    base = (CHART_DIR / "ci" / "sasl-values.yaml",)

    def annotations(*sets: str) -> dict[str, str]:
        deployment = one(render(base, sets), "Deployment")
        result: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
        return result

    before = annotations()
    assert before["checksum/config"] != annotations("config.logLevel=DEBUG")["checksum/config"]
    assert (
        before["checksum/secret"] != annotations("secrets.norceApiKey=rotated")["checksum/secret"]
    )


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler() -> None:
    """With an HPA or KEDA the Deployment has no replicas field; otherwise it has replicaCount."""
    assert one(render(), "Deployment")["spec"]["replicas"] == 1
    for name in ("hpa-values.yaml", "all-features-values.yaml"):
        assert "replicas" not in one(render((CHART_DIR / "ci" / name,)), "Deployment")["spec"]


def test_hpa_example_selects_metrics_the_bridge_exports() -> None:
    """Every metric the example HPA selects exists in BridgeMetrics with those labels and values.

    The bridge labels topics by role (commands, snapshots, ...); a selector on the topic's name
    could never resolve.
    """
    hpa = one(render((CHART_DIR / "ci" / "hpa-values.yaml",)), "HorizontalPodAutoscaler")
    labels_of = exported_labels()
    checked = 0
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "Resource":
            continue
        source = metric[metric["type"][0].lower() + metric["type"][1:]]
        name = source["metric"]["name"]
        assert name in known_metric_names(), f"{name} is not exported by the bridge"
        selector = source["metric"].get("selector", {})
        for key, value in selector.get("matchLabels", {}).items():
            assert key in labels_of[name], f"{name} has no label {key}"
            assert value in labels_of[name][key], (
                f"{name}{{{key}={value!r}}} never exists: the bridge exports "
                f"{sorted(labels_of[name][key])}"
            )
        checked += 1
    assert checked, "the example HPA selects no bridge metric"
    assert labels_of["norce_bridge_consumer_lag"]["topic"] == {"commands"}
    assert set(TOPIC_ROLES) >= {"commands", "snapshots", "events", "results", "dlq"}


def test_hpa_targets_the_deployment() -> None:
    """The HPA scales the bridge's Deployment on CPU and the configured external lag metric."""
    docs = render((CHART_DIR / "ci" / "hpa-values.yaml",))
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    types = [m["type"] for m in hpa["spec"]["metrics"]]
    assert types == ["Resource", "External"]


def test_keda_scales_on_the_consumer_group_lag() -> None:
    """The ScaledObject's kafka trigger watches the bridge's group and commands topic with auth."""
    docs = render((CHART_DIR / "ci" / "all-features-values.yaml",))
    env = settings(docs)
    scaled = one(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == FULLNAME
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == env["BRIDGE_KAFKA__GROUP_ID"]
    assert meta["topic"] == env["BRIDGE_TOPICS__COMMANDS"]
    assert meta["bootstrapServers"] == env["BRIDGE_KAFKA__BOOTSTRAP_SERVERS"]
    assert all(isinstance(v, str) for v in meta.values())
    auth = one(docs, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert set(params) == {"sasl", "username", "password", "tls", "ca", "cert", "key"}
    assert params["password"]["name"] == FULLNAME
    keda_secret = next(
        d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == f"{FULLNAME}-keda"
    )
    assert keda_secret["stringData"] == {
        "sasl": "scram_sha512",
        "username": "norce-order-bridge",
        "tls": "enable",
    }


def test_keda_without_kafka_auth_needs_no_trigger_authentication() -> None:
    """On a PLAINTEXT cluster the ScaledObject has no authenticationRef."""
    docs = render((), ("autoscaling.keda.enabled=true",))
    (trigger,) = one(docs, "ScaledObject")["spec"]["triggers"]
    assert "authenticationRef" not in trigger
    assert not by_kind(docs, "TriggerAuthentication")


def test_network_policy_allows_metrics_in_and_kafka_norce_dns_out() -> None:
    """The NetworkPolicy admits the metrics port and egress to DNS, Kafka and Norce only."""
    np = one(render((CHART_DIR / "ci" / "all-features-values.yaml",)), "NetworkPolicy", hook=False)
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ingress, notifications = np["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert notifications["ports"] == [{"port": "notifications", "protocol": "TCP"}]
    egress_ports = [sorted(p["port"] for p in rule["ports"]) for rule in np["spec"]["egress"]]
    assert egress_ports == [[53, 53], [9093], [443], [3128]]


JOB_SELECTOR = 'job="norce-order-bridge"'


def test_prometheus_rule_renders_the_rules_file() -> None:
    """The PrometheusRule carries the rules of files/ plus the additional rule labels; the
    down/absent rules watch this release's job and namespace instead of the generic job."""
    docs = render((CHART_DIR / "ci" / "all-features-values.yaml",))
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    source = yaml.safe_load((CHART_DIR / "files" / "norce-order-bridge.rules.yaml").read_text())
    rendered = rule["spec"]["groups"]
    assert [g["name"] for g in rendered] == [g["name"] for g in source["groups"]]
    release_job = f'job="{FULLNAME}", namespace="{NAMESPACE}"'
    substituted = 0
    for got_group, want_group in zip(rendered, source["groups"], strict=True):
        for got, want in zip(got_group["rules"], want_group["rules"], strict=True):
            assert got["labels"] == {**want["labels"], "team": "orders"}
            assert JOB_SELECTOR not in got["expr"]
            assert got["expr"] == want["expr"].replace(JOB_SELECTOR, release_job)
            substituted += JOB_SELECTOR in want["expr"]
            assert {k: v for k, v in got.items() if k not in ("labels", "expr")} == {
                k: v for k, v in want.items() if k not in ("labels", "expr")
            }
    assert substituted >= 3, "the absent/down/scrape rules select the job"


def test_prometheus_rule_job_and_runbook_base_are_configurable() -> None:
    """prometheusRule.job names the scrape job; runbookBaseUrl moves every runbook link."""
    docs = render(
        (),
        (
            "prometheusRule.enabled=true",
            "prometheusRule.job=kafka-bridges",
            "prometheusRule.runbookBaseUrl=https://wiki.example.com/runbooks/bridge/",
        ),
    )
    rules = [r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    absent = next(r for r in rules if r["alert"] == "NorceBridgeAbsent")
    assert absent["expr"].strip() == (f'absent(up{{job="kafka-bridges", namespace="{NAMESPACE}"}})')
    for r in rules:
        url = r["annotations"]["runbook_url"]
        assert url == f"https://wiki.example.com/runbooks/bridge#{r['alert'].lower()}", url


def test_helm_test_pod_checks_readyz_through_the_service() -> None:
    """The helm test hook is a locked-down, one-shot Pod of the bridge image polling /readyz of
    the Service, and no selector of the release picks it up as a bridge pod."""
    docs = render((CHART_DIR / "ci" / "all-features-values.yaml",))
    pods = by_kind(docs, "Pod")
    assert len(pods) == 1
    pod = pods[0]
    meta = pod["metadata"]
    assert meta["annotations"]["helm.sh/hook"] == "test"
    assert "hook-succeeded" in meta["annotations"]["helm.sh/hook-delete-policy"]
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] > 120
    assert spec["automountServiceAccountToken"] is False
    assert spec["imagePullSecrets"] == pod_spec(docs)["imagePullSecrets"]
    (c,) = spec["containers"]
    assert c["image"] == container(docs)["image"]
    assert c["command"][:2] == ["python", "-c"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"]["limits"]["memory"]
    env = {e["name"]: e["value"] for e in c["env"]}
    service = metrics_service(docs)
    port = service["spec"]["ports"][0]["port"]
    assert env["READYZ_URL"] == f"http://{FULLNAME}.{NAMESPACE}.svc:{port}/readyz"
    assert env["TIMEOUT_S"] == "120"
    labels = meta["labels"]
    assert not subset(service["spec"]["selector"], labels)
    assert not subset(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    np = one(docs, "NetworkPolicy", hook=False)
    assert not subset(np["spec"]["podSelector"]["matchLabels"], labels)
    # The NetworkPolicy restricts who may reach the bridge: the test Pod must be one of them.
    peers = np["spec"]["ingress"][0]["from"]
    assert any(
        "namespaceSelector" not in p and subset(p["podSelector"]["matchLabels"], labels)
        for p in peers
        if "podSelector" in p
    )
    assert not by_kind(render((), ("helmTest.enabled=false",)), "Pod")


def test_helm_test_pod_has_its_own_network_policy_with_the_release_one() -> None:
    """With networkPolicy.enabled the test Pod gets a NetworkPolicy of its own, a test hook
    created before it (lower weight) and removed with it: no ingress, egress to DNS and the
    bridge pods' HTTP port only, so the check also works where egress is denied by default."""
    docs = render((CHART_DIR / "ci" / "all-features-values.yaml",))
    (pod,) = by_kind(docs, "Pod", hook=True)
    np = one(docs, "NetworkPolicy", hook=True)
    annotations = np["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    pod_weight = int(pod["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
    assert int(annotations["helm.sh/hook-weight"]) < pod_weight
    assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    spec = np["spec"]
    assert subset(spec["podSelector"]["matchLabels"], pod["metadata"]["labels"])
    assert not subset(spec["podSelector"]["matchLabels"], pod_labels(docs))
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert not spec.get("ingress")
    dns, bridge = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    (port,) = bridge["ports"]
    assert port["port"] == container(docs)["ports"][0]["containerPort"]
    (peer,) = bridge["to"]
    assert subset(peer["podSelector"]["matchLabels"], pod_labels(docs))
    assert "namespaceSelector" not in peer
    assert not by_kind(render(), "NetworkPolicy")
    no_test = render((CHART_DIR / "ci" / "all-features-values.yaml",), ("helmTest.enabled=false",))
    assert not by_kind(no_test, "NetworkPolicy", hook=True)


def test_grafana_dashboard_config_map() -> None:
    """The dashboard ConfigMap carries the sidecar label and the dashboard JSON unchanged."""
    docs = render((CHART_DIR / "ci" / "all-features-values.yaml",))
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Orders"}
    source = json.loads((CHART_DIR / "files" / "norce-order-bridge.json").read_text())
    assert json.loads(cm["data"]["norce-order-bridge.json"]) == source


def test_dashboard_sidecar_label_is_configurable() -> None:
    """grafanaDashboard.sidecarLabel/Value change the label the sidecar selects on."""
    docs = render(
        (),
        (
            "grafanaDashboard.enabled=true",
            "grafanaDashboard.sidecarLabel=dashboards",
            "grafanaDashboard.sidecarLabelValue=orders",
        ),
    )
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["dashboards"] == "orders"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
