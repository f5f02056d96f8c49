"""The throughput benchmark's ``--quick`` variant as a CI smoke test (correctness only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_RUNS = {"key L=0ms", "partition L=0ms", "key L=20ms", "partition L=20ms"}


def test_quick_benchmark_verifies_every_run_in_both_modes(kafka_bootstrap: str) -> None:
    """``bench/throughput.py --quick`` exits 0 with a PASS line for each mode at L=0 and 20 ms."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=270,
        check=False,
    )
    lines = proc.stdout.splitlines()
    report = "\n".join(lines[-40:]) + "\n" + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    passed = {line.removeprefix("PASS ") for line in lines if line.startswith("PASS ")}
    assert passed >= EXPECTED_RUNS, report
    assert not [line for line in lines if line.startswith("FAIL")], report
    assert any(line.startswith("ALL ") and "RUNS PASSED" in line for line in lines), report
