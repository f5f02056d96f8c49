"""The rendered chart through a policy scanner, kube-score (built by scripts/install-tools.sh).

Every ci values file, hooks included (the `helm test` Pod and its NetworkPolicy): no CRITICAL
and no WARNING finding except the ones the chart README's "Policy scanners" section lists as
deliberate, each named here with its reason. A new finding fails the test with kube-score's
own words, so a chart change that a platform team's scanner would flag is caught here first.
"""

from __future__ import annotations

from collections.abc import Set
from pathlib import Path

import pytest
from helmtools import (
    CI_VALUES,
    MINIMAL_VALUES,
    by_kind,
    find_tool,
    render,
    run,
    template_argv,
    values_id,
)

# kube-score tests the chart does not satisfy on purpose (chart README, "Policy scanners").
DELIBERATE = {
    # IfNotPresent with a pinned tag or digest: a restart must not depend on the registry.
    "container-image-pull-policy",
    # replicaCount 1 suits a small commands topic; the user scales to the partition count.
    "deployment-replicas",
    # The default topologySpread spreads the pods over zones and nodes instead.
    "deployment-has-host-podantiaffinity",
}
# Per values file, what that file turns off on purpose (its header comment says so).
TURNED_OFF = {
    "hpa-values.yaml": {"deployment-has-poddisruptionbudget"},
}


def kube_score(
    values: tuple[Path, ...], tmp_path: Path, ignored: Set[str] = frozenset(), *, warnings: bool
) -> tuple[int, str]:
    """kube-score (ci output) on the chart rendered with ``values``: (exit code, output)."""
    manifests = tmp_path / "rendered.yaml"
    manifests.write_text(run(template_argv(values, ())).stdout)
    argv = [find_tool("kube-score"), "score", "--output-format", "ci"]
    if warnings:
        argv.append("--exit-one-on-warning")
    for test in sorted(ignored):
        argv += ["--ignore-test", test]
    proc = run([*argv, str(manifests)], check=False)
    return proc.returncode, proc.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_kube_score_finds_nothing_but_the_deliberate(values: Path, tmp_path: Path) -> None:
    ignored = DELIBERATE | TURNED_OFF.get(values.name, set())
    if not by_kind(render((values,)), "NetworkPolicy", hook=False):
        # networkPolicy.enabled is off by default: its egress rules need the user's Kafka peers.
        ignored.add("pod-networkpolicy")
    code, output = kube_score((values,), tmp_path, ignored, warnings=True)
    findings = [
        line
        for line in output.splitlines()
        if line.strip() and not line.startswith(("[OK]", "[SKIPPED]"))
    ]
    assert findings == [], "\n".join(findings)
    assert code == 0


def test_kube_score_reports_what_the_chart_leaves_out(tmp_path: Path) -> None:
    """The scan can fail: with the CPU limit dropped (`resources.limits.cpu: null`) and no test
    ignored, kube-score reports the missing limit and the deliberate findings above."""
    no_cpu_limit = tmp_path / "no-cpu-limit.yaml"
    no_cpu_limit.write_text("resources:\n  limits:\n    cpu: null\n")
    code, output = kube_score((MINIMAL_VALUES, no_cpu_limit), tmp_path, warnings=False)
    assert code == 1
    assert "CPU limit is not set" in output
    assert "ImagePullPolicy is not set to Always" in output
