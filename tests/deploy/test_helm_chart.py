"""helm lint/template on the chart with every values file, schema checks and rejected values."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helmtools import (
    CHART_DIR,
    CI_VALUES,
    KUBE_VERSION,
    MINIMAL_VALUES,
    by_kind,
    find_tool,
    one,
    render,
    render_fails,
    run,
    values_id,
)

VALUES_CASES = CI_VALUES
# On top of the minimal values (which name an existing Secret): a chart-managed Secret instead.
CHART_SECRET = ("secrets.existingSecret=", "secrets.norceApiKey=k")

# Custom resources kubernetes-validate has no schema for; they are checked structurally in
# test_manifests.py instead.
CRD_KINDS = {
    "ServiceMonitor": "prometheus-operator CRD monitoring.coreos.com/v1",
    "PrometheusRule": "prometheus-operator CRD monitoring.coreos.com/v1",
    "ScaledObject": "KEDA CRD keda.sh/v1alpha1",
    "TriggerAuthentication": "KEDA CRD keda.sh/v1alpha1",
}


def values_args(path: Path) -> tuple[Path, ...]:
    """Values files for one case."""
    return (path,)


def test_ci_values_files_exist() -> None:
    """The chart ships ci/*-values.yaml files: the minimal install and the optional parts."""
    names = {p.name for p in CI_VALUES}
    assert {
        "minimal-values.yaml",
        "all-features-values.yaml",
        "existing-secret-values.yaml",
        "sasl-values.yaml",
        "hpa-values.yaml",
    } <= names


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_helm_lint_strict(values: Path) -> None:
    """helm lint --strict passes with every ci values file."""
    argv = [find_tool("helm"), "lint", "--strict", str(CHART_DIR), "--kube-version", KUBE_VERSION]
    argv += ["--values", str(values)]
    proc = run(argv)
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout
    assert "[ERROR]" not in proc.stdout


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_rendered_manifests_are_valid_kubernetes(values: Path) -> None:
    """Every rendered core manifest validates (strict) against the Kubernetes schemas."""
    docs = render(values_args(values))
    validated, skipped = [], []
    for doc in docs:
        kind = doc["kind"]
        if kind in CRD_KINDS:
            skipped.append(f"{kind}: {CRD_KINDS[kind]} (no schema in kubernetes-validate)")
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind} {doc['metadata']['name']} is invalid: {exc}", pytrace=False)
        validated.append(kind)
    assert "Deployment" in validated
    assert "Pod" in validated, "the helm test Pod is validated like the rest"
    assert set(validated) | {s.split(":")[0] for s in skipped} == {d["kind"] for d in docs}
    for reason in skipped:
        print(f"skipped schema validation of {reason}")


def test_kubernetes_validate_catches_a_bad_field() -> None:
    """The schema validation really rejects an unknown field (guards the test above)."""
    deployment = dict(by_kind(render(), "Deployment")[0])
    bad: dict[str, Any] = {**deployment, "spec": {**deployment["spec"], "replicaz": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)


def test_minimal_values_render_only_the_core_objects() -> None:
    """With the minimal values every optional part is off; the helm test Pod is on."""
    kinds = sorted(d["kind"] for d in render((MINIMAL_VALUES,)))
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "PodDisruptionBudget", "Pod", "Service", "ServiceAccount"]
    )


def test_default_values_fail_naming_what_to_set() -> None:
    """helm install with the chart's defaults fails instead of deploying a pod that exits."""
    err = render_fails(bare=True)
    assert "config.norce.baseUrl is required" in err
    err = render_fails(["config.norce.baseUrl=https://acme.api-se.norce.tech/"], bare=True)
    assert "a Norce API key is required: set secrets.existingSecret" in err


@pytest.mark.parametrize(
    "sets",
    [
        ["secrets.norceApiKey=k"],
        ["secrets.existingSecret=creds"],
    ],
    ids=["chart-secret", "existing-secret"],
)
def test_either_api_key_source_with_a_url_renders(sets: list[str]) -> None:
    """A base URL plus either source of the API key is enough to install."""
    docs = render((), ("secrets.existingSecret=", "config.norce.baseUrl=https://a.example/", *sets))
    env = {
        e["name"]: e["value"]
        for e in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["BRIDGE_NORCE__API_KEY_FILE"] == "/var/run/secrets/norce/api-key"


def test_ci_values_exercise_every_optional_part() -> None:
    """Together the ci values files render every optional object."""
    kinds: set[str] = set()
    dashboards = 0
    for path in CI_VALUES:
        docs = render((path,))
        kinds |= {d["kind"] for d in docs}
        dashboards += sum(
            1 for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
        )
    expected = {
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
        "TriggerAuthentication",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Secret",
        "PodDisruptionBudget",
        "Ingress",
    }
    assert expected <= kinds
    assert dashboards >= 1


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["replicaCount=abc"], "/replicaCount"),
        (["config.processing.ordering=random"], "/config/processing/ordering"),
        (["config.processing.processingGuarantee=exactly_twice"], "processingGuarantee"),
        (["config.kafka.securityProtocol=TLS"], "securityProtocol"),
        (["config.kafka.sasl.mechanism=GSSAPI"], "mechanism"),
        (["config.logLevel=verbose"], "logLevel"),
        (["config.processing.odering=key"], "odering"),
        (["config.processing.maxInFlight=0"], "maxInFlight"),
        (["config.processing.drainDeadlineSeconds=0"], "drainDeadlineSeconds"),
        (["config.kafka.bootstrapServers=kafka"], "bootstrapServers"),
        (["config.norce.baseUrl=ftp://norce"], "baseUrl"),
        (["config.norce.baseUrl=https://"], "baseUrl"),
        (["config.norce.environment=prod"], "environment"),
        (["config.norce.slug=Acme_Shop"], "slug"),
        (["config.norce.slug=-acme"], "slug"),
        (["config.norce.allowInsecureHttp=yes"], "allowInsecureHttp"),
        (["config.http.wedgedAfterSeconds=0"], "wedgedAfterSeconds"),
        (["resources.requests.cpu=lots"], "cpu"),
        (["resources.limits.memory=1GB"], "memory"),
        (["resources.requests.memory=-1"], "memory"),
        (["tmpSizeLimit=64MB"], "tmpSizeLimit"),
        (["helmTest.resources.limits.memory=big"], "memory"),
        (["helmTest.timeoutSeconds=0"], "timeoutSeconds"),
        (["topologySpread.whenUnsatisfiable=Never"], "whenUnsatisfiable"),
        (["prometheusRule.runbookBaseUrl=wiki/runbook"], "runbookBaseUrl"),
        (["config.topics.commands=bad topic"], "commands"),
        (["image.digest=latest"], "digest"),
        (["service.port=70000"], "port"),
        (["terminationGracePeriodSeconds=-1"], "terminationGracePeriodSeconds"),
        (["unknownTopLevel=1"], "unknownTopLevel"),
        (["autoscaling.keda.offsetResetPolicy=none"], "offsetResetPolicy"),
        (["extraEnv[0].name=BRIDGE_NORCE__API_KEY", "extraEnv[0].value=x"], "extraEnv"),
        (["extraEnv[0].name=BRIDGE_KAFKA__SASL_PASSWORD", "extraEnv[0].value=x"], "extraEnv"),
        # The bridge reads its variables case-insensitively: lower case is the same API key.
        (["extraEnv[0].name=bridge_norce__api_key", "extraEnv[0].value=x"], "extraEnv"),
        (["extraEnv[0].name=Bridge_Kafka__Sasl_Password", "extraEnv[0].value=x"], "extraEnv"),
        (["extraEnv[0].name=BRIDGE_NORCE__OAUTH_TOKEN", "extraEnv[0].value=x"], "extraEnv"),
    ],
)
def test_schema_rejects_invalid_values(sets: list[str], message: str) -> None:
    """values.schema.json makes helm template fail on a wrong value."""
    err = render_fails(sets)
    assert "values don't meet the specifications of the schema" in err
    assert message in err


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["config.processing.drainDeadlineSeconds=60", "terminationGracePeriodSeconds=60"],
            "must be greater than config.processing.drainDeadlineSeconds",
        ),
        (
            ["config.processing.drainDeadlineSeconds=61", "terminationGracePeriodSeconds=60"],
            "must be greater than config.processing.drainDeadlineSeconds",
        ),
        (
            [
                "config.kafka.securityProtocol=SASL_SSL",
                "config.kafka.sasl.username=u",
                *CHART_SECRET,
                "secrets.kafkaSaslPassword=p",
            ],
            "config.kafka.sasl.mechanism is required",
        ),
        (
            [
                "config.kafka.securityProtocol=SASL_PLAINTEXT",
                "config.kafka.sasl.mechanism=PLAIN",
                *CHART_SECRET,
                "secrets.kafkaSaslPassword=p",
            ],
            "config.kafka.sasl.username is required",
        ),
        (
            [
                "config.kafka.securityProtocol=SASL_SSL",
                "config.kafka.sasl.mechanism=PLAIN",
                "config.kafka.sasl.username=u",
                *CHART_SECRET,
            ],
            "needs the SASL password",
        ),
        (
            ["autoscaling.hpa.enabled=true", "autoscaling.keda.enabled=true"],
            "mutually exclusive",
        ),
        (
            [
                "autoscaling.hpa.enabled=true",
                "autoscaling.hpa.minReplicas=4",
                "autoscaling.hpa.maxReplicas=3",
            ],
            "autoscaling.hpa.minReplicas (4) must not be greater than autoscaling.hpa.maxReplicas",
        ),
        (
            [
                "autoscaling.keda.enabled=true",
                "autoscaling.keda.minReplicaCount=7",
                "autoscaling.keda.maxReplicaCount=6",
            ],
            "autoscaling.keda.minReplicaCount (7) must not be greater than",
        ),
        (
            ["autoscaling.hpa.enabled=true", "resources.requests.cpu=null"],
            "autoscaling.hpa.targetCPUUtilizationPercentage needs resources.requests.cpu",
        ),
        (
            ["autoscaling.hpa.enabled=true", "resources=null"],
            "autoscaling.hpa.targetCPUUtilizationPercentage needs resources.requests.cpu",
        ),
        (
            ["podDisruptionBudget.minAvailable=1"],
            "podDisruptionBudget.minAvailable (1) must be lower than the replica count (1",
        ),
        (
            ["podDisruptionBudget.minAvailable=3", "replicaCount=3"],
            "podDisruptionBudget.minAvailable (3) must be lower than the replica count (3",
        ),
        (
            ["podDisruptionBudget.minAvailable=50%"],
            "podDisruptionBudget.minAvailable (50%) must be lower than the replica count (1",
        ),
        (
            [
                "podDisruptionBudget.minAvailable=2",
                "replicaCount=5",
                "autoscaling.keda.enabled=true",
                "autoscaling.keda.minReplicaCount=2",
            ],
            "podDisruptionBudget.minAvailable (2) must be lower than the replica count (2",
        ),
        (
            [
                "podDisruptionBudget.minAvailable=1",
                "autoscaling.keda.enabled=true",
                "autoscaling.keda.minReplicaCount=0",
            ],
            "node drains block",
        ),
        (
            ["podDisruptionBudget.maxUnavailable=0", "replicaCount=3"],
            "podDisruptionBudget.maxUnavailable (0) allows no eviction",
        ),
        (
            ["podDisruptionBudget.maxUnavailable=0%", "replicaCount=3"],
            "podDisruptionBudget.maxUnavailable (0%) allows no eviction",
        ),
        (
            ["resources.requests.memory=1Gi"],
            "resources.requests.memory (1Gi) must not be greater than resources.limits.memory",
        ),
        (
            ["resources.limits.cpu=50m"],
            "resources.requests.cpu (100m) must not be greater than resources.limits.cpu (50m)",
        ),
        (
            ["helmTest.resources.requests.memory=65Mi"],
            "helmTest.resources.requests.memory (65Mi) must not be greater than",
        ),
        (
            ["config.kafka.tls.caSecret.name=kafka-ca"],
            "config.kafka.tls.caSecret is set but securityProtocol is PLAINTEXT",
        ),
        (
            [
                "config.kafka.securityProtocol=SASL_PLAINTEXT",
                "config.kafka.sasl.mechanism=PLAIN",
                "config.kafka.sasl.username=u",
                "config.kafka.tls.clientSecret.name=client-cert",
            ],
            "config.kafka.tls.clientSecret is set but securityProtocol is SASL_PLAINTEXT",
        ),
        (
            ["extraEnv[0].name=bridge_kafka__bootstrap_servers", "extraEnv[0].value=x:1"],
            "extraEnv bridge_kafka__bootstrap_servers overrides a variable the chart sets",
        ),
        (
            ["extraEnv[0].name=BRIDGE_NORCE__API_KEY_FILE", "extraEnv[0].value=/tmp/k"],
            "extraEnv BRIDGE_NORCE__API_KEY_FILE overrides a variable the chart sets",
        ),
        (["config.norce.baseUrl="], "config.norce.baseUrl is required"),
        (
            ["config.norce.baseUrl=http://norce-proxy.orders.svc:8080/"],
            "is plain http:// to a non-loopback host",
        ),
        (
            ["config.norce.baseUrl=http://127.0.0.1.evil.example/"],
            "is plain http:// to a non-loopback host",
        ),
        (
            ["config.norce.baseUrl=", "config.norce.environment=production"],
            "config.norce.slug is required with config.norce.environment=production",
        ),
        (
            ["config.norce.environment=stage", "config.norce.slug=acme"],
            "config.norce.baseUrl is ignored with config.norce.environment=stage",
        ),
        (
            ["secrets.norceApiKey=k"],
            "are ignored when secrets.existingSecret is set",
        ),
        (
            ["prometheusRule.enabled=true", "serviceMonitor.jobLabel=app.kubernetes.io/name"],
            "set prometheusRule.job",
        ),
    ],
)
def test_template_rejects_inconsistent_values(sets: list[str], message: str) -> None:
    """Combinations the schema cannot express fail at render time with a clear message."""
    assert message in render_fails(sets)


@pytest.mark.parametrize(
    "sets",
    [
        ["podDisruptionBudget.minAvailable=1", "replicaCount=2"],
        ["podDisruptionBudget.minAvailable=50%", "replicaCount=3"],
        ["podDisruptionBudget.maxUnavailable=25%", "replicaCount=2"],
        ["podDisruptionBudget.enabled=false", "podDisruptionBudget.minAvailable=1"],
        [
            "autoscaling.hpa.enabled=true",
            "autoscaling.hpa.minReplicas=3",
            "autoscaling.hpa.maxReplicas=3",
            "podDisruptionBudget.minAvailable=2",
        ],
        [
            "autoscaling.hpa.enabled=true",
            "resources=null",
            "autoscaling.hpa.targetCPUUtilizationPercentage=null",
        ],
        ["resources.requests.memory=512Mi"],
        ["resources.limits.memory=0.5Gi", "resources.requests.memory=536870912"],
        ["resources.limits.cpu=0.1"],
        ["resources.limits.cpu=1", "resources.requests.cpu=1000m"],
        ["config.norce.baseUrl=http://127.0.0.1:8089/"],
        ["config.norce.baseUrl=http://localhost:8089"],
        ["config.norce.baseUrl=http://[::1]:8089/"],
        ["extraEnv[0].name=TZ", "extraEnv[0].value=UTC"],
        [
            "prometheusRule.enabled=true",
            "serviceMonitor.jobLabel=app.kubernetes.io/name",
            "prometheusRule.job=norce-order-bridge",
        ],
    ],
)
def test_template_accepts_consistent_values(sets: list[str]) -> None:
    """The guards above reject only what is wrong: these close neighbours render."""
    assert by_kind(render((), tuple(sets)), "Deployment")


def test_fractional_drain_deadline_is_rounded_up(tmp_path: Path) -> None:
    """A drain deadline of 59.5 s needs a grace period of at least 61 s."""
    values = tmp_path / "values.yaml"
    drain = "config:\n  processing:\n    drainDeadlineSeconds: 59.5\n"
    values.write_text(drain + "terminationGracePeriodSeconds: 60\n")
    assert "must be greater than" in render_fails(values=[MINIMAL_VALUES, values])
    values.write_text(drain + "terminationGracePeriodSeconds: 61\n")
    assert by_kind(render((MINIMAL_VALUES, values)), "Deployment")


def test_grace_period_longer_than_drain_deadline_renders() -> None:
    """A drain deadline just below the grace period is accepted."""
    docs = render(
        (), ("config.processing.drainDeadlineSeconds=59", "terminationGracePeriodSeconds=60")
    )
    assert by_kind(docs, "Deployment")


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_notes_render(values: Path, tmp_path: Path) -> None:
    """NOTES.txt renders (via tpl in a scratch copy of the chart) and names the release."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART_DIR, chart)
    (chart / "notes.txt").write_text((chart / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
    )
    argv = [find_tool("helm"), "template", "bridge", str(chart), "--namespace", "orders"]
    argv += ["--show-only", "templates/zz-notes.yaml"]
    argv += ["--values", str(values)]
    notes = yaml.safe_load(run(argv).stdout)["data"]["notes"]
    assert "bridge-norce-order-bridge" in notes
    assert "/readyz" in notes
    assert "helm test bridge -n orders" in notes
    assert "WARNING" not in notes
    if (
        yaml.safe_load(values.read_text())
        .get("ingress", {})
        .get("notifications", {})
        .get("enabled")
    ):
        assert "bridge-norce-order-bridge-notifications" in notes
        assert "/notifications" in notes
