"""The pure decision core of one command: what to ask the Norce API next, and what it all meant.

A :class:`Decision` is built with the command and everything known when it starts (the bridge's
view of the order, whether this command's PUT already went through, the replay state, the time)
and is then driven step by step, in the shape of h11::

    action = decision.start()
    while not isinstance(action, Done):
        answer = <perform action: GET, PUT state or DELETE>   # the driver's only job
        action = decision.feed(answer, now)

Actions are :class:`Get`, :class:`Put`, :class:`Delete` and :data:`Done` (the record's
:class:`~bridge.outputs.Disposition`: outcome and outputs). Answers are :class:`Fetched`,
:class:`Written`, or :class:`Refused` (the API said 404/400, or the client refused the
command's values). Systemic failures (Norce down, throttled, bad credentials) never reach the
core: the driver lets them propagate and the runtime holds the command. Nothing here awaits,
reads a clock or does I/O, so every row of the README's "Processing" table and every replay case
is a deterministic unit test (``tests/unit/test_decision.py``).

Replays: a record that may already have reached the API before a crash or rebalance is handled
with ``suspect_since`` (the start of its dispatch window). Its order's transitions since that
window are matched against the suspect commands of that order in offset order
(:mod:`bridge.decision.history`); a command found there is reported ``already_applied`` with what
its first execution published, instead of being executed again, so a replay never moves an
order backwards.
"""

from __future__ import annotations

from datetime import datetime

from bridge.commands import AnyCommand, DeleteOrder, SetOrderState
from bridge.decision.delete import delete
from bridge.decision.history import ReplayBook
from bridge.decision.protocol import (
    Action,
    Answer,
    Delete,
    Done,
    Fetched,
    Get,
    Known,
    OrderView,
    Policy,
    Put,
    Refused,
    Steps,
    Written,
)
from bridge.decision.refresh import refresh
from bridge.decision.report import Report
from bridge.decision.set_state import REPLAYED_REASON, set_state
from bridge.errors import InvalidCommandError
from bridge.outputs import Disposition, SourceRecord

__all__ = [
    "REPLAYED_REASON",
    "Action",
    "Answer",
    "Decision",
    "Delete",
    "Done",
    "Fetched",
    "Get",
    "Known",
    "OrderView",
    "Policy",
    "Put",
    "Refused",
    "ReplayBook",
    "Written",
]


class Decision:
    """The decision for one command, advanced by :meth:`start` and :meth:`feed`."""

    def __init__(
        self,
        command: AnyCommand,
        src: SourceRecord,
        known: Known,
        replays: ReplayBook,
        policy: Policy,
    ) -> None:
        self.command = command
        self._known = known
        self._replays = replays
        self._rkey = (known.scope, command.merchant, command.channel, command.order_id)
        self._report = Report(command, src, policy, known.now)
        self._steps: Steps
        if isinstance(command, SetOrderState):
            self._steps = set_state(command, known, replays, self._rkey, policy, self._report)
        elif isinstance(command, DeleteOrder):
            self._steps = delete(command, known, replays, self._rkey, policy, self._report)
        else:
            self._steps = refresh(command, known, policy, self._report)
        self._started = False
        self._finished = False

    def start(self) -> Action:
        """The first action."""
        if self._started:
            raise RuntimeError("the decision was started already; feed it answers")
        self._started = True
        if self._known.suspect_since is None:
            self._replays.discard(self._rkey)  # a fresh command ends this order's matching
        return self._advance(None)

    def feed(self, answer: Answer, now: datetime) -> Action:
        """The API's answer to the last action, and the time it arrived: the next action."""
        if not self._started or self._finished:
            raise RuntimeError("feed answers only to a started decision that is not done")
        self._report.now = now
        return self._advance(answer)

    def _advance(self, answer: Answer | None) -> Action:
        try:
            # The first send must be None (it starts the generator); answers follow.
            return self._steps.send(answer)  # type: ignore[arg-type]
        except StopIteration as stop:
            done: Disposition = stop.value
        except InvalidCommandError as exc:
            # The command itself is bad (a header value the client cannot carry) or Norce's
            # answer to it cannot be mapped: deterministic, so a dead letter at once, no retry.
            done = self._report.invalid(exc)
        self._finished = True
        return done
