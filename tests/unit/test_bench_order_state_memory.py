"""``bench/order_state_memory.py`` runs as documented and prints a plausible figure.

A smoke test of the benchmark: its figures are printed for people, not asserted as targets.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_runs_as_documented_and_prints_the_figures() -> None:
    proc = subprocess.run(
        [sys.executable, "bench/order_state_memory.py", "--orders", "3000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "orders                  : 3,000" in proc.stdout
    found = re.search(r"memory per known order  : (\d+) bytes", proc.stdout)
    assert found is not None, proc.stdout
    # An order id, a state and a dict slot: some hundreds of bytes, not zero, not kilobytes.
    assert 150 < int(found.group(1)) < 2000, proc.stdout
