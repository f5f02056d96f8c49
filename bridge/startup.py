"""Start-up checks of the bridge's dependencies, and the exit codes of the command line.

Exit codes (documented in the README):

======  ==========================================================================
``0``   clean stop (drained after SIGTERM/SIGINT), or a command that succeeded
``1``   the service failed after it had started (a bug or a fatal runtime error)
``2``   configuration: a bad setting, an unreadable secret or TLS file, schemas that
        do not load, missing topics with creation disabled, a port already in use
``3``   a dependency was unreachable within the start-up deadline, or refused the
        bridge (SASL credentials, TLS certificate, authorization)
``130`` a second signal during the drain (exit at once)
======  ==========================================================================

Before anything consumes, :func:`wait_for_kafka` opens one connection per attempt to the
bootstrap servers with exactly the security options the clients will use (TCP, then TLS, then
SASL), so each kind of failure is told apart: an unreachable broker is retried with backoff until
``BRIDGE_KAFKA__STARTUP_DEADLINE_S`` (the health server is already up: ``/healthz`` answers and
``/readyz`` says why the bridge is not ready), while a refusal (wrong password, untrusted
certificate) cannot heal by waiting and fails at once. Messages name what failed and the setting
to look at, never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from bridge.errors import BridgeError

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "KafkaStartupError",
    "StartupError",
    "check_kafka_once",
    "wait_for_kafka",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3

log = logging.getLogger("bridge.startup")

_MAX_BACKOFF_S = 5.0
_LOG_EVERY_S = 10.0
_CLOSE_WAIT_S = 5.0
"""How long a start-up probe waits for its connection to close (a TLS close is a round trip)."""


class StartupError(BridgeError):
    """A dependency was unreachable or refused the bridge at start-up (exit code 3)."""

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(message)
        self.message = message
        self.refused = refused

    def __str__(self) -> str:
        return self.message


class KafkaStartupError(StartupError, KafkaConnectionError):  # type: ignore[misc]
    """Kafka could not be reached or refused the connection at start-up.

    Also a :class:`aiokafka.errors.KafkaConnectionError`, which is what aiokafka itself raises
    when it cannot bootstrap, so callers that handle that keep working.
    """

    def __str__(self) -> str:
        return self.message


class _Unreachable(Exception):
    """One attempt failed in a way that waiting may heal (nothing listening, a timeout)."""


def _hosts(bootstrap_servers: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for item in bootstrap_servers.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            host, port = item, "9092"
        out.append((host.strip("[]"), int(port)))
    return out


def _refusal(exc: BaseException, options: dict[str, Any]) -> str | None:
    """The one-line reason when ``exc`` is a refusal that waiting cannot heal, else None."""
    mechanism = options.get("sasl_mechanism")
    user = options.get("sasl_plain_username")
    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"Authentication failed: the broker rejected the SASL credentials of user {user!r} "
            f"({mechanism}); check BRIDGE_KAFKA__SASL_USERNAME and BRIDGE_KAFKA__SASL_PASSWORD "
            "(or BRIDGE_KAFKA__SASL_PASSWORD_FILE)"
        )
    if isinstance(exc, UnsupportedSaslMechanismError | IllegalSaslStateError):
        return (
            f"the broker does not accept SASL mechanism {mechanism}; "
            "check BRIDGE_KAFKA__SASL_MECHANISM and BRIDGE_KAFKA__SECURITY_PROTOCOL"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = f"{exc.reason or 'CERTIFICATE_VERIFY_FAILED'}: {exc.verify_message or 'not verified'}"
        if "mismatch" in why.lower() or "hostname" in why.lower():
            hint = (
                "BRIDGE_KAFKA__BOOTSTRAP_SERVERS must use a host name or address the broker's "
                "certificate names (BRIDGE_KAFKA__SSL_CHECK_HOSTNAME=false skips this check)"
            )
        else:
            hint = "check BRIDGE_KAFKA__SSL_CAFILE (the CA that signed the broker's certificate)"
        return f"TLS: the broker's certificate was not trusted ({why}); {hint}"
    if isinstance(exc, ssl.SSLError):
        why = exc.reason or type(exc).__name__
        return (
            f"TLS handshake with the broker failed ({why}); check BRIDGE_KAFKA__SECURITY_PROTOCOL "
            "(does the listener speak TLS?) and BRIDGE_KAFKA__SSL_* files"
        )
    return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):  # its errno is getaddrinfo's (EAI_*), not errno's
        return f"host name not resolved ({exc.strerror or 'getaddrinfo failed'})"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


async def check_kafka_once(
    bootstrap_servers: str, options: dict[str, Any], *, timeout_s: float
) -> None:
    """Connect once (TCP, TLS, SASL) to each bootstrap server until one accepts.

    Raises :class:`KafkaStartupError` (``refused=True``) when a broker refused the bridge, or
    ``_Unreachable`` when none could be reached.
    """
    hosts = _hosts(bootstrap_servers)
    if not hosts:
        raise KafkaStartupError(
            "no Kafka bootstrap server configured; set BRIDGE_KAFKA__BOOTSTRAP_SERVERS",
            refused=True,
        )
    reasons: list[str] = []
    for host, port in hosts:
        opened = False

        def on_close(_conn: object, _reason: object) -> None:
            nonlocal opened
            opened = True  # aiokafka calls it only for a connection that got its socket

        conn = AIOKafkaConnection(
            host, port, request_timeout_ms=int(timeout_s * 1000), on_close=on_close, **options
        )
        try:
            await asyncio.wait_for(conn.connect(), timeout_s)
        except (OSError, KafkaError, TimeoutError, ValueError) as exc:
            if opened:
                await _closed(conn)
            refused = _refusal(exc, options)
            if refused is not None:
                log.warning(
                    "Kafka refused the connection: %s",
                    refused,
                    extra={"broker": f"{host}:{port}", "error": type(exc).__name__},
                )
                raise KafkaStartupError(
                    f"Kafka at {host}:{port}: {refused}", refused=True
                ) from None
            reasons.append(f"{host}:{port}: {_why(exc)}")
            continue
        await _closed(conn)
        return
    raise _Unreachable("; ".join(reasons))


async def _closed(conn: AIOKafkaConnection) -> None:
    """Close the probe connection and wait (at most ``_CLOSE_WAIT_S``) until its socket is.

    aiokafka's ``close()`` only starts it: over TLS the close waits for the broker's
    ``close_notify``, on the event loop. A caller that returns at once (the command line exiting
    on a refusal, an application that embeds the bridge closing its loop) would leave the socket
    half closed, and an "unclosed transport" warning behind.
    """
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(conn.close()), _CLOSE_WAIT_S)


async def wait_for_kafka(
    bootstrap_servers: str,
    options: dict[str, Any],
    *,
    deadline_s: float,
    attempt_timeout_s: float,
    on_waiting: Callable[[str], None] | None = None,
    servers_hint: str = "BRIDGE_KAFKA__BOOTSTRAP_SERVERS",
    deadline_hint: str = "BRIDGE_KAFKA__STARTUP_DEADLINE_S",
) -> None:
    """Retry :func:`check_kafka_once` with backoff until it succeeds or ``deadline_s`` passes.

    ``on_waiting`` is told a short, configuration-free reason while the bridge waits (for
    ``/readyz``). Raises :class:`KafkaStartupError` when refused or past the deadline, naming
    ``servers_hint`` and ``deadline_hint`` (what sets the brokers and the wait: the settings, or
    an operator command's flags).
    """
    started = time.monotonic()
    deadline = started + deadline_s
    delay = 0.2
    last_log = -_LOG_EVERY_S
    attempts = 0
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        try:
            await check_kafka_once(
                bootstrap_servers, options, timeout_s=max(0.5, min(attempt_timeout_s, remaining))
            )
            if attempts > 1:
                log.info(
                    "Kafka reachable",
                    extra={"attempts": attempts, "waited_s": round(time.monotonic() - started, 1)},
                )
            return
        except _Unreachable as exc:
            now = time.monotonic()
            if now >= deadline:
                raise KafkaStartupError(
                    f"Kafka unreachable for {deadline_s:g}s ({exc}); check {servers_hint} "
                    f"and that the brokers are up and reachable (the wait is {deadline_hint})",
                    refused=False,
                ) from None
            if on_waiting is not None:
                on_waiting(f"waiting for Kafka: broker unreachable (attempt {attempts})")
            if now - last_log >= _LOG_EVERY_S:
                last_log = now
                log.warning(
                    "Kafka unreachable; retrying until the start-up deadline",
                    extra={
                        "why": str(exc),
                        "attempts": attempts,
                        "deadline_in_s": round(deadline - now, 1),
                    },
                )
            await asyncio.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(delay * 2, _MAX_BACKOFF_S)
