"""Execute one command against the Norce API and say what to publish: sans Kafka, sans httpx.

``Processor.handle`` takes a parsed command and its source record and returns an
:class:`Outcome`: the outcome name, and the records to publish (snapshot or tombstone, event,
command result, dead letter). The runtime publishes them and only then marks the record done.

Errors: an API error whose ``command_fault`` is set (400, 404 on set-state) ends in a dead letter
plus a ``failed`` result. Any other API error (Norce down, 429, timeouts, bad credentials) is
*systemic*: it propagates, and the runtime holds the command and retries it later (circuit
breaker), so an outage never burns commands into the dead-letter topic.

Previous status of an order, for state-change events: the bridge remembers the status it last
saw for each order (bounded LRU). When it has none, it reads the order before changing it (one
extra GET for the first command of an order in this process); a same-state request is then
reported as ``already_applied`` without calling PUT.

Replays (see :mod:`bridge.offsets`): a record that may already have reached the API before a
crash or rebalance is handled with ``suspect=True``. Its order's transition history since the
dispatch window opened is matched against the commands in offset order (:class:`_Recovery`); a
command found there is reported ``already_applied`` (its snapshot and event are re-emitted, since
they may have been lost) instead of being executed again, so a replay never moves an order
backwards.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from bridge.commands import DeleteOrder, SetOrderState, is_expired
from bridge.errors import (
    InvalidCommandError,
    NorceApiError,
    NorceInvalidRequestError,
    NorceNotFoundError,
)
from bridge.events import (
    command_result,
    format_rfc3339,
    latest_transition_at,
    order_deleted_event,
    parse_rfc3339,
    snapshot_from_order,
    state_changed_event,
)

T = TypeVar("T", covariant=True)

OutputKind = Literal["snapshot", "event", "result", "dlq"]
Headers = list[tuple[str, bytes]]
STAGE_PARSE = "VALUE_CONVERTER"
STAGE_API = "TASK_PUT"


class ApiResultLike(Protocol[T]):
    @property
    def value(self) -> T: ...
    @property
    def status(self) -> int: ...
    @property
    def attempts(self) -> int: ...


class OrderApi(Protocol):
    """The slice of the Norce client the processor needs."""

    async def get_order_json(
        self, order_id: str, *, merchant: str, channel: str
    ) -> ApiResultLike[dict[str, Any]]: ...

    async def set_state(
        self, order_id: str, status: str, *, merchant: str, channel: str
    ) -> ApiResultLike[None]: ...

    async def delete_order(
        self, order_id: str, *, merchant: str, channel: str
    ) -> ApiResultLike[None]: ...


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """Where a command came from (for results and dead letters)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


@dataclass(slots=True)
class Output:
    """One record to publish; ``value`` None is a tombstone, DLQ values are the raw bytes."""

    kind: OutputKind
    key: bytes | None
    schema: str | None
    value: dict[str, Any] | bytes | None
    headers: Headers = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    outcome: str  # applied | already_applied | rejected | expired | failed
    command_type: str
    outputs: list[Output]
    reason: str | None = None
    dead_letter_reason: str | None = None


def _status_of(order: dict[str, Any]) -> str | None:
    state = order.get("state")
    if isinstance(state, dict):
        status = state.get("currentStatus")
        return status if isinstance(status, str) else None
    return None


def _transitions(order: dict[str, Any]) -> list[tuple[str, datetime | None]]:
    state = order.get("state")
    raw = state.get("transitions") if isinstance(state, dict) else None
    out: list[tuple[str, datetime | None]] = []
    for t in raw if isinstance(raw, list) else []:
        if isinstance(t, dict) and isinstance(t.get("status"), str):
            ts = t.get("timeStamp")
            out.append((t["status"], parse_rfc3339(ts) if isinstance(ts, str) else None))
    return out


