"""CPU per command by component, from py-spy profiles of ``bench/throughput.py`` runs (issue 13).

Usage (what ``bench/README.md`` documents)::

    PYSPY_OUT=/tmp/pyspy python bench/throughput.py --latencies 0 --modes key \\
        --skip-paced --skip-memory --skip-http --repeat 2 \\
        --bridge-wrapper 'bash bench/pyspy-wrap.sh' --json /tmp/pyspy/run.json
    python bench/pyspy_breakdown.py /tmp/pyspy --json /tmp/pyspy/run.json

``pyspy-wrap.sh`` leaves one collapsed-stack file per bridge / reference process
(``<kind>-<ns>-<pid>.txt``, native frames included so that garbage collection shows). Each
sample is put in one component: a sample with a garbage-collector frame anywhere is ``gc``, one
with an import frame is ``start-up``; otherwise the innermost frame that belongs to a known
component names it (CPython and libc internals are skipped over, so ``malloc`` under fastavro
counts as Avro). The share of each component is multiplied by the CPU per command that the
benchmark measured for the same run (``/proc`` utime+stime, in the ``--json`` file, matched by
the process id in the file name; a profile without a run there, such as the unreported warm-up
run's, is left out and named) to give µs per command; without ``--json`` it divides the samples
by the rate and the commands given with ``--commands``. Blocking sampling slows the profiled
process, so read the shares and compare the bridge with the reference of the same invocation.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# (component, pattern on the frame text "function (file:line)"); the first match wins.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "Avro encode (fastavro)",
        re.compile(r"\(_write\.c|\(_validation\.c|fastavro/|reference_avro\.py:.*encode"),
    ),
    (
        "snapshot mapping",
        re.compile(r"bridge/snapshot|<snapshot converter|reference_avro\.py|bridge/events\.py"),
    ),
    (
        "HTTP client (aiohttp/httpx + client)",
        re.compile(
            r"aiohttp/|yarl/|multidict/|httpx/|httpcore/|_http_parser\.c|_http_writer|"
            r"bridge/norce|stamina/|tenacity/|reference_base\.py:.*(http|_get|_put|request)"
        ),
    ),
    ("Kafka producer", re.compile(r"aiokafka/producer/|aiokafka/record/|_crecords|crc32c")),
    ("Kafka consumer", re.compile(r"aiokafka/consumer/")),
    ("Kafka client I/O", re.compile(r"aiokafka/")),
    ("metrics (prometheus)", re.compile(r"prometheus_client/|bridge/metric|bridge/gc_metrics")),
    (
        "JSON decode, command model (orjson, pydantic)",
        re.compile(r"orjson|pydantic|bridge/commands\.py|bridge/jsonstrict"),
    ),
    ("logging", re.compile(r"logging/|bridge/logs\.py")),
    ("pipeline (own code)", re.compile(r"bridge/|bridge_devkit/throughput/reference")),
    ("asyncio event loop", re.compile(r"asyncio/|_asynciomodule\.c|selectors\.py|epoll")),
)
GC = re.compile(r"gcmodule\.c|gc_collect|collect_main|collect_with_callback|collect_generation")
IMPORT = re.compile(r"importlib\._bootstrap")
STARTUP = "start-up (imports)"
FILE_NAME = re.compile(r"^(?P<kind>bridge|reference)-(?P<ns>\d+)-(?P<pid>\d+)\.txt$")


def classify(frames: Sequence[str]) -> str:
    """The component of one sample (frames root first, leaf last)."""
    if any(GC.search(f) for f in frames):
        return "garbage collection"
    if any(IMPORT.search(f) for f in frames):
        return STARTUP
    for frame in reversed(frames):
        for name, pattern in RULES:
            if pattern.search(frame):
                return name
    return "other (interpreter, libc)"


def read_profile(path: Path) -> Counter[str]:
    """Samples per component of one collapsed-stack file."""
    counts: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[classify(stack.split(";"))] += int(n)
    return counts


def cpu_per_command(runs: Iterable[dict[str, Any]], kind: str) -> dict[int, float]:
    """CPU µs per command of the back-log and paced runs of one pipeline (bridge/reference), by
    the pid of the run's process."""
    out: dict[int, float] = {}
    for run in runs:
        spec = run.get("spec", {})
        if (
            spec.get("kind") not in ("throughput", "paced")
            or spec.get("pipeline", "bridge") != kind
        ):
            continue
        cpu, pid = run.get("cpu_s_per_1000"), run.get("pid")  # ms per command
        if isinstance(cpu, int | float) and isinstance(pid, int):
            out[pid] = float(cpu) * 1000.0
    return out


