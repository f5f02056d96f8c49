"""The short chaos run (kill -9, API faults, a broker restart, poison) passes every check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHECKS = (
    "caught-up",
    "history",
    "final-state",
    "snapshot",
    "results",
    "dlq",
    "outcomes",
    "shutdown",
)


@pytest.mark.timeout(900)
def test_chaos_harness_short_form_passes(tmp_path: Path) -> None:
    # The harness starts (and restarts) its own broker, so the session broker is not used.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    proc = subprocess.run(
        [sys.executable, "bench/chaos.py", "--short", "--workdir", str(tmp_path / "chaos")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    out = proc.stdout
    summary = "\n".join(
        line
        for line in out.splitlines()
        if line.lstrip().startswith(("[PASS]", "[FAIL]", "RESULT"))
    )
    tail = (
        f"{summary}\n--- output (tail) ---\n{out[-12000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    )
    assert proc.returncode == 0, tail
    for check in CHECKS:
        assert f"[PASS] {check} " in out, f"no PASS line for {check}\n{tail}"
    assert "[FAIL]" not in out, tail
    assert "RESULT: PASS" in out, tail
