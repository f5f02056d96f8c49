"""The throughput benchmark's ``--quick`` variant as a CI smoke test (correctness only): every
run verified, the lean reference pipeline included (L=0) with its snapshot bytes compared to the
bridge codec's for every order."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_RUNS = {
    "key L=0ms",
    "partition L=0ms",
    "key L=20ms",
    "partition L=20ms",
    "reference L=0ms",
}
QUICK_ORDERS = 60  # --quick: 600 commands over 60 orders


def test_quick_benchmark_verifies_every_run_in_both_modes(kafka_bootstrap: str) -> None:
    """``bench/throughput.py --quick`` exits 0 with a PASS line for each mode at L=0 and 20 ms
    and for the reference pipeline at L=0, whose snapshots are byte-equal to the bridge's."""
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
    # The reference did the bridge's work: its last snapshot of every order is byte-equal to
    # the bridge codec's for the same order JSON (a mismatch would have failed the run).
    reference = [line for line in lines if line.startswith("PASS reference L=0ms:")]
    assert len(reference) == 1, report
    checked = re.search(r"snapshot bytes = bridge codec's for (\d+) orders", reference[0])
    assert checked is not None, report
    assert int(checked.group(1)) == QUICK_ORDERS, report
    # The paced run reports its warm-up (first 3 s) apart from the steady state after it.
    paced = [line for line in lines if line.startswith("PASS paced key L=20ms")]
    assert paced, report
    assert re.search(r"warm-up p99 [\d,]+ ms .*steady p99 [\d,]+ ms", paced[0]), report
    # ... and the report compares the bridge with the reference.
    assert any("bridge/reference: CPU per command" in line for line in lines), report