def mean_cpu(runs: Iterable[dict[str, Any]], kind: str) -> float | None:
    """Mean CPU µs per command of one pipeline's runs (None without any)."""
    cpus = list(cpu_per_command(runs, kind).values())
    return sum(cpus) / len(cpus) if cpus else None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("directory", type=Path, help="PYSPY_OUT of the profiled benchmark")
    p.add_argument("--json", type=Path, default=None, help="the benchmark's --json file")
    p.add_argument("--rate", type=float, default=100.0, help="py-spy samples per second")
    p.add_argument(
        "--scale-to",
        type=Path,
        default=None,
        help="--json of an unprofiled run of the same benchmark: scale each pipeline's total to "
        "its mean CPU per command there (sampling slows the profiled processes)",
    )
    p.add_argument("--commands", type=int, default=0, help="commands per run (without --json)")
    args = p.parse_args(argv)

    files: dict[str, list[tuple[int, int, Path]]] = {"bridge": [], "reference": []}  # ns, pid
    for path in args.directory.iterdir():
        m = FILE_NAME.match(path.name)
        if m:
            files[m["kind"]].append((int(m["ns"]), int(m["pid"]), path))
    for kind in files:
        files[kind].sort()  # in start order
    runs: list[dict[str, Any]] = []
    if args.json is not None:
        runs = list(json.loads(args.json.read_text()).get("runs", []))

    table: dict[str, dict[str, float]] = {}
    for kind, paths in files.items():
        cpus = cpu_per_command(runs, kind)
        profiles: list[tuple[Counter[str], float]] = []  # (samples, µs per command per sample)
        for _, pid, path in paths:
            counts = read_profile(path)
            counts.pop(STARTUP, None)  # outside the benchmark's CPU window
            samples = sum(counts.values())
            if not samples:
                continue
            if pid in cpus:
                profiles.append((counts, cpus[pid] / samples))
            elif args.json is None and args.commands:
                profiles.append((counts, 1e6 / args.rate / args.commands))
            else:
                print(f"{path.name}: left out, no run of pid {pid} in --json (e.g. the warm-up)")
        total: defaultdict[str, float] = defaultdict(float)
        for counts, scale in profiles:
            for name, n in counts.items():
                total[name] += n * scale / len(profiles)
        table[kind] = total
    if not any(table.values()):
        print(f"no profiles in {args.directory}", file=sys.stderr)
        return 1
    if args.scale_to is not None:
        plain = list(json.loads(args.scale_to.read_text()).get("runs", []))
        for kind, figures in table.items():
            target, have = mean_cpu(plain, kind), sum(figures.values())
            if target and have:
                table[kind] = {n: v * target / have for n, v in figures.items()}
    bridge = table.get("bridge", {})
    names = sorted({n for t in table.values() for n in t}, key=lambda n: -bridge.get(n, 0.0))
    print(f"{'component':46} {'bridge µs/cmd':>14} {'reference µs/cmd':>17} {'diff':>8}")
    for name in names:
        b, r = table["bridge"].get(name, 0.0), table["reference"].get(name, 0.0)
        print(f"{name:46} {b:14.0f} {r:17.0f} {b - r:+8.0f}")
    b_all, r_all = sum(table["bridge"].values()), sum(table["reference"].values())
    print(f"{'total':46} {b_all:14.0f} {r_all:17.0f} {b_all - r_all:+8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
