"""The steps of a ``RefreshOrder`` command (README, "Processing" and "Refresh and the order state
store").

GET (always: the snapshot must come from a fresh read), compared with what the bridge last
*published* for the order (``Known.published``, the durable order state store), and the outcome:

* ``applied``: the snapshot is published; with ``OrderStateChanged`` (``source=external``) when
  the status differs from the last published one — or, for an order the bridge never published,
  when the refresh comes from a notification (reason ``notification``: Norce says it changed; the
  previous status is the one before its latest transition); a 404 publishes the tombstone and
  ``OrderDeleted``.
* ``already_applied``: nothing is published, because the order is exactly as last published
  (reason ``unchanged``), the read is older than what was published (``stale read``: fewer
  transitions, or the order reads as existing after its tombstone), or it is gone and its
  tombstone was published already.
* ``expired``: nothing is published (the current state is reported).
* ``failed``: the API refused the read (400): a dead letter.

No write to Norce: no write gate, no replay matching; a replay is idempotent through the state
store (the first execution's state record is committed with its outputs).
"""

from __future__ import annotations

from bridge.commands import RefreshOrder, is_expired
from bridge.decision.announce import external_events
from bridge.decision.history import transition_statuses
from bridge.decision.protocol import Get, Known, OrderView, Policy, Refused, Steps
from bridge.decision.report import Report
from bridge.errors import NorceInvalidRequestError
from bridge.events import SOURCE_EXTERNAL, latest_transition_at, parse_rfc3339
from bridge.order_state import order_digest
from bridge.outputs import Output, deleted_outputs, snapshot_output, state_event_output
from bridge.vocabulary import DeadLetterReason, Outcome

__all__ = [
    "CHANGED_REASON",
    "DELETED_REASON",
    "NOTIFICATION_REASON",
    "STALE_REASON",
    "UNCHANGED_REASON",
    "refresh",
]

NOTIFICATION_REASON = "notification"
"""The ``reason`` of the RefreshOrder commands the notification relay produces."""
UNCHANGED_REASON = "unchanged"
STALE_REASON = "stale read"
DELETED_REASON = "order deleted outside the bridge"
"""An applied refresh's reason when it published the tombstone and ``OrderDeleted``."""
CHANGED_REASON = "state changed outside the bridge"
"""The start of an applied refresh's reason when it published ``OrderStateChanged`` too."""


def refresh(cmd: RefreshOrder, k: Known, policy: Policy, report: Report) -> Steps:
    """The steps of one ``RefreshOrder``."""
    expired = is_expired(cmd, report.started, policy.max_command_age_s)
    last = k.published
    answer = yield Get()
    if isinstance(answer, Refused):
        error = report.refused(answer)
        if isinstance(error, NorceInvalidRequestError):
            return report.api_failure(error, DeadLetterReason.API_REJECTED)
        if expired:
            return report.result(Outcome.EXPIRED, reason=expired)
        if last is not None and last.deleted:
            return report.result(
                Outcome.ALREADY_APPLIED, reason="order already deleted (its tombstone is published)"
            )
        previous = last.status if last is not None else None
        return report.result(
            Outcome.APPLIED,
            reason=DELETED_REASON,
            outputs=deleted_outputs(cmd, previous, already=False, now=report.started),
        )
    order = report.fetched(answer)
    view = OrderView.of(order)
    if expired:
        return report.result(Outcome.EXPIRED, reason=expired, current=view.status)
    if last is not None and last.deleted:
        return report.result(
            Outcome.ALREADY_APPLIED,
            current=view.status,
            reason=f"{STALE_REASON}: the order reads as existing after its tombstone was published",
        )
    if last is not None and view.transitions < last.transitions:
        return report.result(
            Outcome.ALREADY_APPLIED,
            current=last.status,
            reason=(
                f"{STALE_REASON}: {view.transitions} transitions, "
                f"{last.transitions} already published"
            ),
        )
    if last is not None and order_digest(order) == last.digest:
        return report.result(Outcome.ALREADY_APPLIED, current=view.status, reason=UNCHANGED_REASON)
    outputs: list[Output] = [snapshot_output(cmd, order, report.started)]
    reason = "snapshot published" if last is not None else "first snapshot of the order"
    previous = last.status if last is not None else None
    if last is None and cmd.reason == NOTIFICATION_REASON and view.status is not None:
        # Never published, but Norce says it changed: announce the change the notification is
        # about (the order's latest transition; the status before it from the order's own
        # history). A backfill's or an operator's first refresh is only a baseline.
        history = transition_statuses(order)
        previous = history[-2] if len(history) >= 2 and history[-1] == view.status else None
        changed = True
    elif last is not None and view.transitions > last.transitions:
        # Every transition since the last published snapshot, one event each, in order.
        events = external_events(cmd, order, last.transitions, view.transitions, report.started)
        if events:
            outputs.extend(events)
            reason = (
                f"{CHANGED_REASON}: {last.status} -> {view.status} ({len(events)} transition(s))"
            )
        changed = False
    else:
        changed = last is not None and view.status is not None and view.status != last.status
    if changed and view.status is not None:
        stamp = latest_transition_at(order, view.status)
        at = parse_rfc3339(stamp) if stamp else None
        outputs.append(
            state_event_output(
                cmd,
                previous,
                view.status,
                stamp,
                at or report.started,
                source=SOURCE_EXTERNAL,
                transitions=view.transitions,
            )
        )
        reason = f"{CHANGED_REASON}: {previous} -> {view.status}"
    return report.result(Outcome.APPLIED, current=view.status, reason=reason, outputs=outputs)