@dataclass
class _Recovery:
    """Per-order matching of suspect commands against the transitions since the window opened."""

    position_status: str | None
    since: list[tuple[str, datetime | None]]
    index: int = 0

    @classmethod
    def from_order(cls, order: dict[str, Any], window_start: datetime) -> _Recovery:
        transitions = _transitions(order)
        before = [t for t in transitions if t[1] is not None and t[1] < window_start]
        since = [t for t in transitions if t[1] is None or t[1] >= window_start]
        position: str | None
        if before:
            position = before[-1][0]
        elif since:  # created inside the window: its first transition is the creation state
            position, since = since[0][0], since[1:]
        else:
            position = _status_of(order)
        return cls(position_status=position, since=since)

    def claim(self, target: str) -> tuple[bool, str | None, str | None]:
        """(already applied?, previous status, transition time) for the next command's target."""
        if target == self.position_status:
            return True, target, None
        if self.index < len(self.since) and self.since[self.index][0] == target:
            previous = self.position_status
            ts = self.since[self.index][1]
            self.index += 1
            self.position_status = target
            return True, previous, format_rfc3339(ts) if ts else None
        return False, None, None


_NOT_RECOVERING = object()
PUT_DONE_LIMIT = 10_000


class Processor:
    """Turns commands into API calls and output records (one instance per bridge)."""

    def __init__(
        self,
        api: OrderApi,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_command_age_s: float | None = None,
        status_cache_size: int = 50_000,
    ) -> None:
        self._api = api
        self._clock = clock
        self._max_age = max_command_age_s
        # order id -> (status, number of transitions) as last seen by this process
        self._cache: OrderedDict[str, tuple[str | None, int]] = OrderedDict()
        self._cache_size = status_cache_size
        # (scope, order id) -> recovery state; the scope is the partition assignment (topic,
        # partition, epoch), so a partition assigned again starts its recovery afresh.
        self._recovery: dict[tuple[Hashable, str], _Recovery | object] = {}
        # command id -> the bridge's view of the order before a PUT that succeeded, kept while
        # the command is retried after a later call (the re-fetch) failed.
        self._put_done: OrderedDict[str, tuple[str | None, int]] = OrderedDict()

    # -- status cache ---------------------------------------------------------------------

    def _remember(self, order_id: str, order: dict[str, Any] | None) -> tuple[str | None, int]:
        if order is None:
            self._cache.pop(order_id, None)
            return None, 0
        view = (_status_of(order), len(_transitions(order)))
        self._cache[order_id] = view
        self._cache.move_to_end(order_id)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return view

    def forget_recovery(self, scope: Hashable) -> None:
        """Drop the recovery state of one partition assignment (it was revoked)."""
        for key in [k for k in self._recovery if k[0] == scope]:
            del self._recovery[key]

    # -- entry points -----------------------------------------------------------------------

    async def handle(
        self,
        command: SetOrderState | DeleteOrder,
        src: SourceRecord,
        *,
        suspect_since: datetime | None = None,
        scope: Hashable = None,
    ) -> Outcome:
        """Execute ``command``; ``suspect_since`` marks a possible replay (its window start).

        ``scope`` identifies the partition assignment the record came from: replay matching is
        per (scope, order).
        """
        rkey = (scope, command.order_id)
        if suspect_since is None:
            self._recovery.pop(rkey, None)
        try:
            if isinstance(command, SetOrderState):
                return await self._set_state(command, src, suspect_since, rkey)
            return await self._delete(command, src, suspect_since)
        except InvalidCommandError as exc:
            # The client refused to send it (e.g. a header value it cannot carry): the command
            # itself is bad, so it is a dead letter, never retried.
            dlq = dead_letter(src, exc.reason, exc, stage=STAGE_PARSE, ids=command)
            return self._result(
                command,
                src,
                "failed",
                0,
                reason=f"{exc.reason}: {exc.message}",
                outputs=[dlq],
                dead_letter_reason=exc.reason,
            )

    def invalid(self, src: SourceRecord, error: InvalidCommandError) -> Outcome:
        """An invalid record: dead letter, plus a failed result when it has a command id."""
        outputs = [dead_letter(src, error.reason, error, stage=STAGE_PARSE)]
        ids = _best_effort_ids(src.value)
        if ids is not None:
            result = command_result(
                command_id=ids.command_id,
                command_type=ids.type,
                order_id=ids.order_id,
                merchant=ids.merchant,
                channel=ids.channel,
                correlation_id=ids.correlation_id,
                outcome="failed",
                reason=f"{error.reason}: {error.message}",
                attempts=0,
                processed_at=self._clock(),
                source_topic=src.topic,
                source_partition=src.partition,
                source_offset=src.offset,
            )
            outputs.append(Output("result", _key(ids.order_id or None), "CommandResult", result))
        return Outcome(
            "failed", ids.type if ids else "unknown", outputs, error.message, error.reason
        )

    def internal_failure(
        self, cmd: SetOrderState | DeleteOrder, src: SourceRecord, exc: BaseException
    ) -> Outcome:
        """A command that kept failing for an unexpected reason (a bug or unmappable API data)."""
        dlq = dead_letter(src, "processing_error", exc, stage="TASK_PUT", ids=cmd)
        return self._result(
            cmd,
            src,
            "failed",
            0,
            reason=f"processing_error: {type(exc).__name__}",
            outputs=[dlq],
            dead_letter_reason="processing_error",
        )

    # -- SetOrderState ----------------------------------------------------------------------

    async def _set_state(
        self,
        cmd: SetOrderState,
        src: SourceRecord,
        suspect_since: datetime | None,
        rkey: tuple[Hashable, str],
    ) -> Outcome:
        now = self._clock()
        target = cmd.state.value
        done_before = self._put_done.get(cmd.command_id)
        if done_before is not None:
            # This command's PUT already succeeded; an earlier attempt failed after it.
            return await self._after_put(cmd, src, now, done_before, 0)
        expired = is_expired(cmd, now, self._max_age)
        known = self._cache.get(cmd.order_id)
        cached = known[0] if known is not None else None
        recovering = suspect_since is not None and self._recovery.get(rkey) is not _NOT_RECOVERING
        attempts = 0
        pre: dict[str, Any] | None = None
        if expired or cmd.expected_state is not None or known is None or recovering:
            try:
                got = await self._api.get_order_json(
                    cmd.order_id, merchant=cmd.merchant, channel=cmd.channel
                )
            except NorceNotFoundError as exc:
                self._remember(cmd.order_id, None)
                if recovering:
                    return self._result(
                        cmd,
                        src,
                        "already_applied",
                        exc.attempts,
                        reason="order no longer exists (deleted by a later command)",
                    )
                if expired:
                    return self._result(cmd, src, "expired", exc.attempts, reason=expired)
                return self._api_failure(cmd, src, exc, "order_not_found")
            pre, attempts = got.value, got.attempts
            known = self._remember(cmd.order_id, pre)
            cached = known[0]

        if expired:
            return self._result(cmd, src, "expired", attempts, reason=expired, current=cached)

        if recovering and pre is not None and suspect_since is not None:
            rec = self._recovery.get(rkey)
            if not isinstance(rec, _Recovery):
                rec = _Recovery.from_order(pre, suspect_since)
                self._recovery[rkey] = rec
            applied, previous, ts = rec.claim(target)
            if applied:
                outputs = self._snapshot(cmd, pre, now)
                if previous != target:
                    outputs.append(self._state_event(cmd, previous, target, ts, now))
                return self._result(
                    cmd,
                    src,
                    "already_applied",
                    attempts,
                    current=cached,
                    reason="applied before a restart or rebalance",
                    outputs=outputs,
                )
            self._recovery[rkey] = _NOT_RECOVERING

        if pre is not None and cached == target:
            # Already there (whatever the precondition said): nothing to do but report it.
            return self._result(
                cmd,
                src,
                "already_applied",
                attempts,
                current=cached,
                reason=f"order is already {target}",
                outputs=self._snapshot(cmd, pre, now),
            )
        if cmd.expected_state is not None and cached != cmd.expected_state.value:
            return self._result(
                cmd,
                src,
                "rejected",
                attempts,
                current=cached,
                reason=f"expected state {cmd.expected_state.value}, order is {cached}",
            )

        try:
            put = await self._api.set_state(
                cmd.order_id, target, merchant=cmd.merchant, channel=cmd.channel
            )
        except NorceNotFoundError as exc:
            self._remember(cmd.order_id, None)
            return self._api_failure(cmd, src, exc, "order_not_found", attempts)
        except NorceInvalidRequestError as exc:
            return self._api_failure(cmd, src, exc, "api_rejected", attempts, current=cached)
        attempts += put.attempts
        assert known is not None  # always read before a PUT when unknown
        self._put_done[cmd.command_id] = known
        while len(self._put_done) > PUT_DONE_LIMIT:
            self._put_done.popitem(last=False)
        return await self._after_put(cmd, src, now, known, attempts)

    async def _after_put(
        self,
        cmd: SetOrderState,
        src: SourceRecord,
        now: datetime,
        known: tuple[str | None, int],
        attempts: int,
    ) -> Outcome:
        """Re-fetch after a successful PUT and build the outputs (``known`` = view before it)."""
        target = cmd.state.value
        cached, before_n = known
        try:
            got = await self._api.get_order_json(
                cmd.order_id, merchant=cmd.merchant, channel=cmd.channel
            )
        except NorceNotFoundError as exc:
            self._put_done.pop(cmd.command_id, None)
            self._remember(cmd.order_id, None)
            return self._result(
                cmd,
                src,
                "applied",
                attempts + exc.attempts,
                reason="order was deleted before it could be re-fetched",
            )
        self._put_done.pop(cmd.command_id, None)
        attempts += got.attempts
        order = got.value
        status, n_now = self._remember(cmd.order_id, order)
        outputs = self._snapshot(cmd, order, now)
        if n_now == before_n and status == target:
            # Transitions are append-only: none was added, so the order already was in the target
            # state (the bridge's view was current; the PUT was a same-state no-op).
            return self._result(
                cmd,
                src,
                "already_applied",
                attempts,
                current=status,
                reason=f"order is already {target}",
                outputs=outputs,
            )
        transitions = _transitions(order)
        previous = cached
        if n_now > before_n and len(transitions) >= 2 and transitions[-1][0] == status:
            previous = transitions[-2][0]  # the order's own history, not the bridge's memory
        outputs.append(
            self._state_event(
                cmd, previous, status or target, latest_transition_at(order, status or target), now
            )
        )
        return self._result(cmd, src, "applied", attempts, current=status, outputs=outputs)

    # -- DeleteOrder ------------------------------------------------------------------------

    async def _delete(
        self, cmd: DeleteOrder, src: SourceRecord, suspect_since: datetime | None
    ) -> Outcome:
        now = self._clock()
        expired = is_expired(cmd, now, self._max_age)
        seen = self._cache.get(cmd.order_id)
        previous = seen[0] if seen is not None else None
        attempts = 0
        if expired or cmd.expected_state is not None or previous is None:
            try:
                got = await self._api.get_order_json(
                    cmd.order_id, merchant=cmd.merchant, channel=cmd.channel
                )
                attempts = got.attempts
                previous = _status_of(got.value)
            except NorceNotFoundError as exc:
                # Gone already (a replay of this command, or deleted by someone else): the
                # command's intent holds, whatever its precondition said.
                attempts = exc.attempts
                if not expired:
                    return self._deleted(cmd, src, now, None, attempts, already=True)
                previous = None
        if expired:
            return self._result(cmd, src, "expired", attempts, reason=expired, current=previous)
        if cmd.expected_state is not None and previous != cmd.expected_state.value:
            return self._result(
                cmd,
                src,
                "rejected",
                attempts,
                current=previous,
                reason=f"expected state {cmd.expected_state.value}, "
                f"order is {previous or 'deleted'}",
            )
        try:
            res = await self._api.delete_order(
                cmd.order_id, merchant=cmd.merchant, channel=cmd.channel
            )
        except NorceNotFoundError as exc:
            return self._deleted(cmd, src, now, previous, attempts + exc.attempts, already=True)
        except NorceInvalidRequestError as exc:
            return self._api_failure(cmd, src, exc, "api_rejected", attempts, current=previous)
        return self._deleted(cmd, src, now, previous, attempts + res.attempts, already=False)

    def _deleted(
        self,
        cmd: DeleteOrder,
        src: SourceRecord,
        now: datetime,
        previous: str | None,
        attempts: int,
        *,
        already: bool,
    ) -> Outcome:
        self._remember(cmd.order_id, None)
        event = order_deleted_event(
            command_id=cmd.command_id,
            order_id=cmd.order_id,
            merchant=cmd.merchant,
            channel=cmd.channel,
            previous_status=previous,
            already_deleted=already,
            correlation_id=cmd.correlation_id,
            occurred_at=now,
        )
        outputs = [
            Output("snapshot", _key(cmd.order_id), None, None, _ids_headers(cmd, None)),
            Output(
                "event",
                _key(cmd.order_id),
                "OrderDeleted",
                event,
                _ids_headers(cmd, "OrderDeleted"),
            ),
        ]
        return self._result(
            cmd,
            src,
            "already_applied" if already else "applied",
            attempts,
            reason="order already deleted" if already else None,
            outputs=outputs,
        )

    # -- builders ---------------------------------------------------------------------------

    def _snapshot(
        self, cmd: SetOrderState | DeleteOrder, order: dict[str, Any], now: datetime
    ) -> list[Output]:
        snap = snapshot_from_order(
            order, fetched_at=now, command_id=cmd.command_id, correlation_id=cmd.correlation_id
        )
        return [
            Output(
                "snapshot",
                _key(cmd.order_id),
                "OrderSnapshot",
                snap,
                _ids_headers(cmd, "OrderSnapshot"),
            )
        ]

    def _state_event(
        self, cmd: SetOrderState, previous: str | None, new: str, ts: str | None, now: datetime
    ) -> Output:
        event = state_changed_event(
            command_id=cmd.command_id,
            order_id=cmd.order_id,
            merchant=cmd.merchant,
            channel=cmd.channel,
            previous_status=previous,
            new_status=new,
            transition_at=ts,
            correlation_id=cmd.correlation_id,
            occurred_at=now,
        )
        return Output(
            "event",
            _key(cmd.order_id),
            "OrderStateChanged",
            event,
            _ids_headers(cmd, "OrderStateChanged"),
        )

    def _result(
        self,
        cmd: SetOrderState | DeleteOrder,
        src: SourceRecord,
        outcome: str,
        attempts: int,
        *,
        reason: str | None = None,
        current: str | None = None,
        http_status: int | None = None,
        outputs: list[Output] | None = None,
        dead_letter_reason: str | None = None,
    ) -> Outcome:
        result = command_result(
            command_id=cmd.command_id,
            command_type=cmd.type,
            order_id=cmd.order_id,
            merchant=cmd.merchant,
            channel=cmd.channel,
            correlation_id=cmd.correlation_id,
            outcome=outcome,
            attempts=attempts,
            processed_at=self._clock(),
            source_topic=src.topic,
            source_partition=src.partition,
            source_offset=src.offset,
            reason=reason,
            current_status=current,
            http_status=http_status,
        )
        out = list(outputs or [])
        out.append(
            Output(
                "result",
                _key(cmd.order_id),
                "CommandResult",
                result,
                _ids_headers(cmd, "CommandResult"),
            )
        )
        return Outcome(outcome, cmd.type, out, reason, dead_letter_reason)

    def _api_failure(
        self,
        cmd: SetOrderState | DeleteOrder,
        src: SourceRecord,
        exc: NorceApiError,
        reason: str,
        attempts: int = 0,
        *,
        current: str | None = None,
    ) -> Outcome:
        detail = _api_detail(exc)
        dlq = dead_letter(
            src,
            reason,
            exc,
            stage=STAGE_API,
            http_status=exc.status,
            attempts=attempts + exc.attempts,
            ids=cmd,
        )
        return self._result(
            cmd,
            src,
            "failed",
            attempts + exc.attempts,
            reason=f"{reason}: {detail}",
            current=current,
            http_status=exc.status,
            outputs=[dlq],
            dead_letter_reason=reason,
        )


