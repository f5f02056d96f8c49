"""Dead letters: the original record plus error headers, bounded, never failing on its content.

:func:`dead_letter` builds one; :func:`invalid_record`, :func:`internal_error` and
:func:`internal_failure` are the three dispositions of a record that ends in one without an API
answer (bad input, the last resort, a valid command that kept failing unexpectedly). The time is
always passed in (the processor's injected clock); nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import hashlib
import traceback
from datetime import datetime
from typing import Any

from bridge.codec import AvroCodec
from bridge.commands import (
    AVRO_CONTENT_TYPES,
    COMMAND_TYPES,
    AnyCommand,
    decode_avro_command,
    media_type,
)
from bridge.errors import InvalidCommandError, RecordHandlingError
from bridge.events import format_rfc3339
from bridge.jsonstrict import JsonInputError, loads_strict
from bridge.outputs import Disposition, Headers, Ids, Output, SourceRecord, result_output
from bridge.vocabulary import DeadLetterReason, Outcome, OutputKind

__all__ = [
    "MAX_DEAD_LETTER_BYTES",
    "STAGE_API",
    "STAGE_INTERNAL",
    "STAGE_PARSE",
    "best_effort_ids",
    "check_record_limits",
    "clip",
    "dead_letter",
    "format_traceback",
    "internal_error",
    "internal_failure",
    "invalid_record",
    "record_size",
]

STAGE_PARSE = "VALUE_CONVERTER"
STAGE_API = "TASK_PUT"
STAGE_INTERNAL = "INTERNAL"
MAX_DEAD_LETTER_BYTES = 1_000_000
"""Largest dead letter (key + value + headers) the bridge publishes.

Below aiokafka's default ``max_request_size`` (1,048,576) and the broker's default
``message.max.bytes`` (1,048,588) with room for the record batch overhead; see
:func:`check_record_limits` for the start-up check of ``max_record_bytes`` against them."""
_RECORD_OVERHEAD = 128  # record batch header and per-record varints, generously


def clip(text: str, limit: int = 1000) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """An upper estimate of one record's size in a produce request."""
    size = _RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    for name, hv in headers:
        size += 10 + len(name.encode("utf-8", "replace")) + len(hv or b"")
    return size


def check_record_limits(
    max_record_bytes: int, *, producer_max_request_size: int, topic_max_message_bytes: int | None
) -> list[str]:
    """Problems with ``max_record_bytes`` against the producer's and the DLQ topic's limits.

    A record the bridge accepts must fit, whole, in a dead letter (plus its error headers);
    otherwise it would be stored truncated. Returns one line per problem (empty: all good).
    """
    problems = []
    need = max_record_bytes + 16 * 1024  # room for key and error headers
    if need > producer_max_request_size:
        problems.append(
            f"BRIDGE_PROCESSING__MAX_RECORD_BYTES={max_record_bytes} leaves no room for a dead "
            f"letter within the producer's max_request_size={producer_max_request_size}"
        )
    if topic_max_message_bytes is not None and need > topic_max_message_bytes:
        problems.append(
            f"BRIDGE_PROCESSING__MAX_RECORD_BYTES={max_record_bytes} leaves no room for a dead "
            f"letter within the DLQ topic's max.message.bytes={topic_max_message_bytes}"
        )
    return problems


