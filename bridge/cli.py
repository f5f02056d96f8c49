"""``order-bridge``: run | send | refresh | dlq | schema | asyncapi.

Development tools (the demo, the Norce API simulator, a local broker) are not part of the
service: they live in the devkit (``order-bridge-dev``, ``norce-simulator``).

Exit codes: 0 success, 1 failure after start, 2 configuration or arguments, 3 a dependency
unreachable or refusing at start-up, 130 interrupted (see :mod:`bridge.startup`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta

from bridge import __version__
from bridge.cli_common import (
    fail,
    first_error,
    guarded,
    plain,
    settings_and_options,
    wait_kafka,
    write_output,
)
from bridge.cli_ops import add_dlq, add_refresh
from bridge.order_model import OrderStatus


def _cmd_run(_: argparse.Namespace) -> int:
    from bridge.app import run_service
    from bridge.config import load_settings
    from bridge.logs import configure_logging
    from bridge.tuning import event_loop_factory

    def run() -> int:
        settings = load_settings()
        loop_factory = event_loop_factory(settings)  # uvloop asked for but missing: exit 2
        configure_logging(settings.log_level)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            # The process ends with the service: at most 30 s from "bridge stopped" to exit.
            return runner.run(run_service(settings, teardown_s=30.0))

    return guarded(run)


def _cmd_send(args: argparse.Namespace) -> int:
    return guarded(lambda: _send(args))


def _send(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from bridge.commands import DeleteOrder, SetOrderState, command_to_json
    from bridge.errors import ConfigError
    from bridge.order_model import OrderStatus
    from bridge.startup import EXIT_UNAVAILABLE, StartupError

    if args.delete == bool(args.state):
        raise ConfigError("send: give exactly one of --state or --delete")
    settings, options = settings_and_options(args)
    topic = args.topic or settings.topics.commands
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
    try:
        command: SetOrderState | DeleteOrder = (
            DeleteOrder(**common)
            if args.delete
            else SetOrderState(state=OrderStatus(args.state), **common)
        )
    except ValueError as exc:  # pydantic's ValidationError: a bad order id, command id, ...
        raise ConfigError(f"send: invalid command: {first_error(exc)}") from None
    k = settings.kafka

    async def send() -> dict[str, object]:
        await wait_kafka(settings, options, args.timeout)
        producer = AIOKafkaProducer(
            bootstrap_servers=k.bootstrap_servers,
            client_id=f"{k.client_id}-send",
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=k.request_timeout_ms,
            **options,
        )
        await producer.start()
        try:
            md = await asyncio.wait_for(
                producer.send_and_wait(
                    topic,
                    command_to_json(command),
                    key=command.order_id.encode(),
                    headers=[("content-type", b"application/json")],
                ),
                args.timeout,
            )
        finally:
            await producer.stop()
        return {
            "sent": command.command_id,
            "topic": md.topic,
            "partition": md.partition,
            "offset": md.offset,
        }

    try:
        result = asyncio.run(send())
    except StartupError:
        raise  # unreachable or refused: the start-up message says which (exit code 3)
    except (KafkaError, TimeoutError) as exc:
        return fail(
            f"send: the command was not acknowledged by Kafka within {args.timeout:g}s "
            f"({type(exc).__name__}); check that topic {topic!r} exists "
            "(BRIDGE_TOPICS__COMMANDS or --topic) and the broker is healthy",
            EXIT_UNAVAILABLE,
        )
    print(json.dumps(result))
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from bridge.commands import command_json_schema

    text = json.dumps(command_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.write:
        return write_output("schema", args.write, text)
    sys.stdout.write(text)
    return 0


def _cmd_asyncapi(args: argparse.Namespace) -> int:
    from bridge.asyncapi import build_document, dump_document
    from bridge.config import load_settings

    def run() -> int:
        settings = load_settings() if args.from_env else None
        text = dump_document(build_document(settings), args.format)
        if args.output:
            return write_output("asyncapi", args.output, text)
        sys.stdout.write(text)
        return 0

    return guarded(run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="order-bridge",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"order-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "run",
        help="run the service (configuration from BRIDGE_* variables)",
        description="Run the service. Its configuration comes from BRIDGE_* environment "
        "variables only (README: Configuration). SIGTERM or SIGINT drains the commands in "
        "flight and exits 0; SIGUSR1 logs where every task waits (a stack dump) and goes on.",
    )
    p.set_defaults(func=_cmd_run)

    states = [s.value for s in OrderStatus]
    p = sub.add_parser(
        "send",
        help="publish one command (JSON) to the commands topic",
        description="Publish one command to the commands topic. The broker, TLS and SASL "
        "come from the same BRIDGE_KAFKA__* settings as `order-bridge run`, the topic from "
        "BRIDGE_TOPICS__COMMANDS; --bootstrap and --topic override them.",
    )
    p.add_argument("--bootstrap", help="brokers (default: BRIDGE_KAFKA__BOOTSTRAP_SERVERS)")
    p.add_argument("--topic", help="commands topic (default: BRIDGE_TOPICS__COMMANDS)")
    p.add_argument("--order-id", required=True)
    p.add_argument("--merchant", default="norce")
    p.add_argument("--channel", default="1")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--state", choices=states, help="SetOrderState to this state")
    action.add_argument("--delete", action="store_true", help="DeleteOrder")
    p.add_argument("--expected-state", choices=states, help="only if the order is in this state")
    p.add_argument("--expires-in", type=float, help="seconds until the command expires")
    p.add_argument("--command-id")
    p.add_argument("--correlation-id")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the broker (default 30)"
    )
    p.set_defaults(func=_cmd_send)

    add_refresh(sub)
    add_dlq(sub)

    p = sub.add_parser("schema", help="print (or --write) the JSON Schema of the commands")
    p.add_argument(
        "--write",
        nargs="?",
        const="schemas/order-command.schema.json",
        metavar="PATH",
        help="write to PATH instead of stdout (without PATH: schemas/order-command.schema.json, "
        "the copy in a checkout of the repository)",
    )
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser(
        "asyncapi",
        help="print (or --output) the AsyncAPI 3.0 contract of the topics (asyncapi.yaml)",
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")
    p.add_argument(
        "--from-env",
        action="store_true",
        help="topic names, partitions and group ids from the BRIDGE_* settings "
        "(default: the defaults, as the committed asyncapi.yaml)",
    )
    p.set_defaults(func=_cmd_asyncapi)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    return int(args.func(args))
