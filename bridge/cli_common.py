"""What every ``order-bridge`` subcommand shares: one-line failures with exit codes, and the
service's settings and Kafka options for the operator commands."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "fail",
    "first_error",
    "guarded",
    "plain",
    "settings_and_options",
    "wait_kafka",
    "write_output",
]

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain(docstring: str | None) -> str:
    """A module docstring as ``--help`` text: reST roles and literals as plain words."""
    return _ROLE.sub(r"\1", docstring or "").replace("``", "")


def write_output(command: str, path: str, text: str) -> int:
    """Write a command's output file; a path that cannot be written is one line, exit 2."""
    from bridge.startup import EXIT_CONFIG

    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return fail(f"{command}: cannot write {path}: {reason}", EXIT_CONFIG)
    print(f"wrote {path}")
    return 0


def fail(message: str, code: int) -> int:
    """The one line a start-up failure prints (no traceback), then the exit code."""
    first, *rest = str(message).splitlines() or [""]
    print(f"order-bridge: {first}", file=sys.stderr)
    for line in rest:  # one line per problem, as the configuration check lists them
        print(line, file=sys.stderr)
    return code


def guarded(run: Callable[[], int]) -> int:
    """Run a command; configuration and start-up failures become one line and an exit code."""
    from bridge.errors import ConfigError
    from bridge.startup import EXIT_CONFIG, EXIT_UNAVAILABLE, StartupError

    try:
        return run()
    except ConfigError as exc:
        return fail(str(exc), EXIT_CONFIG)
    except StartupError as exc:
        return fail(str(exc), EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        return 130


def first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return type(exc).__name__


def settings_and_options(
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


async def wait_kafka(settings: Any, options: dict[str, Any], deadline_s: float) -> None:
    """Wait (at most ``deadline_s``, the command's ``--timeout``) until a broker accepts; the
    failure names the command's flags beside the settings they override."""
    from bridge.startup import wait_for_kafka

    k = settings.kafka
    await wait_for_kafka(
        k.bootstrap_servers,
        options,
        deadline_s=deadline_s,
        attempt_timeout_s=min(k.request_timeout_ms / 1000, deadline_s),
        servers_hint="--bootstrap (or BRIDGE_KAFKA__BOOTSTRAP_SERVERS)",
        deadline_hint="--timeout",
    )
