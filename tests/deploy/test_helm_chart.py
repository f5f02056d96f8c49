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
    by_kind,
    find_tool,
    render,
    render_fails,
    run,
    values_id,
)

VALUES_CASES = [None, *CI_VALUES]

# Custom resources kubernetes-validate has no schema for; they are checked structurally in
# test_manifests.py instead.
CRD_KINDS = {
    "ServiceMonitor": "prometheus-operator CRD monitoring.coreos.com/v1",
    "PrometheusRule": "prometheus-operator CRD monitoring.coreos.com/v1",
    "ScaledObject": "KEDA CRD keda.sh/v1alpha1",
    "TriggerAuthentication": "KEDA CRD keda.sh/v1alpha1",
}


def values_args(path: Path | None) -> tuple[Path, ...]:
    """Values files for one case."""
    return () if path is None else (path,)


def test_ci_values_files_exist():
    """The chart ships ci/*-values.yaml files for the optional parts."""
    names = {p.name for p in CI_VALUES}
    assert {"all-features-values.yaml", "existing-secret-values.yaml", "sasl-values.yaml"} <= names


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_helm_lint_strict(values: Path | None):
    """helm lint --strict passes with the default values and every ci values file."""
    argv = [find_tool("helm"), "lint", "--strict", str(CHART_DIR), "--kube-version", KUBE_VERSION]
    if values is not None:
        argv += ["--values", str(values)]
    proc = run(argv)
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout
    assert "[ERROR]" not in proc.stdout


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_rendered_manifests_are_valid_kubernetes(values: Path | None):
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
    assert set(validated) | {s.split(":")[0] for s in skipped} == {d["kind"] for d in docs}
    for reason in skipped:
        print(f"skipped schema validation of {reason}")


def test_kubernetes_validate_catches_a_bad_field():
    """The schema validation really rejects an unknown field (guards the test above)."""
    deployment = dict(by_kind(render(), "Deployment")[0])
    bad: dict[str, Any] = {**deployment, "spec": {**deployment["spec"], "replicaz": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)


def test_defaults_render_only_the_core_objects():
    """With default values every optional part is off."""
    kinds = sorted(d["kind"] for d in render())
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
    )


def test_ci_values_exercise_every_optional_part():
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
        (["config.topics.commands=bad topic"], "commands"),
        (["image.digest=latest"], "digest"),
        (["service.port=70000"], "port"),
        (["terminationGracePeriodSeconds=-1"], "terminationGracePeriodSeconds"),
        (["unknownTopLevel=1"], "unknownTopLevel"),
        (["autoscaling.keda.offsetResetPolicy=none"], "offsetResetPolicy"),
        (["extraEnv[0].name=BRIDGE_NORCE__API_KEY", "extraEnv[0].value=x"], "extraEnv"),
        (["extraEnv[0].name=BRIDGE_KAFKA__SASL_PASSWORD", "extraEnv[0].value=x"], "extraEnv"),
    ],
)
def test_schema_rejects_invalid_values(sets: list[str], message: str):
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
                "secrets.kafkaSaslPassword=p",
            ],
            "config.kafka.sasl.mechanism is required",
        ),
        (
            [
                "config.kafka.securityProtocol=SASL_PLAINTEXT",
                "config.kafka.sasl.mechanism=PLAIN",
                "secrets.kafkaSaslPassword=p",
            ],
            "config.kafka.sasl.username is required",
        ),
        (
            [
                "config.kafka.securityProtocol=SASL_SSL",
                "config.kafka.sasl.mechanism=PLAIN",
                "config.kafka.sasl.username=u",
            ],
            "needs the SASL password",
        ),
        (
            ["autoscaling.hpa.enabled=true", "autoscaling.keda.enabled=true"],
            "mutually exclusive",
        ),
    ],
)
def test_template_rejects_inconsistent_values(sets: list[str], message: str):
    """Combinations the schema cannot express fail at render time with a clear message."""
    assert message in render_fails(sets)


def test_fractional_drain_deadline_is_rounded_up(tmp_path: Path):
    """A drain deadline of 59.5 s needs a grace period of at least 61 s."""
    values = tmp_path / "values.yaml"
    drain = "config:\n  processing:\n    drainDeadlineSeconds: 59.5\n"
    values.write_text(drain + "terminationGracePeriodSeconds: 60\n")
    assert "must be greater than" in render_fails(values=[values])
    values.write_text(drain + "terminationGracePeriodSeconds: 61\n")
    assert by_kind(render((values,)), "Deployment")


def test_grace_period_longer_than_drain_deadline_renders():
    """A drain deadline just below the grace period is accepted."""
    docs = render(
        (), ("config.processing.drainDeadlineSeconds=59", "terminationGracePeriodSeconds=60")
    )
    assert by_kind(docs, "Deployment")


@pytest.mark.parametrize("values", VALUES_CASES, ids=values_id)
def test_notes_render(values: Path | None, tmp_path: Path):
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
    if values is not None:
        argv += ["--values", str(values)]
    notes = yaml.safe_load(run(argv).stdout)["data"]["notes"]
    assert "bridge-norce-order-bridge" in notes
    assert "/readyz" in notes
    if values is None:
        assert "WARNING: no Norce API key" in notes
    else:
        assert "WARNING" not in notes
