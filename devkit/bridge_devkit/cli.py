"""``order-bridge-dev``: demo | simulate | broker — development tools, not part of the service.

``demo`` runs the bridge end to end on embedded defaults (a local Kafka broker and the Norce API
simulator) and prints a summary; ``simulate`` runs the simulator (same as ``norce-simulator``);
``broker`` runs the local single-node KRaft broker until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from bridge import __version__
from bridge.cli_common import plain


def _cmd_demo(args: argparse.Namespace) -> int:
    from bridge.errors import ConfigError
    from bridge.startup import EXIT_CONFIG, EXIT_UNAVAILABLE, StartupError
    from bridge_devkit.demo import run_demo

    try:
        return asyncio.run(
            run_demo(orders=args.orders, verbose=args.verbose, schema_registry=args.schema_registry)
        )
    except ConfigError as exc:
        print(f"order-bridge-dev: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as exc:
        print(f"order-bridge-dev: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def _cmd_broker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from bridge_devkit.localkafka import LocalKafka

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalKafka() as kafka:
        print(f"Kafka broker ready: {kafka.bootstrap_servers} (Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="order-bridge-dev",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"order-bridge-dev {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="end to end on embedded defaults: local Kafka + API simulator")
    p.add_argument("--orders", type=int, default=24, help="orders to drive through lifecycles")
    p.add_argument("--verbose", action="store_true", help="show the bridge's JSON logs")
    p.add_argument(
        "--schema-registry",
        action="store_true",
        help="outputs in the Confluent wire format with a schema registry (SCHEMA_REGISTRY_URL, "
        "else a local Apicurio Registry: needs Java 21+)",
    )
    p.set_defaults(func=_cmd_demo)
    sub.add_parser(
        "simulate",
        help="run the Norce Order API simulator (order-bridge-dev simulate --help)",
        add_help=False,
    )
    p = sub.add_parser("broker", help="run the local single-node Kafka broker until interrupted")
    p.set_defaults(func=_cmd_broker)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["simulate"]:
        # The simulator has its own parser (and --help): hand the rest over untouched.
        from norce_simulator.cli import main as sim_main

        return sim_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))