def dead_letter(
    src: SourceRecord,
    reason: str,
    exc: BaseException,
    *,
    stage: str,
    now: datetime,
    http_status: int | None = None,
    attempts: int | None = None,
    ids: Ids | AnyCommand | None = None,
    message: str | None = None,
    max_bytes: int = MAX_DEAD_LETTER_BYTES,
) -> Output:
    """The original record plus error headers modelled on Kafka Connect's ``__connect.errors.*``.

    Header values are kept exactly (a null header stays null). When the whole would exceed
    ``max_bytes`` the value is cut to fit and ``__bridge.dlq.truncated``,
    ``__bridge.dlq.original.size`` and ``__bridge.dlq.original.sha256`` say so: a dead letter is
    always publishable, never retried forever. Never raises for any record content.
    ``now`` is the ``__connect.errors.timestamp``.
    """
    if message is None:
        message = exc.message if isinstance(exc, InvalidCommandError) else str(exc)
    headers: Headers = list(src.headers)
    headers += [
        ("__connect.errors.topic", src.topic.encode("utf-8", "replace")),
        ("__connect.errors.partition", str(src.partition).encode()),
        ("__connect.errors.offset", str(src.offset).encode()),
        ("__connect.errors.stage", stage.encode()),
        (
            "__connect.errors.class.name",
            f"{type(exc).__module__}.{type(exc).__qualname__}".encode("utf-8", "replace"),
        ),
        ("__connect.errors.exception.message", clip(message).encode("utf-8", "replace")),
        ("__connect.errors.reason", str(reason).encode("utf-8", "replace")),
        ("__connect.errors.timestamp", format_rfc3339(now).encode()),
    ]
    if http_status is not None:
        headers.append(("__connect.errors.http.status", str(http_status).encode()))
    if attempts is not None:
        headers.append(("__connect.errors.attempts", str(attempts).encode()))
    if ids is not None:
        if not isinstance(ids, Ids):
            ids = Ids.of(ids)
        headers += ids.headers(None)
    value = src.value
    key = src.key
    if record_size(key, value, headers) > max_bytes:
        original = value or b""
        headers += [
            ("__bridge.dlq.truncated", b"true"),
            ("__bridge.dlq.original.size", str(len(original)).encode()),
            ("__bridge.dlq.original.sha256", hashlib.sha256(original).hexdigest().encode()),
        ]
        if key is not None and len(key) > max_bytes // 4:
            headers.append(("__bridge.dlq.original.key.size", str(len(key)).encode()))
            key = key[: max_bytes // 4]
        if record_size(key, b"", headers) > max_bytes:
            # Even the headers are too large (huge original headers): keep only the bridge's.
            headers = [h for h in headers if h[0].startswith(("__connect.", "__bridge.", "norce."))]
            headers.append(("__bridge.dlq.original.headers.dropped", b"true"))
        value = original[: max(0, max_bytes - record_size(key, b"", headers))]
    return Output(OutputKind.DLQ, key, None, value, headers)


def format_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` as text (for the last-resort log line)."""
    return "".join(traceback.format_exception(exc))


def _encodable(value: object, limit: int) -> str | None:
    """``value`` if it is a string that is valid Unicode (no lone surrogate), clipped, else None."""
    if not isinstance(value, str):
        return None
    clipped = value[:limit]
    try:
        clipped.encode("utf-8", "strict")
    except UnicodeEncodeError:
        return None
    return clipped


def best_effort_ids(
    value: bytes | None,
    headers: tuple[tuple[str, bytes | None], ...] | Headers = (),
    codec: AvroCodec | None = None,
) -> Ids | None:
    """commandId & co. of an invalid command, read with the command's own strict parsers.

    JSON is read with :func:`bridge.jsonstrict.loads_strict` (bounded, strict); Avro (by
    content type or marker) with the codec. None when there is no readable string commandId.
    Ids that are not valid Unicode are dropped and listed in ``dropped``. Never raises.
    """
    if not value:
        return None
    raw: Any = None
    ctype, _ = media_type(list(headers))
    try:
        if ctype in AVRO_CONTENT_TYPES or (
            ctype is None
            and codec is not None
            and (codec.is_single_object(value) or codec.is_confluent(value))
        ):
            raw = decode_avro_command(value, codec)
        else:
            raw = loads_strict(value)
    except (InvalidCommandError, JsonInputError):
        return None
    if not isinstance(raw, dict):
        return None
    dropped: list[str] = []

    def text(name: str, limit: int = 128) -> str:
        v = raw.get(name)
        if v is None:
            return ""
        ok = _encodable(v, limit)
        if ok is None:
            dropped.append(name)
            return ""
        return ok

    command_id = text("commandId")
    if not command_id:
        return None
    kind = raw.get("type")
    return Ids(
        command_id=command_id,
        type=kind if kind in COMMAND_TYPES else "unknown",
        order_id=text("orderId"),
        merchant=text("merchant", 64),
        channel=text("channel", 64),
        correlation_id=text("correlationId") or None,
        dropped=tuple(dropped),
    )


def invalid_record(
    src: SourceRecord,
    error: InvalidCommandError,
    *,
    now: datetime,
    codec: AvroCodec | None,
    max_bytes: int = MAX_DEAD_LETTER_BYTES,
) -> Disposition:
    """An invalid record: dead letter, plus a failed result when its command id is readable.

    The ids are read with the same strict parsers as the command (JSON or Avro), so this never
    raises on hostile bytes; ids that cannot be encoded are left out.
    """
    if isinstance(error, RecordHandlingError):
        return internal_error(src, error.cause, now=now, codec=codec, max_bytes=max_bytes)
    reason = DeadLetterReason(error.reason)
    ids = best_effort_ids(src.value, src.headers, codec)
    outputs = [
        dead_letter(src, reason, error, stage=STAGE_PARSE, now=now, ids=ids, max_bytes=max_bytes)
    ]
    if ids is not None and ids.command_id:
        detail = f"{error.reason}: {error.message}"
        outputs.append(result_output(ids, src, Outcome.FAILED, detail, now=now))
    return Disposition(
        Outcome.FAILED, ids.type if ids else "unknown", outputs, error.message, reason
    )


def internal_failure(
    cmd: AnyCommand,
    src: SourceRecord,
    exc: BaseException,
    *,
    now: datetime,
    max_bytes: int = MAX_DEAD_LETTER_BYTES,
) -> Disposition:
    """A command that kept failing for an unexpected reason (retried first): dead letter."""
    reason = DeadLetterReason.PROCESSING_ERROR
    ids = Ids.of(cmd)
    detail = f"{reason}: {type(exc).__name__}"
    dlq = dead_letter(src, reason, exc, stage=STAGE_API, now=now, ids=ids, max_bytes=max_bytes)
    result = result_output(ids, src, Outcome.FAILED, detail, now=now)
    return Disposition(Outcome.FAILED, cmd.type, [dlq, result], detail, reason)


def internal_error(
    src: SourceRecord,
    exc: BaseException,
    *,
    now: datetime,
    codec: AvroCodec | None,
    with_result: bool = True,
    max_bytes: int = MAX_DEAD_LETTER_BYTES,
) -> Disposition:
    """The last resort for a record whose handling failed in a way nothing else covers.

    The raw record is dead-lettered (reason ``internal_error``, the exception class in the
    headers) with a ``failed`` result when a command id can be read. Building it cannot fail
    on the record's content: ids come from the strict parsers and are dropped when they are
    not encodable, and the dead letter is bounded. ``with_result=False`` gives the dead
    letter alone (used when even publishing the result failed).
    """
    ids: Ids | None = None
    try:
        ids = best_effort_ids(src.value, src.headers, codec)
    except Exception:
        ids = None
    reason = DeadLetterReason.INTERNAL_ERROR
    detail = f"{reason}: {type(exc).__name__}"
    if ids is not None and ids.dropped:
        detail += f" (unencodable ids left out: {', '.join(ids.dropped)})"
    try:
        dlq = dead_letter(
            src,
            reason,
            exc,
            stage=STAGE_INTERNAL,
            now=now,
            ids=ids,
            message=detail,
            max_bytes=max_bytes,
        )
    except Exception:  # even the diagnosis failed: the bare minimum, which cannot fail
        ids = None
        dlq = Output(
            OutputKind.DLQ,
            None,
            None,
            (src.value or b"")[: max_bytes // 2],
            [
                ("__connect.errors.reason", reason.encode()),
                ("__connect.errors.partition", str(src.partition).encode()),
                ("__connect.errors.offset", str(src.offset).encode()),
            ],
        )
    outputs = [dlq]
    if with_result and ids is not None and ids.command_id:
        outputs.append(result_output(ids, src, Outcome.FAILED, detail, now=now))
    return Disposition(Outcome.FAILED, ids.type if ids else "unknown", outputs, detail, reason)
