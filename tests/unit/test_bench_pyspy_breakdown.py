"""``bench/pyspy_breakdown.py`` puts each profile next to the CPU figure of its own run.

``pyspy-wrap.sh`` profiles every bridge process of an invocation, the unreported warm-up run's
too, and that run is not in the benchmark's ``--json``. Matching profiles to runs by start order
shifted every bridge profile onto the next run's CPU figure and divided by a file that had none.
Profiles are matched by the pid in their file name (``RunResult.pid`` in the JSON); one without
a run is left out and named.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "pyspy_breakdown.py"


def _profile(path: Path, stacks: dict[str, int]) -> None:
    path.write_text("".join(f"{stack} {n}\n" for stack, n in stacks.items()))


def _run(kind: str, pipeline: str, pid: int, cpu_ms: float) -> dict[str, object]:
    return {"spec": {"kind": kind, "pipeline": pipeline}, "pid": pid, "cpu_s_per_1000": cpu_ms}


def _table(out: str) -> dict[str, tuple[float, float]]:
    rows: dict[str, tuple[float, float]] = {}
    for line in out.splitlines():
        parts = line.rsplit(maxsplit=3)
        if len(parts) == 4 and parts[1].replace(".", "").isdigit():
            rows[parts[0].strip()] = (float(parts[1]), float(parts[2]))
    return rows


def test_profiles_match_their_runs_by_pid_and_the_warm_up_is_left_out(tmp_path: Path) -> None:
    gc = "main (bridge/app.py:1);gc_collect_main (libpython3.11.so)"
    own = "main (bridge/app.py:1);run (bridge/pipeline.py:10)"
    # the warm-up's profile: all garbage collection, started first, no run in the JSON
    _profile(tmp_path / "bridge-100-11.txt", {gc: 500})
    _profile(tmp_path / "bridge-200-12.txt", {gc: 25, own: 75})  # 1,000 µs per command
    _profile(tmp_path / "bridge-300-13.txt", {gc: 50, own: 50})  # 2,000 µs per command
    _profile(tmp_path / "reference-250-14.txt", {gc: 10, own: 90})  # 800 µs per command
    runs = [
        _run("paced", "bridge", 12, 1.0),
        _run("paced", "reference", 14, 0.8),
        _run("paced", "bridge", 13, 2.0),
    ]
    (tmp_path / "run.json").write_text(json.dumps({"runs": runs}))

    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--json", str(tmp_path / "run.json")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert "bridge-100-11.txt: left out" in done.stdout
    table = _table(done.stdout)
    # bridge: the mean of (250 gc + 750 own) and (1,000 gc + 1,000 own) µs per command
    assert table["garbage collection"] == (625.0, 80.0)
    assert table["total"] == (1500.0, 800.0)
