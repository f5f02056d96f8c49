"""The dispositions of one command: results, API failures and dead letters, with attempts.

A :class:`Report` belongs to one command's decision. It counts the HTTP attempts of the answers
it is shown and builds the ``CommandResult`` (and dead letter) of every way the command can end.
The times are passed in: ``started`` (expiry, snapshots, events) and ``now`` (the latest
answer's arrival: ``processedAt`` and the dead letter's timestamp).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.commands import AnyCommand
from bridge.deadletter import STAGE_API, STAGE_PARSE, dead_letter
from bridge.decision.protocol import Fetched, Policy, Refused, Written
from bridge.errors import (
    InvalidCommandError,
    NorceApiError,
    NorceInvalidRequestError,
    NorceNotFoundError,
    UnmappableOrderError,
)
from bridge.outputs import Disposition, Ids, Output, SourceRecord, result_output
from bridge.vocabulary import DeadLetterReason, Outcome

__all__ = ["Report"]


class Report:
    """Attempts so far and the builders of one command's dispositions."""

    def __init__(
        self,
        command: AnyCommand,
        src: SourceRecord,
        policy: Policy,
        started: datetime,
    ) -> None:
        self.command = command
        self.started = started
        self.now = started
        self._src = src
        self._policy = policy
        self._attempts = 0  # HTTP attempts of the calls answered so far

    def fetched(self, answer: Fetched | Written) -> dict[str, Any]:
        """The order a GET returned (its attempts counted)."""
        if not isinstance(answer, Fetched):
            raise TypeError(f"a GET is answered with Fetched, got {type(answer).__name__}")
        self._attempts += answer.attempts
        return answer.order

    def written(self, answer: Fetched | Written) -> None:
        """A PUT or DELETE succeeded (its attempts counted)."""
        self._attempts += answer.attempts

    def refused(self, answer: Refused) -> NorceNotFoundError | NorceInvalidRequestError:
        """The API's refusal (its attempts counted). A client refusal (a value it cannot send)
        is raised: the command is invalid, a dead letter (see :meth:`invalid`)."""
        error = answer.error
        if isinstance(error, InvalidCommandError):
            raise error
        self._attempts += error.attempts
        return error

    def result(
        self,
        outcome: Outcome,
        *,
        reason: str | None = None,
        current: str | None = None,
        http_status: int | None = None,
        outputs: list[Output] | None = None,
        dead_letter_reason: DeadLetterReason | None = None,
        replayed: bool = False,
    ) -> Disposition:
        """The disposition: ``outputs`` followed by the command's result."""
        cmd = self.command
        result = result_output(
            Ids.of(cmd),
            self._src,
            outcome,
            reason,
            now=self.now,
            attempts=self._attempts,
            current=current,
            http_status=http_status,
            replayed=replayed,
        )
        out = [*(outputs or []), result]
        return Disposition(outcome, cmd.type, out, reason, dead_letter_reason)

    def api_failure(
        self, exc: NorceApiError, reason: DeadLetterReason, *, current: str | None = None
    ) -> Disposition:
        """The API refused the command (a command fault): dead letter and ``failed``."""
        dlq = dead_letter(
            self._src,
            reason,
            exc,
            stage=STAGE_API,
            now=self.now,
            http_status=exc.status,
            attempts=self._attempts,
            ids=Ids.of(self.command),
            max_bytes=self._policy.max_dead_letter_bytes,
        )
        return self.result(
            Outcome.FAILED,
            reason=f"{reason}: {api_detail(exc)}",
            current=current,
            http_status=exc.status,
            outputs=[dlq],
            dead_letter_reason=reason,
        )

    def invalid(self, exc: InvalidCommandError) -> Disposition:
        """The command cannot be executed as given, or Norce's answer cannot be mapped:
        deterministic, so a dead letter at once (no retry) and ``failed``."""
        stage = STAGE_API if isinstance(exc, UnmappableOrderError) else STAGE_PARSE
        reason = DeadLetterReason(exc.reason)
        dlq = dead_letter(
            self._src,
            reason,
            exc,
            stage=stage,
            now=self.now,
            ids=Ids.of(self.command),
            max_bytes=self._policy.max_dead_letter_bytes,
        )
        self._attempts = 0
        return self.result(
            Outcome.FAILED,
            reason=f"{exc.reason}: {exc.message}",
            outputs=[dlq],
            dead_letter_reason=reason,
        )


def api_detail(exc: NorceApiError) -> str:
    """``HTTP 400 code message`` (or ``no response``) for a failed result's reason."""
    parts = [f"HTTP {exc.status}" if exc.status else "no response"]
    if exc.code:
        parts.append(exc.code)
    if exc.api_message:
        parts.append(exc.api_message)
    return " ".join(parts)