def _api_detail(exc: NorceApiError) -> str:
    parts = [f"HTTP {exc.status}" if exc.status else "no response"]
    if exc.code:
        parts.append(exc.code)
    if exc.api_message:
        parts.append(exc.api_message)
    return " ".join(parts)


def _key(order_id: str | None) -> bytes | None:
    return order_id.encode() if order_id else None


def _ids_headers(cmd: SetOrderState | DeleteOrder, schema: str | None) -> Headers:
    headers: Headers = [
        ("norce.command.id", cmd.command_id.encode()),
        ("norce.order.id", cmd.order_id.encode()),
    ]
    if cmd.correlation_id:
        headers.append(("norce.correlation.id", cmd.correlation_id.encode()))
    if schema is not None:
        headers.append(("norce.schema", f"com.norce.bridge.v1.{schema}".encode()))
        headers.append(("content-type", b"application/avro"))
    return headers


def _clip(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dead_letter(
    src: SourceRecord,
    reason: str,
    exc: BaseException,
    *,
    stage: str,
    http_status: int | None = None,
    attempts: int | None = None,
    ids: SetOrderState | DeleteOrder | None = None,
) -> Output:
    """The original record plus error headers modelled on Kafka Connect's ``__connect.errors.*``."""
    message = exc.message if isinstance(exc, InvalidCommandError) else str(exc)
    headers: Headers = list(src.headers)
    headers += [
        ("__connect.errors.topic", src.topic.encode()),
        ("__connect.errors.partition", str(src.partition).encode()),
        ("__connect.errors.offset", str(src.offset).encode()),
        ("__connect.errors.stage", stage.encode()),
        (
            "__connect.errors.class.name",
            f"{type(exc).__module__}.{type(exc).__qualname__}".encode(),
        ),
        ("__connect.errors.exception.message", _clip(message).encode("utf-8", "replace")),
        ("__connect.errors.reason", reason.encode()),
        ("__connect.errors.timestamp", format_rfc3339(datetime.now(UTC)).encode()),
    ]
    if http_status is not None:
        headers.append(("__connect.errors.http.status", str(http_status).encode()))
    if attempts is not None:
        headers.append(("__connect.errors.attempts", str(attempts).encode()))
    if ids is not None:
        headers.append(("norce.command.id", ids.command_id.encode()))
        headers.append(("norce.order.id", ids.order_id.encode()))
        if ids.correlation_id:
            headers.append(("norce.correlation.id", ids.correlation_id.encode()))
    return Output("dlq", src.key, None, src.value, headers)


@dataclass(frozen=True, slots=True)
class _Ids:
    command_id: str
    type: str
    order_id: str
    merchant: str
    channel: str
    correlation_id: str | None


def _best_effort_ids(value: bytes | None) -> _Ids | None:
    """commandId & co. from an invalid JSON command, when there is a string commandId."""
    if not value:
        return None
    try:
        raw = json.loads(value)
    except ValueError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("commandId"), str):
        return None

    def text(name: str, limit: int = 128) -> str:
        v = raw.get(name)
        return v[:limit] if isinstance(v, str) else ""

    if not text("commandId"):
        return None
    kind = raw.get("type")
    return _Ids(
        command_id=text("commandId"),
        type=kind if kind in ("SetOrderState", "DeleteOrder") else "unknown",
        order_id=text("orderId"),
        merchant=text("merchant", 64),
        channel=text("channel", 64),
        correlation_id=text("correlationId") or None,
    )
