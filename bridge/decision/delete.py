"""The steps of a ``DeleteOrder`` command (README, "Processing" and "Replays").

(GET if the bridge has not seen the order, or a precondition, expiry or the read guard needs
it) -> DELETE, and the outcome: ``applied``, ``already_applied`` (404: already deleted; or, in a
replay, the delete that reached Norce before the crash), ``rejected``, ``expired``, or
``failed`` (400: a dead letter).
"""

from __future__ import annotations

from bridge.commands import DeleteOrder, is_expired
from bridge.decision.history import EXECUTED, Recovery, ReplayBook, ReplayKey, status_of
from bridge.decision.protocol import Delete, Get, Known, Policy, Refused, Steps
from bridge.decision.report import Report
from bridge.decision.set_state import REPLAYED_REASON
from bridge.errors import NorceInvalidRequestError, NorceNotFoundError
from bridge.outputs import Disposition, deleted_outputs
from bridge.vocabulary import DeadLetterReason, Outcome

__all__ = ["delete"]


def delete(
    cmd: DeleteOrder,
    k: Known,
    replays: ReplayBook,
    rkey: ReplayKey,
    policy: Policy,
    report: Report,
) -> Steps:
    """The steps of one ``DeleteOrder``."""
    expired = is_expired(cmd, report.started, policy.max_command_age_s)
    previous = k.cached.status if k.cached is not None else None
    if expired or cmd.expected_state is not None or previous is None or policy.read_before_write:
        answer = yield Get()
        if isinstance(answer, Refused):
            error = report.refused(answer)
            if isinstance(error, NorceInvalidRequestError):
                return report.api_failure(error, DeadLetterReason.API_REJECTED)
            if not expired:
                return _gone(cmd, k, replays, rkey, report, None, note=k.delete_note)
            previous = None
        else:
            previous = status_of(report.fetched(answer))
    if expired:
        return report.result(Outcome.EXPIRED, reason=expired, current=previous)
    if cmd.expected_state is not None and previous != cmd.expected_state.value:
        return report.result(
            Outcome.REJECTED,
            current=previous,
            reason=f"expected state {cmd.expected_state.value}, order is {previous or 'deleted'}",
        )
    answer = yield Delete(previous)
    if isinstance(answer, Refused):
        error = report.refused(answer)
        if isinstance(error, NorceNotFoundError):
            return _gone(cmd, k, replays, rkey, report, previous)
        return report.api_failure(error, DeadLetterReason.API_REJECTED, current=previous)
    report.written(answer)
    if k.suspect_since is not None:
        replays.set(rkey, EXECUTED)
    return _deleted(cmd, report, previous, already=False)


def _gone(
    cmd: DeleteOrder,
    k: Known,
    replays: ReplayBook,
    rkey: ReplayKey,
    report: Report,
    previous: str | None,
    *,
    note: tuple[str | None] | None = None,
) -> Disposition:
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
    replay = replays.get(rkey)
    if (
        k.suspect_since is None
        or replay is EXECUTED
        or (isinstance(replay, Recovery) and replay.deleted)
    ):
        return _deleted(cmd, report, previous, already=True)
    rec = replay if isinstance(replay, Recovery) else Recovery.gone()
    rec.deleted = True
    replays.set(rkey, rec)
    known = note[0] if note is not None else rec.position_status
    return _deleted(cmd, report, known, already=False, replayed=True, reason=REPLAYED_REASON)


def _deleted(
    cmd: DeleteOrder,
    report: Report,
    previous: str | None,
    *,
    already: bool,
    replayed: bool = False,
    reason: str | None = None,
) -> Disposition:
    outputs = deleted_outputs(cmd, previous, already=already, now=report.started)
    if reason is None and already:
        reason = "order already deleted"
    outcome = Outcome.ALREADY_APPLIED if already or replayed else Outcome.APPLIED
    return report.result(outcome, reason=reason, outputs=outputs, replayed=replayed)
