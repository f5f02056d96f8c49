"""Command line entry point: run the simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import signal
import sys
from collections.abc import Callable

from norce_simulator.config import FaultConfig, SimulatorConfig
from norce_simulator.server import start_simulator

log = logging.getLogger("norce_simulator")

EVENT_LOOPS = ("asyncio", "uvloop")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``simulate``."""
    parser = argparse.ArgumentParser(
        prog="norce-simulator", description="Run the Norce Checkout Order API simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--orders", type=int, default=10, help="orders seeded at start")
    parser.add_argument("--merchant", default="norce")
    parser.add_argument("--channel", default="1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help="accepted API key (repeatable; default sim-api-key)",
    )
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--rate-limit-rate", type=float, default=0.0)
    parser.add_argument("--retry-after-s", type=float, default=1.0)
    parser.add_argument("--hang-rate", type=float, default=0.0)
    parser.add_argument("--hang-s", type=float, default=30.0)
    parser.add_argument("--reset-rate", type=float, default=0.0)
    parser.add_argument("--fault-after-apply-rate", type=float, default=0.0)
    parser.add_argument(
        "--no-enforce-transitions",
        action="store_false",
        dest="enforce_transitions",
        help="allow any status change",
    )
    parser.add_argument(
        "--no-call-log", action="store_false", dest="log_calls", help="disable the call log"
    )
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="asyncio",
        help="event loop implementation (uvloop needs the uvloop package; default asyncio)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Translate parsed arguments into a ``SimulatorConfig`` (raises ``ValueError``)."""
    config = SimulatorConfig(
        api_keys=tuple(args.api_keys or ("sim-api-key",)),
        seed=args.seed,
        orders=args.orders,
        merchant=args.merchant,
        channel=args.channel,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        enforce_transitions=args.enforce_transitions,
        log_calls=args.log_calls,
        freeze_after_seed=True,  # a process of its own (see SimulatorConfig)
        faults=FaultConfig(
            error_rate=args.error_rate,
            rate_limit_rate=args.rate_limit_rate,
            retry_after_s=args.retry_after_s,
            hang_rate=args.hang_rate,
            hang_s=args.hang_s,
            reset_rate=args.reset_rate,
            fault_after_apply_rate=args.fault_after_apply_rate,
        ),
    )
    config.validate()
    return config


async def serve(config: SimulatorConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, announcing the start on stdout as one JSON line."""
    handle = await start_simulator(config, host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        line = {
            "event": "simulator_started",
            "url": handle.url,
            "event_loop": "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
            "orders": len(handle.app.store),
            "seeded_ids_sample": handle.app.seeded_ids[:5],
        }
        print(json.dumps(line), flush=True)
        await stop.wait()
    finally:
        await handle.aclose()


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """Return the event-loop factory for ``--event-loop`` (raises ``ValueError`` if unusable)."""
    if name == "asyncio":
        return asyncio.new_event_loop
    if name == "uvloop":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError as exc:
            raise ValueError("--event-loop uvloop needs the uvloop package installed") from exc
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    raise ValueError(f"unknown event loop {name!r}")


def main(argv: list[str] | None = None) -> int:
    """Run ``simulate``; return the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        config = config_from_args(args)
    except ValueError as exc:
        log.error("invalid simulator settings: %s", exc)
        return 2
    try:
        factory = loop_factory(args.event_loop)
    except ValueError as exc:
        log.error("invalid simulator settings: %s", exc)
        return 2
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(config, args.host, args.port))
    except OSError as exc:
        log.error("simulator could not start: %s", exc)
        return 1
    return 0
