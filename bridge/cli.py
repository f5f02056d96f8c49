"""``order-bridge``: run | send | refresh | dlq | schema | asyncapi.

Development tools (the demo, the Norce API simulator, a local broker) are not part of the
service: they live in the devkit (``order-bridge-dev``, ``norce-simulator``).

Exit codes: 0 success, 1 failure after start, 2 configuration, 3 a dependency unreachable or
refusing at start-up, 130 interrupted (see :mod:`bridge.startup`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.order_model import OrderStatus


def _fail(message: str, code: int) -> int:
    """The one line a start-up failure prints (no traceback), then the exit code."""
    first, *rest = str(message).splitlines() or [""]
    print(f"order-bridge: {first}", file=sys.stderr)
    for line in rest:  # one line per problem, as the configuration check lists them
        print(line, file=sys.stderr)
    return code


def _guarded(run: Callable[[], int]) -> int:
    """Run a command; configuration and start-up failures become one line and an exit code."""
    from bridge.errors import ConfigError
    from bridge.startup import EXIT_CONFIG, EXIT_UNAVAILABLE, StartupError

    try:
        return run()
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except StartupError as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        return 130


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
            return runner.run(run_service(settings))

    return _guarded(run)


def _cmd_send(args: argparse.Namespace) -> int:
    return _guarded(lambda: _send(args))


def _send(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from bridge.app import kafka_options
    from bridge.commands import DeleteOrder, SetOrderState, command_to_json
    from bridge.config import load_settings
    from bridge.errors import ConfigError
    from bridge.logs import configure_logging
    from bridge.order_model import OrderStatus
    from bridge.startup import EXIT_UNAVAILABLE, StartupError, wait_for_kafka

    if args.delete == bool(args.state):
        raise ConfigError("send: give exactly one of --state or --delete")
    overrides: dict[str, str] = {}
    if args.bootstrap:
        overrides["bootstrap_servers"] = args.bootstrap
    settings = load_settings()
    if overrides:
        settings = load_settings(kafka=settings.kafka.model_copy(update=overrides).model_dump())
    configure_logging("WARNING")
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
        raise ConfigError(f"send: invalid command: {_first_error(exc)}") from None
    k = settings.kafka
    options = kafka_options(settings)

    async def send() -> dict[str, object]:
        await wait_for_kafka(
            k.bootstrap_servers,
            options,
            deadline_s=args.timeout,
            attempt_timeout_s=min(k.request_timeout_ms / 1000, args.timeout),
        )
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
        return _fail(
            f"send: the command was not acknowledged by Kafka within {args.timeout:g}s "
            f"({type(exc).__name__}); check that topic {topic!r} exists "
            "(BRIDGE_TOPICS__COMMANDS or --topic) and the broker is healthy",
            EXIT_UNAVAILABLE,
        )
    print(json.dumps(result))
    return 0


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return type(exc).__name__


def _settings_and_options(
    args: argparse.Namespace,
) -> tuple[Any, dict[str, Any]]:
    """The service's settings (``--bootstrap`` overriding the brokers) and Kafka client options."""
    from bridge.app import kafka_options
    from bridge.config import load_settings
    from bridge.logs import configure_logging

    settings = load_settings()
    if getattr(args, "bootstrap", None):
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": args.bootstrap})
        settings = load_settings(kafka=kafka.model_dump())
    configure_logging("WARNING")
    return settings, kafka_options(settings)


async def _wait_kafka(settings: Any, options: dict[str, Any], deadline_s: float) -> None:
    from bridge.startup import wait_for_kafka

    k = settings.kafka
    await wait_for_kafka(
        k.bootstrap_servers,
        options,
        deadline_s=deadline_s,
        attempt_timeout_s=min(k.request_timeout_ms / 1000, deadline_s),
    )


def _cmd_refresh(args: argparse.Namespace) -> int:
    return _guarded(lambda: _refresh(args))


