"""The steps of a ``SetOrderState`` command (README, "Processing" and "Replays").

(GET if the bridge has not seen the order, or a precondition, expiry, replay or the read guard
needs it) -> PUT state -> GET, and the outcome: ``applied``, ``already_applied`` (already there,
or found in the order's history during a replay), ``rejected`` (``expectedState`` not met),
``expired``, or ``failed`` (404 or 400: a dead letter).
"""

from __future__ import annotations

from typing import Any

from bridge.commands import SetOrderState, is_expired
from bridge.decision.announce import external_events, index_of
from bridge.decision.history import (
    EXECUTED,
    Claim,
    Recovery,
    ReplayBook,
    ReplayKey,
    transition_statuses,
)
from bridge.decision.protocol import Get, Known, OrderView, Policy, Put, Refused, Steps
from bridge.decision.report import Report
from bridge.errors import NorceInvalidRequestError, NorceNotFoundError
from bridge.events import latest_transition_at, parse_rfc3339
from bridge.order_state import OrderState
from bridge.outputs import Disposition, Output, snapshot_output, state_event_output
from bridge.vocabulary import DeadLetterReason, Outcome

__all__ = ["REPLAYED_REASON", "set_state"]

REPLAYED_REASON = "applied before a restart or rebalance"


def set_state(
    cmd: SetOrderState,
    k: Known,
    replays: ReplayBook,
    rkey: ReplayKey,
    policy: Policy,
    report: Report,
) -> Steps:
    """The steps of one ``SetOrderState``."""
    target = cmd.state.value
    if k.put_done is not None:
        # This command's PUT already succeeded; an earlier attempt failed after it.
        return (yield from _after_put(cmd, k.put_done, k.published, report))
    expired = is_expired(cmd, report.started, policy.max_command_age_s)
    known = prior = k.cached
    cached = known.status if known is not None else None
    replay = replays.get(rkey)
    recovering = k.suspect_since is not None and replay is not EXECUTED
    read_guard = policy.read_before_write and not recovering
    pre: dict[str, Any] | None = None
    if expired or cmd.expected_state is not None or known is None or recovering or read_guard:
        answer = yield Get()
        if isinstance(answer, Refused):
            error = report.refused(answer)
            if isinstance(error, NorceInvalidRequestError):
                return report.api_failure(error, DeadLetterReason.API_REJECTED)
            if recovering:
                # Deleted by a later command of this order that ran before the restart. The
                # history went with the order; this command's own event was published before
                # that delete was dispatched (same-order commands run one after the other, a
                # record is done only once its outputs are acknowledged): nothing new.
                rec = replay if isinstance(replay, Recovery) else Recovery.gone()
                # It moved the order to its target before the delete: that is the state a later
                # suspect delete of this replay deleted from, and what it produced.
                rec.position_status = target
                replays.set(rkey, rec)
                return report.result(
                    Outcome.ALREADY_APPLIED,
                    current=target,
                    reason="order no longer exists (deleted by a later command)",
                    replayed=True,
                )
            if expired:
                return report.result(Outcome.EXPIRED, reason=expired)
            return report.api_failure(error, DeadLetterReason.ORDER_NOT_FOUND)
        pre = report.fetched(answer)
        known = OrderView.of(pre)
        cached = known.status

    if expired:
        return report.result(Outcome.EXPIRED, reason=expired, current=cached)

    if (
        read_guard
        and prior is not None
        and known is not None
        and pre is not None
        and k.dispatched_at is not None
        and known.transitions != prior.transitions
    ):
        # The order changed since the bridge last saw it (another writer, or a previous owner
        # of the partition): check the transitions since this command was dispatched, like a
        # replay suspect, instead of writing blindly.
        claim = Recovery.from_order(pre, k.dispatched_at).claim(target)
        if claim.applied:
            return _replayed(cmd, pre, claim, k.published, report)

    if recovering and pre is not None and k.suspect_since is not None:
        if isinstance(replay, Recovery) and not replay.is_blank:
            matching = replay
        else:
            matching = Recovery.from_order(pre, k.suspect_since)
            replays.set(rkey, matching)
        claim = matching.claim(target)
        if claim.applied:
            return _replayed(cmd, pre, claim, k.published, report)
        replays.set(rkey, EXECUTED)

    if pre is not None and cached == target:
        # Already there (whatever the precondition said): nothing to do but report it.
        return report.result(
            Outcome.ALREADY_APPLIED,
            current=cached,
            reason=f"order is already {target}",
            outputs=[snapshot_output(cmd, pre, report.started)],
        )
    if cmd.expected_state is not None and cached != cmd.expected_state.value:
        return report.result(
            Outcome.REJECTED,
            current=cached,
            reason=f"expected state {cmd.expected_state.value}, order is {cached}",
        )

    assert known is not None  # always read before a PUT when unknown
    answer = yield Put(target, known)
    if isinstance(answer, Refused):
        error = report.refused(answer)
        if isinstance(error, NorceNotFoundError):
            return report.api_failure(error, DeadLetterReason.ORDER_NOT_FOUND)
        return report.api_failure(error, DeadLetterReason.API_REJECTED, current=cached)
    report.written(answer)
    return (yield from _after_put(cmd, known, k.published, report))


