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

Replays (see :mod:`bridge.ledger`): a record that may already have reached the API before a
crash or rebalance is handled with ``suspect=True``. Its order's transition history since the
dispatch window opened is matched against the commands in offset order (:class:`_Recovery`); a
command found there is reported ``already_applied`` (its snapshot and event are re-emitted, since
they may have been lost) instead of being executed again, so a replay never moves an order
backwards.
"""

from __future__ import annotations

import hashlib
import traceback
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from bridge.codec import AvroCodec
from bridge.commands import (
    AVRO_CONTENT_TYPES,
    DeleteOrder,
    SetOrderState,
    decode_avro_command,
    is_expired,
    media_type,
)
from bridge.errors import (
    DeadLetterReason,
    InvalidCommandError,
    NorceApiError,
    NorceInvalidRequestError,
    NorceNotFoundError,
    RecordHandlingError,
    UnmappableOrderError,
)
from bridge.events import (
    SnapshotMappingError,
    command_result,
    format_rfc3339,
    latest_transition_at,
    order_deleted_event,
    parse_rfc3339,
    snapshot_from_order,
    state_changed_event,
)
from bridge.jsonstrict import JsonInputError, loads_strict
from bridge.lease import write_gate

T = TypeVar("T", covariant=True)

OutputKind = Literal["snapshot", "event", "result", "dlq"]
Headers = list[tuple[str, bytes | None]]
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
    headers: tuple[tuple[str, bytes | None], ...]
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


@dataclass(frozen=True, slots=True)
class _Transition:
    status: str
    at: datetime | None
    text: str | None  # the timeStamp exactly as the API wrote it


def _transitions(order: dict[str, Any]) -> list[_Transition]:
    state = order.get("state")
    raw = state.get("transitions") if isinstance(state, dict) else None
    out: list[_Transition] = []
    for t in raw if isinstance(raw, list) else []:
        if isinstance(t, dict) and isinstance(t.get("status"), str):
            ts = t.get("timeStamp")
            text = ts if isinstance(ts, str) else None
            out.append(_Transition(t["status"], parse_rfc3339(text) if text else None, text))
    return out


@dataclass(frozen=True, slots=True)
class _Claim:
    """A suspect command matched against the order's history."""

    applied: bool
    previous: str | None = None
    transition: _Transition | None = None
    newest: bool = False  # its transition is the order's latest (its snapshot is current)


@dataclass
class _Recovery:
    """Per-order matching of suspect commands against the transitions since the window opened.

    ``deleted`` is set once a suspect DeleteOrder of this replay has claimed the order's
    deletion, so a second delete in the same replay reports ``alreadyDeleted=true``.
    """

    position_status: str | None
    since: list[_Transition]
    index: int = 0
    deleted: bool = False

    @classmethod
    def from_order(cls, order: dict[str, Any], window_start: datetime) -> _Recovery:
        transitions = _transitions(order)
        before = [t for t in transitions if t.at is not None and t.at < window_start]
        since = [t for t in transitions if t.at is None or t.at >= window_start]
        position: str | None
        if before:
            position = before[-1].status
        elif since:  # created inside the window: its first transition is the creation state
            position, since = since[0].status, since[1:]
        else:
            position = _status_of(order)
        return cls(position_status=position, since=since)

    @classmethod
    def gone(cls) -> _Recovery:
        """The order was already deleted when the replay first read it: no history is left."""
        return cls(position_status=None, since=[])

    def claim(self, target: str) -> _Claim:
        """Whether the next command (to ``target``) is in the history, and what it did there."""
        if target == self.position_status:
            return _Claim(True, target, None, newest=self.index >= len(self.since))
        if self.index < len(self.since) and self.since[self.index].status == target:
            previous = self.position_status
            transition = self.since[self.index]
            self.index += 1
            self.position_status = target
            return _Claim(True, previous, transition, newest=self.index >= len(self.since))
        return _Claim(False)


_NOT_RECOVERING = object()
PUT_DONE_LIMIT = 10_000
REPLAYED_REASON = "applied before a restart or rebalance"
_OrderKey = tuple[str, str, str]  # (merchant, channel, order id)


