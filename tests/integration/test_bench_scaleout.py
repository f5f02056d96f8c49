"""The throughput benchmark's scale-out runs in a tiny configuration (correctness only).

``bench/throughput.py --only scaleout --instances 1,2`` on the session's broker: one and two
bridge processes in one consumer group, then one instance joined by a second mid-run. Every run
must verify, and the join must have happened while commands were still coming (the joiner owned
partitions before the last result) and lost nothing. The figures are not checked here: speed is
what the benchmark prints, not what a test asserts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--scale-seconds", "4", "--join-at", "0.2", "--stall-s", "40"]  # joins early: margin


def test_scaleout_runs_verify_and_a_joining_instance_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    out = tmp_path / "scaleout.json"
    argv = ["--only", "scaleout", "--instances", "1,2", *TINY, "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = proc.stdout.splitlines()
    report = "\n".join(lines[-45:]) + "\n" + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    assert not [line for line in lines if line.startswith("FAIL")], report

    runs: list[dict[str, Any]] = json.loads(out.read_text())["runs"]
    by_label = {r["spec"]["label"]: r for r in runs}
    assert set(by_label) == {"scale-out x1 L=100ms", "scale-out x2 L=100ms", "join 1+1 L=100ms"}
    assert all(r["passed"] for r in runs), report
    for r in runs:
        assert r["processed"] == r["spec"]["commands"], report  # a result for every command

    two = by_label["scale-out x2 L=100ms"]
    assert len(two["shares"]) == 2, report
    assert all(two["shares"]), report  # both owned partitions
    assert sorted(p for share in two["shares"] for p in share) == list(range(12)), report
    assert all(n > 0 for n in two["requests_per_instance"]), report  # both called the API

    join = by_label["join 1+1 L=100ms"]
    assert join["instances"] == 2, report
    assert join["join_results_at_settled"] < join["spec"]["commands"], report  # joined mid-run
    assert join["requests_per_instance"][1] > 0, report  # the joiner did part of the work
    assert any(line.startswith("  join (at_least_once):") for line in lines), report
    assert any("instances:" in line and "x linear" in line for line in lines), report
