"""Pure handling of one command's outcome: encoding its outputs, accounting it in the metrics.

Metric labels name a topic's *role* (``TOPIC_ROLES``), never its configured name: no
configuration appears in ``/metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from bridge.codec import SINGLE_OBJECT_CONTENT_TYPE as AVRO_CONTENT_TYPE
from bridge.codec import AvroCodec
from bridge.metrics import BridgeMetrics
from bridge.outputs import Disposition, new_order_state
from bridge.vocabulary import Outcome, OutputKind

log = logging.getLogger("bridge.runtime")

EncodedRecord = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes | None]], int | None]
"""(topic, key, value, headers, partition): partition None = the producer's partitioner."""

ORDER_STATE_TOPIC: Final = "order_state"
"""The key of the order state store's topic in the ``topics`` mapping."""


def encode_outputs(
    outcome: Disposition,
    topics: Mapping[str, str],
    codec: AvroCodec,
    *,
    state_partition: int | None = None,
) -> list[EncodedRecord]:
    """The records to publish for ``outcome``: (topic, key, value, headers, partition) each.

    Tombstones stay None and dead letters keep the original bytes; everything else is encoded
    with its Avro schema (a value the schema cannot carry raises). When the outcome publishes
    an order's snapshot or tombstone and ``topics`` names the order state store, the order's new
    state record goes last, to partition ``state_partition`` (the command's source partition,
    :mod:`bridge.order_state`).
    """
    out: list[EncodedRecord] = []
    # Outputs are built with the single-object content type; Confluent framing relabels them.
    relabel = codec.content_type.encode() if codec.content_type != AVRO_CONTENT_TYPE else None
    for o in outcome.outputs:
        headers = o.headers
        if o.kind == OutputKind.DLQ or o.value is None or isinstance(o.value, bytes):
            value = o.value if isinstance(o.value, bytes) else None
        elif o.schema is None:
            raise ValueError(f"a {o.kind} output without a schema")
        else:
            value = codec.encode(o.schema, o.value)
            if relabel is not None:
                headers = [(k, relabel if k == "content-type" else v) for k, v in headers]
        out.append((topics[o.kind], o.key, value, headers, None))
    state = new_order_state(outcome)
    state_topic = topics.get(ORDER_STATE_TOPIC)
    if state is not None and state_topic is not None and state_partition is not None:
        state_headers: list[tuple[str, bytes | None]] = [
            ("norce.command.id", state.command_id.encode())
        ]
        key = next((o.key for o in outcome.outputs if o.state is not None), None)
        out.append((state_topic, key, state.encode(), state_headers, state_partition))
    return out


def account_outcome(
    metrics: BridgeMetrics,
    counters: dict[str, int],
    outcome: Disposition,
    *,
    n_records: int,
    seconds: float,
    age_s: float | None,
    where: Mapping[str, int],
) -> None:
    """Count one handled record once, under its outcome (a dead-lettered one is ``failed``).

    ``age_s`` is the time since the record's timestamp (None when it has none); ``where`` (its
    partition and offset) only goes to the log.
    """
    metrics.command_finished(outcome.command_type, outcome.outcome, seconds)
    counters[outcome.outcome] = counters.get(outcome.outcome, 0) + 1
    counters["published"] = counters.get("published", 0) + n_records
    if outcome.dead_letter_reason is not None:
        # Counted once above under its outcome (failed); dead letters by reason only here.
        metrics.dead_lettered(outcome.dead_letter_reason)
        counters["dead_lettered"] = counters.get("dead_lettered", 0) + 1
    for o in outcome.outputs:
        metrics.published(o.kind.role)
    if age_s is not None:
        metrics.e2e_latency(max(0.0, age_s))
    if outcome.outcome.succeeded:
        metrics.command_succeeded_now()
    if log.isEnabledFor(logging.DEBUG):  # the extra dict costs even when DEBUG is off
        log.debug("command handled", extra={"outcome": outcome.outcome, **where})
    if outcome.outcome == Outcome.FAILED:
        log.info(
            "command failed",
            extra={
                "outcome": outcome.outcome,
                "reason": outcome.reason,
                "dead_letter_reason": outcome.dead_letter_reason,
                **where,
            },
        )
