"""Kafka clients of the bridge: their settings, security options and construction.

Configuration of the consumer and the producers is computed by pure functions
(:func:`consumer_config`, :func:`producer_config`, :func:`transactional_producer_config`, unit
tested); TLS and SASL options come from :func:`kafka_client_options`, shared by every client
(also the admin client and ``order-bridge send``).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.helpers import create_ssl_context

from bridge.config import BridgeSettings
from bridge.errors import ConfigError


def consumer_config(settings: BridgeSettings, rebalance_timeout_ms: int) -> dict[str, Any]:
    """The consumer: manual commits, read_committed, timeouts that fit the revoke deadline."""
    k = settings.kafka
    return {
        "bootstrap_servers": k.bootstrap_servers,
        "group_id": k.group_id,
        "client_id": k.client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_interval_ms": k.max_poll_interval_ms,
        "session_timeout_ms": k.session_timeout_ms,
        "rebalance_timeout_ms": rebalance_timeout_ms,
        "heartbeat_interval_ms": min(3000, k.session_timeout_ms // 3),
        "request_timeout_ms": max(k.request_timeout_ms, k.session_timeout_ms + 5000),
        "max_partition_fetch_bytes": max(1_048_576, settings.processing.max_record_bytes * 4),
    }


def producer_config(settings: BridgeSettings) -> dict[str, Any]:
    """The at-least-once producer: idempotent, acks from all in-sync replicas."""
    k = settings.kafka
    return {
        "bootstrap_servers": k.bootstrap_servers,
        "client_id": f"{k.client_id}-producer",
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": k.linger_ms,
        "request_timeout_ms": k.request_timeout_ms,
    }


def transactional_id(group_id: str, tp: TopicPartition) -> str:
    """Stable per input partition, so a new owner's ``init_transactions`` fences the old one."""
    return f"norce-order-bridge.{group_id}.{tp.topic}.{tp.partition}"


def transactional_producer_config(settings: BridgeSettings, tp: TopicPartition) -> dict[str, Any]:
    """The exactly-once producer of one input partition."""
    k = settings.kafka
    return {
        "bootstrap_servers": k.bootstrap_servers,
        "client_id": f"{k.client_id}-tx-{tp.partition}",
        "transactional_id": transactional_id(k.group_id, tp),
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": k.linger_ms,
        "transaction_timeout_ms": k.transaction_timeout_ms,
        "request_timeout_ms": k.request_timeout_ms,
    }


def build_consumer(
    settings: BridgeSettings, options: dict[str, Any], rebalance_timeout_ms: int
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**consumer_config(settings, rebalance_timeout_ms), **options)


def build_producer(settings: BridgeSettings, options: dict[str, Any]) -> AIOKafkaProducer:
    return AIOKafkaProducer(**producer_config(settings), **options)


def build_transactional_producer(
    settings: BridgeSettings, options: dict[str, Any], tp: TopicPartition
) -> AIOKafkaProducer:
    return AIOKafkaProducer(**transactional_producer_config(settings, tp), **options)


def kafka_client_options(
    settings: BridgeSettings, password: Callable[[], str | None]
) -> dict[str, Any]:
    """Security options for aiokafka clients (TLS, SASL) from the settings.

    TLS files that cannot be loaded raise :class:`~bridge.errors.ConfigError` naming the
    variable and the file (never its content). An encrypted client key is refused instead of
    letting OpenSSL prompt for its passphrase on a terminal.
    """

    def why(exc: Exception) -> str:
        if isinstance(exc, ssl.SSLError):
            return exc.reason or exc.strerror or type(exc).__name__
        if isinstance(exc, OSError):
            return exc.strerror or type(exc).__name__
        return type(exc).__name__

    k = settings.kafka
    opts: dict[str, Any] = {"security_protocol": k.security_protocol}
    if k.security_protocol in ("SSL", "SASL_SSL"):
        try:
            context = create_ssl_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"BRIDGE_KAFKA__SSL_CAFILE: cannot load CA certificates from "
                f"{str(k.ssl_cafile)!r}: {why(exc)}"
            ) from None
        if k.ssl_keyfile is not None and k.ssl_certfile is None:
            raise ConfigError("BRIDGE_KAFKA__SSL_KEYFILE is set without BRIDGE_KAFKA__SSL_CERTFILE")
        if k.ssl_certfile is not None:

            def no_passphrase() -> bytes:
                raise ConfigError(
                    "BRIDGE_KAFKA__SSL_KEYFILE: the client key is encrypted; "
                    "provide an unencrypted key (a mounted Secret)"
                )

            try:
                context.load_cert_chain(
                    str(k.ssl_certfile),
                    str(k.ssl_keyfile) if k.ssl_keyfile else None,
                    password=no_passphrase,
                )
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"BRIDGE_KAFKA__SSL_CERTFILE/SSL_KEYFILE: cannot load the client certificate "
                    f"{str(k.ssl_certfile)!r} and key: {why(exc)}"
                ) from None
        if not k.ssl_check_hostname:
            context.check_hostname = False
        opts["ssl_context"] = context
    if k.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = k.sasl_mechanism
        opts["sasl_plain_username"] = k.sasl_username
        opts["sasl_plain_password"] = password()
    return opts
