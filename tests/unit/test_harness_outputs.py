"""The test harness's "all outputs read" check: ``Outputs.missing_outputs``.

Results, snapshots and events travel on different topics; at-least-once they are separate
writes, so a reader can see a command's result before its snapshot or event. The integration
tests wait on ``missing_outputs()``: it must name every applied command whose outputs are not
all read yet, refreshes included (a CI run once read a refresh's result before its snapshot).
"""

from __future__ import annotations

from typing import Any

from bridge_devkit.harness import Outputs

from bridge.decision.refresh import CHANGED_REASON, DELETED_REASON


def result(command_id: str, command_type: str, outcome: str, reason: str | None) -> dict[str, Any]:
    return {
        "commandId": command_id,
        "commandType": command_type,
        "outcome": outcome,
        "reason": reason,
    }


def test_an_applied_refresh_waits_for_its_snapshot() -> None:
    out = Outputs(results=[result("r1", "RefreshOrder", "applied", "first snapshot of the order")])
    assert out.missing_outputs() == {"r1"}
    out.snapshots.append(("o1", {"commandId": "r1"}))
    assert out.missing_outputs() == set()


def test_a_refresh_that_saw_a_change_waits_for_snapshot_and_event() -> None:
    out = Outputs(
        results=[result("r2", "RefreshOrder", "applied", f"{CHANGED_REASON}: a -> b")],
        snapshots=[("o1", {"commandId": "r2"})],
    )
    assert out.missing_outputs() == {"r2"}
    out.events.append(("OrderStateChanged", {"commandId": "r2"}))
    assert out.missing_outputs() == set()


def test_a_refresh_of_a_deleted_order_waits_for_order_deleted_only() -> None:
    out = Outputs(
        results=[result("r3", "RefreshOrder", "applied", DELETED_REASON)],
        snapshots=[("o1", None)],
    )
    assert out.missing_outputs() == {"r3"}
    out.events.append(("OrderDeleted", {"commandId": "r3"}))
    assert out.missing_outputs() == set()


def test_commands_that_published_nothing_wait_for_nothing() -> None:
    out = Outputs(
        results=[
            result("r4", "RefreshOrder", "already_applied", "unchanged"),
            result("s1", "SetOrderState", "expired", None),
            result("s2", "SetOrderState", "failed", "rejected"),
        ]
    )
    assert out.missing_outputs() == set()


def test_set_state_waits_for_event_and_snapshot_delete_for_its_event() -> None:
    out = Outputs(
        results=[
            result("s3", "SetOrderState", "applied", None),
            result("d1", "DeleteOrder", "applied", None),
        ],
        events=[("OrderStateChanged", {"commandId": "s3"})],
    )
    assert out.missing_outputs() == {"s3", "d1"}
    out.snapshots.append(("o1", {"commandId": "s3"}))
    out.events.append(("OrderDeleted", {"commandId": "d1"}))
    assert out.missing_outputs() == set()