def _okey(cmd: SetOrderState | DeleteOrder) -> _OrderKey:
    return (cmd.merchant, cmd.channel, cmd.order_id)


class Processor:
    """Turns commands into API calls and output records (one instance per bridge)."""

    def __init__(
        self,
        api: OrderApi,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_command_age_s: float | None = None,
        status_cache_size: int = 50_000,
        codec: AvroCodec | None = None,
        max_dead_letter_bytes: int | None = None,
        read_before_write: bool = False,
    ) -> None:
        self._api = api
        # write_guard=lease+read: re-read the order right before every write (README, "Fencing")
        self._read_before_write = read_before_write
        self._clock = clock
        self._max_age = max_command_age_s
        self._codec = codec
        self._dlq_limit = max_dead_letter_bytes or MAX_DEAD_LETTER_BYTES
        # (merchant, channel, order id) -> (status, number of transitions) as last seen here
        self._cache: OrderedDict[_OrderKey, tuple[str | None, int]] = OrderedDict()
        self._cache_size = status_cache_size
        # (scope, merchant, channel, order id) -> recovery state; the scope is the partition
        # assignment (topic, partition, epoch), so a partition assigned again starts afresh.
        self._recovery: dict[tuple[Hashable, str, str, str], _Recovery | object] = {}
        # command id -> the bridge's view of the order before a PUT that succeeded, kept while
        # the command is retried after a later call (the re-fetch) failed.
        self._put_done: OrderedDict[str, tuple[str | None, int]] = OrderedDict()

    # -- status cache ---------------------------------------------------------------------

    def _remember(self, key: _OrderKey, order: dict[str, Any] | None) -> tuple[str | None, int]:
        if order is None:
            self._cache.pop(key, None)
            return None, 0
        view = (_status_of(order), len(_transitions(order)))
        self._cache[key] = view
        self._cache.move_to_end(key)
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
        delete_note: tuple[str | None] | None = None,
        dispatched_at: datetime | None = None,
    ) -> Outcome:
        """Execute ``command``; ``suspect_since`` marks a possible replay (its window start).

        ``dispatched_at`` (when the runtime dispatched it) is the window the read-before-write
        guard checks the order's history from when the order changed behind the bridge's back.

        ``scope`` identifies the partition assignment the record came from: replay matching is
        per (scope, merchant, channel, order). ``delete_note`` is, for a suspect delete, the
        state its previous execution noted durably right before sending the DELETE (so the
        replay can say what it deleted once the order is gone).
        """
        rkey = (scope, *_okey(command))
        if suspect_since is None:
            self._recovery.pop(rkey, None)
        try:
            if isinstance(command, SetOrderState):
                return await self._set_state(command, src, suspect_since, rkey, dispatched_at)
            return await self._delete(command, src, suspect_since, rkey, delete_note)
        except InvalidCommandError as exc:
            # The command itself is bad (a header value the client cannot carry) or Norce's
            # answer to it cannot be mapped: deterministic, so a dead letter at once, no retry.
            stage = STAGE_API if isinstance(exc, UnmappableOrderError) else STAGE_PARSE
            dlq = self.dead_letter(src, exc.reason, exc, stage=stage, ids=_Ids.of(command))
            return self._result(
                command,
                src,
                "failed",
                0,
                reason=f"{exc.reason}: {exc.message}",
                outputs=[dlq],
                dead_letter_reason=exc.reason,
            )

    def invalid(
        self, src: SourceRecord, error: InvalidCommandError, *, codec: AvroCodec | None = None
    ) -> Outcome:
        """An invalid record: dead letter, plus a failed result when its command id is readable.

        The ids are read with the same strict parsers as the command (JSON or Avro, ``codec``
        defaults to the processor's), so this never raises on hostile bytes; ids that cannot be
        encoded are left out.
        """
        if isinstance(error, RecordHandlingError):
            return self.internal_error(src, error.cause, codec=codec)
        ids = best_effort_ids(src.value, src.headers, codec or self._codec)
        outputs = [self.dead_letter(src, error.reason, error, stage=STAGE_PARSE, ids=ids)]
        if ids is not None and ids.command_id:
            outputs.append(self._id_result(ids, src, "failed", f"{error.reason}: {error.message}"))
        return Outcome(
            "failed", ids.type if ids else "unknown", outputs, error.message, error.reason
        )

    def internal_failure(
        self, cmd: SetOrderState | DeleteOrder, src: SourceRecord, exc: BaseException
    ) -> Outcome:
        """A command that kept failing for an unexpected reason (retried first): dead letter."""
        dlq = self.dead_letter(
            src, DeadLetterReason.PROCESSING_ERROR, exc, stage=STAGE_API, ids=_Ids.of(cmd)
        )
        return self._result(
            cmd,
            src,
            "failed",
            0,
            reason=f"processing_error: {type(exc).__name__}",
            outputs=[dlq],
            dead_letter_reason=DeadLetterReason.PROCESSING_ERROR,
        )

    def internal_error(
        self,
        src: SourceRecord,
        exc: BaseException,
        *,
        with_result: bool = True,
        codec: AvroCodec | None = None,
    ) -> Outcome:
        """The last resort for a record whose handling failed in a way nothing else covers.

        The raw record is dead-lettered (reason ``internal_error``, the exception class in the
        headers) with a ``failed`` result when a command id can be read. Building it cannot fail
        on the record's content: ids come from the strict parsers and are dropped when they are
        not encodable, and the dead letter is bounded. ``with_result=False`` gives the dead
        letter alone (used when even publishing the result failed).
        """
        ids: _Ids | None = None
        try:
            ids = best_effort_ids(src.value, src.headers, codec or self._codec)
        except Exception:
            ids = None
        reason = DeadLetterReason.INTERNAL_ERROR
        detail = f"{reason}: {type(exc).__name__}"
        if ids is not None and ids.dropped:
            detail += f" (unencodable ids left out: {', '.join(ids.dropped)})"
        try:
            dlq = self.dead_letter(src, reason, exc, stage=STAGE_INTERNAL, ids=ids, message=detail)
        except Exception:  # even the diagnosis failed: the bare minimum, which cannot fail
            ids = None
            dlq = Output(
                "dlq",
                None,
                None,
                (src.value or b"")[: self._dlq_limit // 2],
                [
                    ("__connect.errors.reason", reason.encode()),
                    ("__connect.errors.partition", str(src.partition).encode()),
                    ("__connect.errors.offset", str(src.offset).encode()),
                ],
            )
        outputs = [dlq]
        if with_result and ids is not None and ids.command_id:
            outputs.append(self._id_result(ids, src, "failed", detail))
        return Outcome("failed", ids.type if ids else "unknown", outputs, detail, reason)

    def _id_result(
        self,
        ids: _Ids,
        src: SourceRecord,
        outcome: str,
        reason: str | None,
        *,
        attempts: int = 0,
        current: str | None = None,
        http_status: int | None = None,
        replayed: bool = False,
    ) -> Output:
        """The ``CommandResult`` record of a command known by its ids."""
        result = command_result(
            command_id=ids.command_id,
            command_type=ids.type,
            order_id=ids.order_id,
            merchant=ids.merchant,
            channel=ids.channel,
            correlation_id=ids.correlation_id,
            outcome=outcome,
            attempts=attempts,
            processed_at=self._clock(),
            source_topic=src.topic,
            source_partition=src.partition,
            source_offset=src.offset,
            reason=reason,
            current_status=current,
            http_status=http_status,
            replayed=replayed,
        )
        return Output(
            "result",
            _key(ids.order_id or None),
            "CommandResult",
            result,
            ids.headers("CommandResult"),
        )

    # -- SetOrderState ----------------------------------------------------------------------

    async def _get(self, cmd: SetOrderState | DeleteOrder) -> ApiResultLike[dict[str, Any]]:
        return await self._api.get_order_json(
            cmd.order_id, merchant=cmd.merchant, channel=cmd.channel
        )

    async def _set_state(
        self,
        cmd: SetOrderState,
        src: SourceRecord,
        suspect_since: datetime | None,
        rkey: tuple[Hashable, str, str, str],
        dispatched_at: datetime | None = None,
    ) -> Outcome:
        now = self._clock()
        okey = _okey(cmd)
        target = cmd.state.value
        done_before = self._put_done.get(cmd.command_id)
        if suspect_since is not None:
            # A replay claims its transition in the order's history (below) like every other
            # suspect, so that the commands after it are matched from the right position.
            done_before = self._put_done.pop(cmd.command_id, None) and None
        if done_before is not None:
            # This command's PUT already succeeded; an earlier attempt failed after it.
            return await self._after_put(cmd, src, now, done_before, 0)
        expired = is_expired(cmd, now, self._max_age)
        known = self._cache.get(okey)
        cached = known[0] if known is not None else None
        recovering = suspect_since is not None and self._recovery.get(rkey) is not _NOT_RECOVERING
        attempts = 0
        pre: dict[str, Any] | None = None
        read_guard = self._read_before_write and not recovering
        prior = known
        if expired or cmd.expected_state is not None or known is None or recovering or read_guard:
            try:
                got = await self._get(cmd)
            except NorceNotFoundError as exc:
                self._remember(okey, None)
                if recovering:
                    # Deleted by a later command of this order that ran before the restart. The
                    # history went with the order; this command's own event was published before
                    # that delete was dispatched (same-order commands run one after the other and
                    # a record is done only once its outputs are acknowledged), so nothing new.
                    rec = self._recovery.get(rkey)
                    if not isinstance(rec, _Recovery):
                        rec = self._recovery[rkey] = _Recovery.gone()
                    # It moved the order to its target before the delete: that is the state a
                    # later suspect delete of this replay deleted from, and what it produced.
                    rec.position_status = target
                    return self._result(
                        cmd,
                        src,
                        "already_applied",
                        exc.attempts,
                        current=target,
                        reason="order no longer exists (deleted by a later command)",
                        replayed=True,
                    )
                if expired:
                    return self._result(cmd, src, "expired", exc.attempts, reason=expired)
                return self._api_failure(cmd, src, exc, "order_not_found")
            pre, attempts = got.value, got.attempts
            known = self._remember(okey, pre)
            cached = known[0]

        if expired:
            return self._result(cmd, src, "expired", attempts, reason=expired, current=cached)

        if (
            read_guard
            and prior is not None
            and known is not None
            and pre is not None
            and dispatched_at is not None
            and known[1] != prior[1]
        ):
            # The order changed since the bridge last saw it (another writer, or a previous
            # owner of the partition): check the transitions since this command was dispatched,
            # like a replay suspect, instead of writing blindly.
            claim = _Recovery.from_order(pre, dispatched_at).claim(target)
            if claim.applied:
                return self._replayed_set_state(cmd, src, pre, claim, attempts, now)

        if recovering and pre is not None and suspect_since is not None:
            rec = self._recovery.get(rkey)
            if not isinstance(rec, _Recovery) or (not rec.since and rec.position_status is None):
                rec = _Recovery.from_order(pre, suspect_since)
                self._recovery[rkey] = rec
            claim = rec.claim(target)
            if claim.applied:
                return self._replayed_set_state(cmd, src, pre, claim, attempts, now)
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
            self._remember(okey, None)
            return self._api_failure(cmd, src, exc, "order_not_found", attempts)
        except NorceInvalidRequestError as exc:
            return self._api_failure(cmd, src, exc, "api_rejected", attempts, current=cached)
        attempts += put.attempts
        assert known is not None  # always read before a PUT when unknown
        self._put_done[cmd.command_id] = known
        while len(self._put_done) > PUT_DONE_LIMIT:
            self._put_done.popitem(last=False)
        return await self._after_put(cmd, src, now, known, attempts)

    def _replayed_set_state(
        self,
        cmd: SetOrderState,
        src: SourceRecord,
        order: dict[str, Any],
        claim: _Claim,
        attempts: int,
        now: datetime,
    ) -> Outcome:
        """What the command's first execution published, rebuilt from the order's history."""
        target = cmd.state.value
        outputs: list[Output] = []
        if claim.newest:
            # Only the order's newest state may go to the compacted snapshot topic.
            outputs += self._snapshot(cmd, order, now)
        if claim.previous != target:
            t = claim.transition
            outputs.append(
                self._state_event(
                    cmd,
                    claim.previous,
                    target,
                    t.text if t is not None else None,
                    t.at if t is not None and t.at is not None else now,
                )
            )
        return self._result(
            cmd,
            src,
            "already_applied",
            attempts,
            current=target,
            reason=REPLAYED_REASON,
            outputs=outputs,
            replayed=True,
        )

    async def _after_put(
        self,
        cmd: SetOrderState,
        src: SourceRecord,
        now: datetime,
        known: tuple[str | None, int],
        attempts: int,
    ) -> Outcome:
        """Re-fetch after a successful PUT and build the outputs (``known`` = view before it)."""
        okey = _okey(cmd)
        target = cmd.state.value
        cached, before_n = known
        try:
            got = await self._get(cmd)
        except NorceNotFoundError as exc:
            self._put_done.pop(cmd.command_id, None)
            self._remember(okey, None)
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
        status, n_now = self._remember(okey, order)
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
        if n_now > before_n and len(transitions) >= 2 and transitions[-1].status == status:
            previous = transitions[-2].status  # the order's own history, not the bridge's memory
        new = status or target
        stamp = latest_transition_at(order, new)
        at = parse_rfc3339(stamp) if stamp else None
        outputs.append(self._state_event(cmd, previous, new, stamp, at or now))
        return self._result(cmd, src, "applied", attempts, current=status, outputs=outputs)

    # -- DeleteOrder ------------------------------------------------------------------------

    async def _delete(
        self,
        cmd: DeleteOrder,
        src: SourceRecord,
        suspect_since: datetime | None,
        rkey: tuple[Hashable, str, str, str],
        delete_note: tuple[str | None] | None = None,
    ) -> Outcome:
        now = self._clock()
        okey = _okey(cmd)
        expired = is_expired(cmd, now, self._max_age)
        seen = self._cache.get(okey)
        previous = seen[0] if seen is not None else None
        rec = self._recovery.get(rkey) if suspect_since is not None else None
        attempts = 0
        if expired or cmd.expected_state is not None or previous is None or self._read_before_write:
            try:
                got = await self._get(cmd)
                attempts = got.attempts
                previous = _status_of(got.value)
            except NorceNotFoundError as exc:
                attempts = exc.attempts
                if not expired:
                    return self._gone(
                        cmd, src, now, attempts, rec, suspect_since, rkey, note=delete_note
                    )
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
        gate = write_gate.get()
        if gate is not None:
            await gate.before_delete(previous)
        try:
            res = await self._api.delete_order(
                cmd.order_id, merchant=cmd.merchant, channel=cmd.channel
            )
        except NorceNotFoundError as exc:
            return self._gone(
                cmd, src, now, attempts + exc.attempts, rec, suspect_since, rkey, previous
            )
        except NorceInvalidRequestError as exc:
            return self._api_failure(cmd, src, exc, "api_rejected", attempts, current=previous)
        if suspect_since is not None:
            self._recovery[rkey] = _NOT_RECOVERING
        return self._deleted(cmd, src, now, previous, attempts + res.attempts, already=False)

    def _gone(
        self,
        cmd: DeleteOrder,
        src: SourceRecord,
        now: datetime,
        attempts: int,
        rec: _Recovery | object | None,
        suspect_since: datetime | None,
        rkey: tuple[Hashable, str, str, str],
        previous: str | None = None,
        *,
        note: tuple[str | None] | None = None,
    ) -> Outcome:
        """The order is gone. During a replay the first suspect delete of it claims the delete.

        Outside a replay (or for a second delete in the same replay) it was deleted by someone
        else, or by an earlier command: ``alreadyDeleted=true``. A suspect delete was inside the
        dispatch reservation of the crashed owner, i.e. it may have reached Norce; under the
        single-writer assumption (README, "Replays") the order's disappearance is then this
        command's doing: ``alreadyDeleted=false`` with the state it deleted from when this replay
        still saw the order (the position its earlier suspect commands reached), else null. The
        runtime notes that state durably (in the commit metadata) right before every DELETE is
        sent, and hands it back as ``note``: with it the replayed event says exactly what the
        original execution said.
        """
        if (
            suspect_since is None
            or rec is _NOT_RECOVERING
            or (isinstance(rec, _Recovery) and rec.deleted)
        ):
            return self._deleted(cmd, src, now, previous, attempts, already=True)
        if not isinstance(rec, _Recovery):
            rec = self._recovery[rkey] = _Recovery.gone()
        rec.deleted = True
        # The state noted durably by the execution that sent the DELETE, else what this replay
        # saw of the order (nothing, when it was already gone at the first read).
        known = note[0] if note is not None else rec.position_status
        return self._deleted(
            cmd, src, now, known, attempts, already=False, replayed=True, reason=REPLAYED_REASON
        )

    def _deleted(
        self,
        cmd: DeleteOrder,
        src: SourceRecord,
        now: datetime,
        previous: str | None,
        attempts: int,
        *,
        already: bool,
        replayed: bool = False,
        reason: str | None = None,
    ) -> Outcome:
        self._remember(_okey(cmd), None)
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
        ids = _Ids.of(cmd)
        outputs = [
            Output("snapshot", _key(cmd.order_id), None, None, ids.headers(None)),
            Output(
                "event",
                _key(cmd.order_id),
                "OrderDeleted",
                event,
                ids.headers("OrderDeleted"),
            ),
        ]
        if reason is None and already:
            reason = "order already deleted"
        return self._result(
            cmd,
            src,
            "already_applied" if already or replayed else "applied",
            attempts,
            reason=reason,
            outputs=outputs,
            replayed=replayed,
        )

    # -- builders ---------------------------------------------------------------------------

    def _snapshot(
        self, cmd: SetOrderState | DeleteOrder, order: dict[str, Any], now: datetime
    ) -> list[Output]:
        try:
            snap = snapshot_from_order(
                order, fetched_at=now, command_id=cmd.command_id, correlation_id=cmd.correlation_id
            )
        except SnapshotMappingError as exc:
            raise UnmappableOrderError(f"the order Norce returned cannot be mapped: {exc}") from exc
        return [
            Output(
                "snapshot",
                _key(cmd.order_id),
                "OrderSnapshot",
                snap,
                _Ids.of(cmd).headers("OrderSnapshot"),
            )
        ]

    def _state_event(
        self,
        cmd: SetOrderState,
        previous: str | None,
        new: str,
        ts: str | None,
        occurred_at: datetime,
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
            occurred_at=occurred_at,
        )
        return Output(
            "event",
            _key(cmd.order_id),
            "OrderStateChanged",
            event,
            _Ids.of(cmd).headers("OrderStateChanged"),
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
        replayed: bool = False,
    ) -> Outcome:
        out = list(outputs or [])
        out.append(
            self._id_result(
                _Ids.of(cmd),
                src,
                outcome,
                reason,
                attempts=attempts,
                current=current,
                http_status=http_status,
                replayed=replayed,
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
        dlq = self.dead_letter(
            src,
            reason,
            exc,
            stage=STAGE_API,
            http_status=exc.status,
            attempts=attempts + exc.attempts,
            ids=_Ids.of(cmd),
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

    def dead_letter(
        self,
        src: SourceRecord,
        reason: str,
        exc: BaseException,
        *,
        stage: str,
        http_status: int | None = None,
        attempts: int | None = None,
        ids: _Ids | None = None,
        message: str | None = None,
    ) -> Output:
        """A bounded dead letter (see :func:`dead_letter`) with this processor's size limit."""
        return dead_letter(
            src,
            reason,
            exc,
            stage=stage,
            http_status=http_status,
            attempts=attempts,
            ids=ids,
            message=message,
            max_bytes=self._dlq_limit,
        )


def _api_detail(exc: NorceApiError) -> str:
    parts = [f"HTTP {exc.status}" if exc.status else "no response"]
    if exc.code:
        parts.append(exc.code)
    if exc.api_message:
        parts.append(exc.api_message)
    return " ".join(parts)


def _key(order_id: str | None) -> bytes | None:
    return order_id.encode("utf-8", "replace") if order_id else None


def _clip(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


STAGE_INTERNAL = "INTERNAL"
MAX_DEAD_LETTER_BYTES = 1_000_000
"""Largest dead letter (key + value + headers) the bridge publishes.

Below aiokafka's default ``max_request_size`` (1,048,576) and the broker's default
``message.max.bytes`` (1,048,588) with room for the record batch overhead; see
:func:`check_record_limits` for the start-up check of ``max_record_bytes`` against them."""
_RECORD_OVERHEAD = 128  # record batch header and per-record varints, generously


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
    http_status: int | None = None,
    attempts: int | None = None,
    ids: _Ids | SetOrderState | DeleteOrder | None = None,
    message: str | None = None,
    max_bytes: int = MAX_DEAD_LETTER_BYTES,
) -> Output:
    """The original record plus error headers modelled on Kafka Connect's ``__connect.errors.*``.

    Header values are kept exactly (a null header stays null). When the whole would exceed
    ``max_bytes`` the value is cut to fit and ``__bridge.dlq.truncated``,
    ``__bridge.dlq.original.size`` and ``__bridge.dlq.original.sha256`` say so: a dead letter is
    always publishable, never retried forever. Never raises for any record content.
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
        ("__connect.errors.exception.message", _clip(message).encode("utf-8", "replace")),
        ("__connect.errors.reason", str(reason).encode("utf-8", "replace")),
        ("__connect.errors.timestamp", format_rfc3339(datetime.now(UTC)).encode()),
    ]
    if http_status is not None:
        headers.append(("__connect.errors.http.status", str(http_status).encode()))
    if attempts is not None:
        headers.append(("__connect.errors.attempts", str(attempts).encode()))
    if ids is not None:
        if not isinstance(ids, _Ids):
            ids = _Ids.of(ids)
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
    return Output("dlq", key, None, value, headers)


def format_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` as text (for the last-resort log line)."""
    return "".join(traceback.format_exception(exc))


@dataclass(frozen=True, slots=True)
class _Ids:
    """The ids of a command, each valid Unicode (ids that are not are dropped, and named)."""

    command_id: str
    type: str
    order_id: str
    merchant: str
    channel: str
    correlation_id: str | None
    dropped: tuple[str, ...] = ()

    @classmethod
    def of(cls, cmd: SetOrderState | DeleteOrder) -> _Ids:
        return cls(
            cmd.command_id, cmd.type, cmd.order_id, cmd.merchant, cmd.channel, cmd.correlation_id
        )

    def headers(self, schema: str | None) -> Headers:
        headers: Headers = []
        if self.command_id:
            headers.append(("norce.command.id", self.command_id.encode()))
        if self.order_id:
            headers.append(("norce.order.id", self.order_id.encode()))
        if self.correlation_id:
            headers.append(("norce.correlation.id", self.correlation_id.encode()))
        if schema is not None:
            headers.append(("norce.schema", f"com.norce.bridge.v1.{schema}".encode()))
            headers.append(("content-type", b"application/avro"))
        return headers


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
) -> _Ids | None:
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
            ctype is None and codec is not None and codec.is_single_object(value)
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
    return _Ids(
        command_id=command_id,
        type=kind if kind in ("SetOrderState", "DeleteOrder") else "unknown",
        order_id=text("orderId"),
        merchant=text("merchant", 64),
        channel=text("channel", 64),
        correlation_id=text("correlationId") or None,
        dropped=tuple(dropped),
    )