def _replayed(
    cmd: SetOrderState,
    order: dict[str, Any],
    claim: Claim,
    published: OrderState | None,
    report: Report,
) -> Disposition:
    """What the command's first execution published, rebuilt from the order's history."""
    target = cmd.state.value
    outputs: list[Output] = []
    if claim.newest:
        # Only the order's newest state may go to the compacted snapshot topic.
        outputs.append(snapshot_output(cmd, order, report.started))
    if published is not None and claim.transition is not None:
        # The external changes before its own transition that its first execution announced.
        own = index_of(order, claim.transition, published.transitions)
        if own is not None:
            outputs.extend(external_events(cmd, order, published.transitions, own, report.started))
    if claim.previous != target:
        t = claim.transition
        outputs.append(
            state_event_output(
                cmd,
                claim.previous,
                target,
                t.text if t is not None else None,
                t.at if t is not None and t.at is not None else report.started,
            )
        )
    return report.result(
        Outcome.ALREADY_APPLIED,
        current=target,
        reason=REPLAYED_REASON,
        outputs=outputs,
        replayed=True,
    )


def _after_put(
    cmd: SetOrderState, before: OrderView, published: OrderState | None, report: Report
) -> Steps:
    """Re-fetch after a successful PUT and build the outputs (``before`` = view before it;
    ``published``: what the bridge last published, whose later external changes are announced
    before this command's own, so the order's events stay an unbroken chain)."""
    target = cmd.state.value
    answer = yield Get()
    if isinstance(answer, Refused):
        error = report.refused(answer)
        if isinstance(error, NorceNotFoundError):
            return report.result(
                Outcome.APPLIED, reason="order was deleted before it could be re-fetched"
            )
        return report.api_failure(error, DeadLetterReason.API_REJECTED)
    order = report.fetched(answer)
    view = OrderView.of(order)
    outputs = [snapshot_output(cmd, order, report.started)]
    if view.transitions == before.transitions and view.status == target:
        # Transitions are append-only: none was added, so the order already was in the target
        # state (the bridge's view was current; the PUT was a same-state no-op).
        return report.result(
            Outcome.ALREADY_APPLIED,
            current=view.status,
            reason=f"order is already {target}",
            outputs=outputs,
        )
    history = transition_statuses(order)
    previous = before.status
    grew = view.transitions > before.transitions and len(history) >= 2
    if grew and history[-1] == view.status:
        previous = history[-2]  # the order's own history, not the bridge's memory
    new = view.status or target
    if grew and history[-1] == view.status and published is not None:
        outputs.extend(
            external_events(cmd, order, published.transitions, len(history) - 1, report.started)
        )
    stamp = latest_transition_at(order, new)
    at = parse_rfc3339(stamp) if stamp else None
    outputs.append(state_event_output(cmd, previous, new, stamp, at or report.started))
    return report.result(Outcome.APPLIED, current=view.status, outputs=outputs)
