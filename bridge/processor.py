"""Execute one command against the Norce API and say what to publish: sans Kafka, sans httpx.

The processor is the small async driver of :mod:`bridge.decision`: ``Processor.handle`` builds a
:class:`~bridge.decision.Decision` from the command and what the bridge knows, performs the
actions it asks for (GET, PUT state, DELETE) through the :class:`OrderApi` protocol, feeds it
the answers, and returns its :class:`~bridge.outputs.Disposition`: the outcome and the records
to publish (snapshot or tombstone, event, command result, dead letter). The runtime publishes
them and only then marks the record done.

What the driver keeps between commands: the bridge's view of each order (:class:`OrderViews`, a
bounded LRU: with it a command needs no GET before its PUT), the memo of PUTs that succeeded
while the command's re-fetch failed (so the retry only re-fetches), and the replay state of the
orders being matched (:class:`~bridge.decision.history.ReplayBook`).

Errors: the API's command faults (404, 400) are answers the core turns into outcomes. Any other
API error (Norce down, 429, timeouts, bad credentials) is *systemic*: it propagates, and the
runtime holds the command and retries it later (circuit breaker), so an outage never burns
commands into the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from bridge.codec import AvroCodec
from bridge.commands import AnyCommand
from bridge.deadletter import (
    MAX_DEAD_LETTER_BYTES,
    STAGE_API,
    STAGE_INTERNAL,
    STAGE_PARSE,
    best_effort_ids,
    check_record_limits,
    dead_letter,
    format_traceback,
    internal_error,
    internal_failure,
    invalid_record,
    record_size,
)
from bridge.decision import (
    REPLAYED_REASON,
    Answer,
    Decision,
    Delete,
    Fetched,
    Get,
    Known,
    OrderView,
    Policy,
    Put,
    Refused,
    Written,
)
from bridge.decision.history import ReplayBook
from bridge.errors import InvalidCommandError, NorceInvalidRequestError, NorceNotFoundError
from bridge.lease import write_gate
from bridge.lru import Lru
from bridge.order_state import OrderState
from bridge.outputs import Disposition, Headers, Ids, Output, SourceRecord
from bridge.vocabulary import OutputKind

__all__ = [
    "MAX_DEAD_LETTER_BYTES",
    "PUT_DONE_LIMIT",
    "REPLAYED_REASON",
    "STAGE_API",
    "STAGE_INTERNAL",
    "STAGE_PARSE",
    "ApiResultLike",
    "Disposition",
    "Headers",
    "Ids",
    "OrderApi",
    "OrderViews",
    "Outcome",
    "Output",
    "OutputKind",
    "Processor",
    "SourceRecord",
    "best_effort_ids",
    "check_record_limits",
    "dead_letter",
    "format_traceback",
    "record_size",
]

T = TypeVar("T", covariant=True)

Outcome = Disposition
"""Compatibility name: what ``handle`` returns (the outcome *names* are
:class:`bridge.vocabulary.Outcome`)."""

PUT_DONE_LIMIT = 10_000
OrderKey = tuple[str, str, str]  # (merchant, channel, order id)


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


class OrderViews:
    """The bridge's view of each order it has seen (status, number of transitions), bounded."""

    def __init__(self, capacity: int) -> None:
        self._lru: Lru[OrderKey, OrderView] = Lru(capacity)

    def get(self, key: OrderKey) -> OrderView | None:
        return self._lru.get(key)

    def saw(self, key: OrderKey, answer: Answer, action: Get | Put | Delete) -> None:
        """Update the view from one API answer: a fetched order is remembered, an order that
        is gone (404, or deleted just now) forgotten."""
        if isinstance(answer, Fetched):
            self._lru.put(key, OrderView.of(answer.order))
        elif (isinstance(answer, Refused) and isinstance(answer.error, NorceNotFoundError)) or (
            isinstance(answer, Written) and isinstance(action, Delete)
        ):
            self._lru.pop(key)

    def __len__(self) -> int:
        return len(self._lru)


