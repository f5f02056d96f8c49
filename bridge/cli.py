"""``order-bridge``: run | demo | simulate | send | schema."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge import __version__


def _cmd_run(_: argparse.Namespace) -> int:
    from bridge.app import run_service
    from bridge.config import load_settings
    from bridge.errors import ConfigError
    from bridge.logs import configure_logging

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"order-bridge: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        return asyncio.run(run_service(settings))
    except ConfigError as exc:
        print(f"order-bridge: {exc}", file=sys.stderr)
        return 2


def _cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    return asyncio.run(run_demo(orders=args.orders, verbose=args.verbose))


def _cmd_simulate(args: argparse.Namespace) -> int:
    from bridge.simulator.cli import main as sim_main

    return sim_main(args.rest)


def _cmd_send(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer

    from bridge.commands import DeleteOrder, SetOrderState, command_to_json
    from bridge.order_model import OrderStatus

    now = datetime.now(UTC)
    common = {
        "command_id": args.command_id or f"cli-{uuid.uuid4().hex}",
        "order_id": args.order_id,
        "merchant": args.merchant,
        "channel": args.channel,
        "issued_at": now,
        "expected_state": OrderStatus(args.expected_state) if args.expected_state else None,
        "expires_at": now + timedelta(seconds=args.expires_in) if args.expires_in else None,
        "correlation_id": args.correlation_id,
    }
    command: SetOrderState | DeleteOrder
    if args.delete:
        command = DeleteOrder(**common)
    else:
        if not args.state:
            print("order-bridge send: --state or --delete is required", file=sys.stderr)
            return 2
        command = SetOrderState(state=OrderStatus(args.state), **common)

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=args.bootstrap, enable_idempotence=True, acks="all"
        )
        await producer.start()
        try:
            md = await producer.send_and_wait(
                args.topic,
                command_to_json(command),
                key=command.order_id.encode(),
                headers=[("content-type", b"application/json")],
            )
        finally:
            await producer.stop()
        print(
            json.dumps(
                {
                    "sent": command.command_id,
                    "topic": md.topic,
                    "partition": md.partition,
                    "offset": md.offset,
                }
            )
        )

    asyncio.run(send())
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from bridge.commands import command_json_schema

    text = json.dumps(command_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.write:
        path = Path(args.write)
        path.write_text(text)
        print(f"wrote {path}")
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="order-bridge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"order-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the service (configuration from BRIDGE_* variables)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="end to end on embedded defaults: local Kafka + API simulator")
    p.add_argument("--orders", type=int, default=24, help="orders to drive through lifecycles")
    p.add_argument("--verbose", action="store_true", help="show the bridge's JSON logs")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "simulate", help="run the Norce Order API simulator (see --help of it)", add_help=False
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("send", help="publish one command (JSON) to the commands topic")
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--topic", default="norce.order.commands")
    p.add_argument("--order-id", required=True)
    p.add_argument("--merchant", default="norce")
    p.add_argument("--channel", default="1")
    p.add_argument(
        "--state",
        choices=["checkout", "processing", "accepted", "completed", "declined", "removed"],
    )
    p.add_argument("--delete", action="store_true")
    p.add_argument(
        "--expected-state",
        choices=["checkout", "processing", "accepted", "completed", "declined", "removed"],
    )
    p.add_argument("--expires-in", type=float, help="seconds until the command expires")
    p.add_argument("--command-id")
    p.add_argument("--correlation-id")
    p.set_defaults(func=_cmd_send)

    p = sub.add_parser("schema", help="print (or --write) the JSON Schema of the commands")
    p.add_argument("--write", nargs="?", const="schemas/order-command.schema.json")
    p.set_defaults(func=_cmd_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
