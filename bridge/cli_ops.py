"""``order-bridge refresh`` (backfill) and ``order-bridge dlq list|show|replay``: the operator
subcommands (the work is in :mod:`bridge.backfill` and :mod:`bridge.dlq_tool`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from bridge.cli_common import fail, guarded, settings_and_options, wait_kafka

__all__ = ["add_dlq", "add_refresh", "show_text"]

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


def _cmd_refresh(args: argparse.Namespace) -> int:
    return guarded(lambda: _refresh(args))


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
    from bridge.startup import EXIT_FAILURE, EXIT_UNAVAILABLE, StartupError

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
    settings, options = settings_and_options(args)
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
            await wait_kafka(settings, options, args.timeout)
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
    except StartupError:
        raise  # unreachable or refused: its message says which and what to check (exit 3)
    except KafkaError as exc:
        return fail(
            f"refresh: Kafka failed after start ({type(exc).__name__}); the commands the "
            "summary did not count may not have been sent: run the same refresh again "
            "(RefreshOrder is idempotent)",
            EXIT_UNAVAILABLE,
        )
    print(summary.text(), file=sys.stderr)
    print(json.dumps(summary.to_json()))
    return 0 if summary.ok else EXIT_FAILURE


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _dlq_filter(args: argparse.Namespace) -> Any:
    from bridge.backfill import parse_since
    from bridge.dlq_tool import DlqFilter
    from bridge.errors import ConfigError
    from bridge.vocabulary import DeadLetterReason

    def when(text: str | None, flag: str) -> datetime | None:
        return parse_since(text, f"dlq {args.action}: {flag}").astimezone(UTC) if text else None

    known = {r.value for r in DeadLetterReason}
    unknown = sorted(set(args.reason or ()) - known)
    if unknown:  # a misspelt filter would match nothing, and a replay would re-drive nothing
        raise ConfigError(
            f"dlq {args.action}: --reason {', '.join(map(repr, unknown))} is not a dead-letter "
            f"reason (one of: {', '.join(sorted(known))})"
        )
    return DlqFilter(
        reasons=frozenset(args.reason or ()),
        since=when(args.since, "--since"),
        until=when(args.until, "--until"),
        source_partitions=frozenset(args.source_partition or ()),
        offset_from=args.offset_from,
        offset_to=args.offset_to,
        order_ids=frozenset(args.order_id or ()),
        limit=args.limit,
    )


def _cmd_dlq(args: argparse.Namespace) -> int:
    return guarded(lambda: _dlq(args))


def _dlq(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from bridge import dlq_tool
    from bridge.backfill import check_topic
    from bridge.startup import EXIT_CONFIG, EXIT_FAILURE, EXIT_UNAVAILABLE

    coordinates = dlq_tool.parse_coordinates(args.coordinates) if args.action == "show" else None
    dlq_filter = _dlq_filter(args) if args.action != "show" else None
    if args.action == "replay" and not (args.yes or args.dry_run) and not sys.stdin.isatty():
        return fail(
            "dlq replay: refusing to re-drive without a terminal to confirm on; "
            "add --yes (or look first with --dry-run)",
            EXIT_CONFIG,
        )
    settings, options = settings_and_options(args)
    dlq_topic = args.topic or settings.topics.dlq

    async def read() -> list[Any]:
        await wait_kafka(settings, options, args.timeout)
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
        return fail(f"dlq: reading {dlq_topic!r} failed ({exc})", EXIT_UNAVAILABLE)

    if coordinates is not None:
        found = [d for d in letters if (d.partition, d.offset) == coordinates]
        if not found:
            return fail(
                f"dlq show: no dead letter at {coordinates[0]}:{coordinates[1]} in {dlq_topic!r}",
                EXIT_FAILURE,
            )
        details = found[0].details()
        if args.output == "json":
            print(json.dumps(details, ensure_ascii=False))
        else:
            print(show_text(details))
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
        return fail(
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


def show_text(details: dict[str, Any]) -> str:
    """``dlq show``: one line per field, terminal-safe (a value's newlines shown as \\n)."""
    from bridge.dlq_tool import terminal_safe

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
    return "\n".join(terminal_safe(line) for line in lines)


def add_refresh(sub: Any) -> None:
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


def add_dlq(sub: Any) -> None:
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
        q.add_argument("--limit", type=_positive, help="at most this many dead letters")

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