def _okey(cmd: AnyCommand) -> OrderKey:
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
        self._clock = clock
        self._codec = codec
        self._policy = Policy(
            max_command_age_s=max_command_age_s,
            read_before_write=read_before_write,
            max_dead_letter_bytes=max_dead_letter_bytes or MAX_DEAD_LETTER_BYTES,
        )
        self._views = OrderViews(status_cache_size)
        # command id -> the bridge's view of the order before a PUT that succeeded, kept while
        # the command is retried after a later call (the re-fetch) failed.
        self._puts: Lru[str, OrderView] = Lru(PUT_DONE_LIMIT)
        self._replays = ReplayBook()

    def forget_recovery(self, scope: Hashable) -> None:
        """Drop the replay state of one partition assignment (it was revoked)."""
        self._replays.forget(scope)

    async def handle(
        self,
        command: AnyCommand,
        src: SourceRecord,
        *,
        suspect_since: datetime | None = None,
        scope: Hashable = None,
        delete_note: tuple[str | None] | None = None,
        dispatched_at: datetime | None = None,
        published: OrderState | None = None,
    ) -> Disposition:
        """Execute ``command``; ``suspect_since`` marks a possible replay (its window start).

        ``scope`` identifies the partition assignment the record came from, ``delete_note`` is
        a suspect delete's durably noted state, ``dispatched_at`` the read-before-write guard's
        window, ``published`` what the bridge last published for the order (the order state
        store): see :class:`bridge.decision.Known`. A systemic API error propagates (the runtime
        holds the command); a PUT that succeeded before it is remembered.
        """
        okey = _okey(command)
        if suspect_since is not None:
            # A replay claims its transition in the order's history like every other suspect,
            # so that the commands after it are matched from the right position.
            self._puts.pop(command.command_id)
            put_done = None
        else:
            put_done = self._puts.get(command.command_id)
        known = Known(
            now=self._clock(),
            cached=self._views.get(okey),
            put_done=put_done,
            suspect_since=suspect_since,
            scope=scope,
            delete_note=delete_note,
            dispatched_at=dispatched_at,
            published=published,
        )
        decision = Decision(command, src, known, self._replays, self._policy)
        action = decision.start()
        while not isinstance(action, Disposition):
            answer = await self._perform(command, action)
            self._views.saw(okey, answer, action)
            if isinstance(action, Put) and isinstance(answer, Written):
                self._puts.put(command.command_id, action.view_before)
            action = decision.feed(answer, self._clock())
        self._puts.pop(command.command_id)
        return action

    async def _perform(self, cmd: AnyCommand, action: Get | Put | Delete) -> Answer:
        """One API call; command faults become :class:`Refused`, anything else propagates."""
        scope = {"merchant": cmd.merchant, "channel": cmd.channel}
        try:
            if isinstance(action, Get):
                got = await self._api.get_order_json(cmd.order_id, **scope)
                return Fetched(got.value, got.attempts)
            if isinstance(action, Put):
                put = await self._api.set_state(cmd.order_id, action.state, **scope)
                return Written(put.attempts)
            gate = write_gate.get()
            if gate is not None:
                await gate.before_delete(action.previous)
            deleted = await self._api.delete_order(cmd.order_id, **scope)
            return Written(deleted.attempts)
        except (NorceNotFoundError, NorceInvalidRequestError, InvalidCommandError) as exc:
            return Refused(exc)

    # -- records that end without an API answer ---------------------------------------------

    def invalid(
        self, src: SourceRecord, error: InvalidCommandError, *, codec: AvroCodec | None = None
    ) -> Disposition:
        """An invalid record: dead letter, plus a failed result when its command id is readable
        (ids read with ``codec``, default the processor's; see :func:`invalid_record`)."""
        return invalid_record(
            src,
            error,
            now=self._clock(),
            codec=codec or self._codec,
            max_bytes=self._policy.max_dead_letter_bytes,
        )

    def internal_failure(
        self, cmd: AnyCommand, src: SourceRecord, exc: BaseException
    ) -> Disposition:
        """A command that kept failing for an unexpected reason (retried first): dead letter."""
        return internal_failure(
            cmd, src, exc, now=self._clock(), max_bytes=self._policy.max_dead_letter_bytes
        )

    def internal_error(
        self,
        src: SourceRecord,
        exc: BaseException,
        *,
        with_result: bool = True,
        codec: AvroCodec | None = None,
    ) -> Disposition:
        """The last resort for a record whose handling failed (see :func:`internal_error`)."""
        return internal_error(
            src,
            exc,
            now=self._clock(),
            codec=codec or self._codec,
            with_result=with_result,
            max_bytes=self._policy.max_dead_letter_bytes,
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
        ids: Ids | None = None,
        message: str | None = None,
    ) -> Output:
        """A bounded dead letter (see :func:`dead_letter`) stamped with this processor's clock."""
        return dead_letter(
            src,
            reason,
            exc,
            stage=stage,
            now=self._clock(),
            http_status=http_status,
            attempts=attempts,
            ids=ids,
            message=message,
            max_bytes=self._policy.max_dead_letter_bytes,
        )
