"""The chaos harness's command line: ``python bench/chaos.py [--short] [--seed N] ...``.

It starts its own Kafka broker (on a data directory it owns, since it restarts it) and the
simulator as a process, runs one :class:`~bridge_devkit.chaos.run.ChaosRun` per processing
guarantee, prints what was injected and a PASS/FAIL line per check, and exits 1 on any FAIL.
Everything is seeded: the plan and the fault schedule replay exactly; process timing does not.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path

from bridge.codec import AvroCodec
from bridge.config import DEFAULT_SCHEMAS_DIR
from bridge_devkit.chaos.checks import RunReport
from bridge_devkit.chaos.context import API_KEY
from bridge_devkit.chaos.plan import FULL, GUARANTEES, SHORT, Profile
from bridge_devkit.chaos.report import print_report
from bridge_devkit.chaos.run import ChaosRun, prepare
from bridge_devkit.harness import SimulatorProcess
from bridge_devkit.localkafka import LocalKafka

DESCRIPTION = (
    "Chaos harness: kill -9, API faults, a broker restart and zombies, then check every order."
)


async def amain(args: argparse.Namespace) -> int:
    # the harness's own clients complain loudly while the broker restarts: that is the point
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    profile = SHORT if args.short else FULL
    overrides = {
        k: getattr(args, k)
        for k in ("orders", "commands", "partitions", "produce_s", "kills", "pauses", "expulsions")
        if getattr(args, k) is not None
    }
    if overrides:
        profile = Profile(**{**profile.__dict__, **overrides})
    chosen = args.guarantee or "both"
    guarantees = list(GUARANTEES) if chosen == "both" else [chosen]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    replay = f"python bench/chaos.py --seed {seed} --guarantee {chosen}"
    extras = [
        "--short" if args.short else "",
        "--wait-assigned" if args.wait_assigned else "",
        f"--write-guard {args.write_guard}" if args.write_guard else "",
        *(f"--{k.replace('_', '-')} {v}" for k, v in overrides.items()),
    ]
    replay = " ".join([replay, *(e for e in extras if e)])
    print(f"chaos harness: profile {profile.name}, seed {seed}, guarantees {guarantees}")
    print(f"  replay with: {replay}")
    print(f"  work directory (logs): {workdir}", flush=True)
    codec = AvroCodec.load(DEFAULT_SCHEMAS_DIR)
    broker = LocalKafka(data_dir=workdir / "kafka")
    t = time.monotonic()
    await asyncio.to_thread(broker.start)
    print(f"  broker ready at {broker.bootstrap_servers} in {time.monotonic() - t:.1f}s")
    sim = SimulatorProcess(
        workdir / "simulator.log",
        api_key=API_KEY,
        seed=seed,
        args=["--latency-ms", "3", "--jitter-ms", "4"],
    )
    print(f"  simulator at {sim.url}", flush=True)
    reports: list[RunReport] = []
    try:
        for guarantee in guarantees:
            ctx = await prepare(
                guarantee, profile, seed, broker=broker, sim=sim, workdir=workdir, codec=codec
            )
            run = ChaosRun(ctx, wait_assigned=args.wait_assigned, write_guard=args.write_guard)
            reports.append(await run.run())
    finally:
        await sim.aclose()
        await asyncio.to_thread(broker.stop)
    for report in reports:
        print_report(report, seed)
    ok = bool(reports) and all(r.ok for r in reports)
    print(f"\nRESULT: {'PASS' if ok else 'FAIL'} (seed {seed}; replay: {replay})")
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs and evidence kept in {workdir}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--short", action="store_true", help="the CI form (smaller, faster)")
    parser.add_argument("--seed", type=int, help="replay a run (default: random, printed)")
    parser.add_argument(
        "--guarantee",
        choices=[*GUARANTEES, "both"],
        help="processing guarantee(s) to run, each with fresh topics and group (default: both)",
    )
    parser.add_argument("--orders", type=int)
    parser.add_argument("--commands", type=int)
    parser.add_argument("--partitions", type=int)
    parser.add_argument("--produce-s", type=float, dest="produce_s")
    parser.add_argument("--kills", type=int)
    parser.add_argument(
        "--wait-assigned",
        action="store_true",
        help="produce only after the first bridge was assigned its partitions",
    )
    parser.add_argument(
        "--pauses",
        type=int,
        help="SIGSTOPs of an owner with writes in retry backoff (default: full 3, short 1)",
    )
    parser.add_argument(
        "--expulsions",
        type=int,
        help="owners expelled during a revoke with a hanging write (default: full 2, short 1)",
    )
    parser.add_argument(
        "--write-guard",
        choices=["lease", "lease+read"],
        help="BRIDGE_PROCESSING__WRITE_GUARD for the bridges (default: the bridge's default)",
    )
    parser.add_argument("--workdir", help="where logs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory on success")
    args = parser.parse_args(argv)
    return asyncio.run(amain(args))
