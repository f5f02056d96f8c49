"""``bench/commit_requests.py`` runs as documented (its own local broker) and prints its table.

The figures themselves are a benchmark's, not a test's (bench/README.md): only that both ways
of committing ran against the broker and were measured is checked here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^  (one by one|one request) +([\d.]+) +([\d.]+) +([\d.]+)$", re.MULTILINE)


def test_commit_requests_benchmark_measures_both_ways() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    proc = subprocess.run(
        [
            sys.executable,
            "bench/commit_requests.py",
            "--partitions",
            "3",
            "--commits",
            "5",
            "--rounds",
            "1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "commit round of 3 partitions" in proc.stdout
    rows = {m.group(1): [float(x) for x in m.groups()[1:]] for m in ROW.finditer(proc.stdout)}
    assert set(rows) == {"one by one", "one request"}, proc.stdout
    for figures in rows.values():
        assert figures[2] > 0  # a commit round takes time: the broker answered