def _refresh(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from bridge.backfill import (
        RefreshRequest,
        check_order_ids,
        check_reason,
        check_scope,
        parse_since,
        run_refresh,
    )
    from bridge.errors import ConfigError
    from bridge.secret_files import load_secret
    from bridge.startup import EXIT_FAILURE, EXIT_UNAVAILABLE

    if args.since and not args.all:
        raise ConfigError("refresh: --since needs --all")
    order_ids = check_order_ids(args.order_id or [])
    merchant, channel = check_scope(args.merchant, args.channel)
    reason = check_reason(args.reason or ("backfill" if args.all else "manual"))
    if args.correlation_id is not None:
        check_reason(args.correlation_id)
    request = RefreshRequest(
        merchant=merchant,
        channel=channel,
        reason=reason,
        order_ids=tuple(order_ids),
        all_orders=args.all,
        since=parse_since(args.since) if args.since else None,
        dry_run=args.dry_run,
        page_size=args.page_size,
        topic=args.topic,
        correlation_id=args.correlation_id,
    )
    settings, options = _settings_and_options(args)
    if args.all:  # fail on a missing API key before anything is sent
        load_secret(
            settings.norce.api_key, settings.norce.api_key_file, variable="BRIDGE_NORCE__API_KEY"
        )

    def api_key() -> Any:
        return load_secret(
            settings.norce.api_key, settings.norce.api_key_file, variable="BRIDGE_NORCE__API_KEY"
        )

    async def go() -> Any:
        if not args.dry_run:
            await _wait_kafka(settings, options, args.timeout)
        return await run_refresh(
            settings,
            options,
            request,
            api_key=api_key,
            progress_stream=sys.stderr,
            progress_interval_s=args.progress_interval,
        )

    try:
        summary = asyncio.run(go())
    except KafkaError as exc:
        return _fail(f"refresh: Kafka failed ({type(exc).__name__})", EXIT_UNAVAILABLE)
    print(summary.text(), file=sys.stderr)
    print(json.dumps(summary.to_json()))
    return 0 if summary.ok else EXIT_FAILURE


def _dlq_filter(args: argparse.Namespace) -> Any:
    from bridge.backfill import parse_since
    from bridge.dlq_tool import DlqFilter

    def when(text: str | None) -> datetime | None:
        return parse_since(text).astimezone(UTC) if text else None

    return DlqFilter(
        reasons=frozenset(args.reason or ()),
        since=when(args.since),
        until=when(args.until),
        source_partitions=frozenset(args.source_partition or ()),
        offset_from=args.offset_from,
        offset_to=args.offset_to,
        order_ids=frozenset(args.order_id or ()),
        limit=args.limit,
    )


def _cmd_dlq(args: argparse.Namespace) -> int:
    return _guarded(lambda: _dlq(args))


def _dlq(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from bridge import dlq_tool
    from bridge.backfill import check_topic
    from bridge.startup import EXIT_CONFIG, EXIT_FAILURE, EXIT_UNAVAILABLE

    coordinates = dlq_tool.parse_coordinates(args.coordinates) if args.action == "show" else None
    dlq_filter = _dlq_filter(args) if args.action != "show" else None
    if args.action == "replay" and not (args.yes or args.dry_run) and not sys.stdin.isatty():
        return _fail(
            "dlq replay: refusing to re-drive without a terminal to confirm on; "
            "add --yes (or look first with --dry-run)",
            EXIT_CONFIG,
        )
    settings, options = _settings_and_options(args)
    dlq_topic = args.topic or settings.topics.dlq

    async def read() -> list[Any]:
        await _wait_kafka(settings, options, args.timeout)
        return await dlq_tool.read_dead_letters(
            settings,
            options,
            topic=dlq_topic,
            partitions=[coordinates[0]] if coordinates else None,
            timeout_s=args.timeout,
        )

    try:
        letters = asyncio.run(read())
    except (KafkaError, TimeoutError) as exc:
        return _fail(f"dlq: reading {dlq_topic!r} failed ({exc})", EXIT_UNAVAILABLE)

    if coordinates is not None:
        found = [d for d in letters if (d.partition, d.offset) == coordinates]
        if not found:
            return _fail(
                f"dlq show: no dead letter at {coordinates[0]}:{coordinates[1]} in {dlq_topic!r}",
                EXIT_FAILURE,
            )
        details = found[0].details()
        if args.output == "json":
            print(json.dumps(details, ensure_ascii=False))
        else:
            print(_show_text(details))
        return 0

    assert dlq_filter is not None
    matched = dlq_filter.select(letters)
    if args.action == "list":
        if args.output == "json":
            for dl in matched:
                print(json.dumps(dl.summary(), ensure_ascii=False))
        else:
            print(dlq_tool.format_table(matched))
            print(f"{len(matched)} of {len(letters)} dead letters in {dlq_topic}", file=sys.stderr)
        return 0

    to_topic = args.to_topic or settings.topics.commands
    plan = dlq_tool.plan_replay(matched)
    for blocker, skipped in sorted(plan.skipped.items()):
        for dl in skipped:
            print(f"dlq replay: skipping {dl.partition}:{dl.offset} ({blocker})", file=sys.stderr)
    if args.dry_run:
        for dl in plan.replayable:
            print(
                f"would replay {dl.partition}:{dl.offset} reason={dl.reason} "
                f"order={dl.order_id or '-'} command={dl.command_id or '-'} -> {to_topic}"
            )
        print(json.dumps({**plan.counts(), "dry_run": True, "topic": to_topic}))
        return 0
    if plan.replayable and not args.yes:
        answer = input(
            f"Replay {len(plan.replayable)} dead letters from {dlq_topic} to {to_topic}? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("dlq replay: nothing replayed", file=sys.stderr)
            return EXIT_FAILURE

    async def republish() -> None:
        await check_topic(settings, options, to_topic, "BRIDGE_TOPICS__COMMANDS")
        await dlq_tool.replay(settings, options, plan, dlq_topic=dlq_topic, topic=to_topic)

    try:
        if plan.replayable:
            asyncio.run(republish())
    except KafkaError as exc:
        return _fail(
            f"dlq replay: Kafka failed ({type(exc).__name__}); nothing or part replayed: "
            "check with dlq list and the commands topic before replaying again",
            EXIT_UNAVAILABLE,
        )
    counts = plan.counts()
    print(
        f"dlq replay: matched {counts['matched']}, replayed {counts['replayed']}, "
        f"skipped {counts['skipped']}, failed {counts['failed']}",
        file=sys.stderr,
    )
    print(json.dumps({**counts, "dry_run": False, "topic": to_topic}))
    return 0 if plan.failed == 0 else EXIT_FAILURE


def _show_text(details: dict[str, Any]) -> str:
    lines = []
    for name in ("dlq", "at", "reason", "orderId", "commandId", "httpStatus", "errorClass"):
        lines.append(f"{name}: {details[name]}")
    src = details["source"]
    lines.append(f"source: {src['topic']} {src['partition']}:{src['offset']}")
    lines.append(f"message: {details['message']}")
    lines.append(f"replayable: {details['replayable']} ({details['replayBlocker'] or 'ok'})")
    for label, name in (("key", "key"), ("value", "value")):
        view = details[name]
        if view is None:
            lines.append(f"{label}: null")
        else:
            lines.append(f"{label} ({view['encoding']}, {view['size']} bytes): {view['text']}")
    for label, name in (("original headers", "originalHeaders"), ("diagnosis", "diagnosisHeaders")):
        lines.append(f"{label}:")
        lines.extend(f"  {n}: {v}" for n, v in details[name])
    return "\n".join(lines)


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


def _cmd_asyncapi(args: argparse.Namespace) -> int:
    from bridge.asyncapi import build_document, dump_document
    from bridge.config import load_settings

    def run() -> int:
        settings = load_settings() if args.from_env else None
        text = dump_document(build_document(settings), args.format)
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
            print(f"wrote {args.output}")
        else:
            sys.stdout.write(text)
        return 0

    return _guarded(run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="order-bridge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"order-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the service (configuration from BRIDGE_* variables)")
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

    _add_refresh(sub)
    _add_dlq(sub)

    p = sub.add_parser("schema", help="print (or --write) the JSON Schema of the commands")
    p.add_argument("--write", nargs="?", const="schemas/order-command.schema.json")
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


REFRESH_HELP = """\
Enqueue one RefreshOrder command per order on the commands topic: the bridge then GETs each
order and publishes its snapshot (and an OrderStateChanged event if its state changed).

  order-bridge refresh --order-id o_A --order-id o_B        # reason "manual"
  order-bridge refresh --all                                # every order of norce/1
  order-bridge refresh --all --merchant m --channel c --since 2026-11-01

--all pages through GET /api/v0/checkout/orders (newest first); --since is applied on each
order's "created" by this command (the list API has no date filter). Every command is sent
with the bridge's idempotent acks=all producer, and the summary comes once all are
acknowledged. Safe to run twice: it enqueues again, and the bridge makes a refresh of an
unchanged order a no-op (no event, result already_applied). Settings are the service's
BRIDGE_* variables (Kafka incl. TLS/SASL, BRIDGE_TOPICS__COMMANDS, BRIDGE_NORCE__*).
Exit codes: 0 all enqueued, 1 some not enqueued or listing failed part-way, 2 usage or
configuration, 3 Kafka unreachable.
"""

DLQ_HELP = """\
Read, inspect and re-drive the dead letters (BRIDGE_TOPICS__DLQ). Reads every partition from
the beginning to the end offsets at the start (no consumer group, read_committed).

  order-bridge dlq list --reason api_rejected --since 2026-12-01T08:00:00Z
  order-bridge dlq list --order-id o_A --output json
  order-bridge dlq show 2:17
  order-bridge dlq replay --reason api_rejected --dry-run
  order-bridge dlq replay --reason api_rejected --yes

replay republishes each dead letter's original key, value and headers to the commands topic
with norce.redrive.{dlq-topic,dlq-partition,dlq-offset,reason,at} headers; it asks for
confirmation on a terminal (--yes skips; without a terminal it refuses unless --yes). Dead
letters without their whole original (no value, truncated, headers dropped) are skipped and
counted. Header values named like credentials are shown as [redacted].
"""


def _add_refresh(sub: Any) -> None:
    p = sub.add_parser(
        "refresh",
        help="enqueue RefreshOrder commands (given orders, or --all: backfill)",
        description=REFRESH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--order-id", action="append", help="an order to refresh (repeatable)")
    which.add_argument("--all", action="store_true", help="every order of the merchant/channel")
    p.add_argument("--merchant", default="norce", help="x-merchant (default: norce)")
    p.add_argument("--channel", default="1", help="x-channel (default: 1)")
    p.add_argument("--since", help="with --all: orders created at or after (date or RFC 3339)")
    p.add_argument("--reason", help="reason field (default: backfill with --all, else manual)")
    p.add_argument("--correlation-id")
    p.add_argument("--dry-run", action="store_true", help="list and count, send nothing")
    p.add_argument("--page-size", type=int, default=100, help="orders per list request (100)")
    p.add_argument("--bootstrap", help="brokers (default: BRIDGE_KAFKA__BOOTSTRAP_SERVERS)")
    p.add_argument("--topic", help="commands topic (default: BRIDGE_TOPICS__COMMANDS)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker")
    p.add_argument(
        "--progress-interval",
        type=float,
        default=5.0,
        help="seconds between progress lines when stderr is not a terminal (5)",
    )
    p.set_defaults(func=_cmd_refresh)


def _add_dlq(sub: Any) -> None:
    p = sub.add_parser(
        "dlq",
        help="list, show or replay dead letters",
        description=DLQ_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--topic", help="DLQ topic (default: BRIDGE_TOPICS__DLQ)")
        q.add_argument("--bootstrap", help="brokers (default: BRIDGE_KAFKA__BOOTSTRAP_SERVERS)")
        q.add_argument("--timeout", type=float, default=60.0, help="seconds for broker and read")

    def filters(q: argparse.ArgumentParser) -> None:
        q.add_argument("--reason", action="append", help="dead-letter reason (repeatable)")
        q.add_argument("--since", help="dead-lettered at or after (date or RFC 3339)")
        q.add_argument("--until", help="dead-lettered at or before (date or RFC 3339)")
        q.add_argument("--source-partition", type=int, action="append", help="commands partition")
        q.add_argument("--offset-from", type=int, help="first commands offset (inclusive)")
        q.add_argument("--offset-to", type=int, help="last commands offset (inclusive)")
        q.add_argument("--order-id", action="append", help="order id (repeatable)")
        q.add_argument("--limit", type=int, help="at most this many dead letters")

    q = actions.add_parser("list", help="one line per dead letter (table or JSON lines)")
    filters(q)
    common(q)
    q.add_argument("--output", choices=("table", "json"), default="table")
    q = actions.add_parser("show", help="everything about one dead letter")
    q.add_argument("coordinates", metavar="PARTITION:OFFSET", help="the dead letter's place")
    common(q)
    q.add_argument("--output", choices=("text", "json"), default="text")
    q = actions.add_parser("replay", help="republish dead letters to the commands topic")
    filters(q)
    common(q)
    q.add_argument("--to-topic", help="where to (default: BRIDGE_TOPICS__COMMANDS)")
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    q.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    p.set_defaults(func=_cmd_dlq)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    return int(args.func(args))
