"""The fencing checks of a chaos run, and how its fencing steps are reported.

``fencing``: every PUT/DELETE in the simulator's call log was made by the incarnation that owned
the order's partition at that moment (``attribute_writes``); ``scenarios``: each pause had writes
in backoff and its partitions reassigned, each expulsion a hanging write and a revoke the group
finished without the victim.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bridge_devkit.chaos.checks import Check, InputRecord, Problems
from bridge_devkit.chaos.fencing import (
    WRITE_METHODS,
    FenceStep,
    FenceViolation,
    WriteCall,
    attribute_writes,
)
from bridge_devkit.chaos.fleet import Fleet, adapter_id
from bridge_devkit.chaos.plan import Profile
from bridge_devkit.harness import parse_ts


class FenceReview:
    """Reads the fleet's logs and the fencing steps after a run."""

    def __init__(self, fleet: Fleet, steps: list[FenceStep], label: str, profile: Profile) -> None:
        self.fleet = fleet
        self.steps = steps
        self.label = label
        self.profile = profile
        self.violations: list[FenceViolation] = []

    def check(
        self,
        inputs: list[InputRecord],
        partition_of: dict[str, int],
        sim_calls: dict[str, list[dict[str, Any]]],
        problems: Problems,
    ) -> list[Check]:
        """``fencing`` (every write by the owner of its partition) and ``scenarios`` (the steps
        happened as described); the violations are kept in ``violations``."""
        checks: list[Check] = []
        fleet = self.fleet
        partition_of = dict(partition_of)
        for r in inputs:  # the topic as read back is the truth
            if r.spec is not None and r.spec.order_id:
                partition_of[r.spec.order_id] = r.partition
        fleet.poll_logs()
        events = [e for tail in fleet.tails.values() for e in tail.events]
        incarnation_of = {adapter_id(self.label, inc.n): inc.n for inc in fleet.incarnations}
        calls = [
            WriteCall(
                parse_ts(c["ts"]),
                c["method"],
                order_id,
                c["headers"].get("x-adapterid"),
                c["status"],
                c.get("fault"),
            )
            for order_id, per_order in sim_calls.items()
            for c in per_order
            if c["method"] in WRITE_METHODS
        ]
        violations = attribute_writes(calls, partition_of, events, incarnation_of)
        kinds = Counter(v.kind for v in violations)
        for v in violations:
            per = problems.orders["fencing"]
            per[v.call.order_id] = "; ".join(filter(None, [per.get(v.call.order_id), v.describe()]))
        self.violations = violations
        writers = Counter(incarnation_of.get(c.adapter or "", 0) for c in calls)
        checks.append(
            Check(
                "fencing",
                not violations,
                f"writes by a process after its partition was reassigned: {kinds['reassigned']}; "
                f"writes outside the writer's assignment: {kinds['unowned']}; unattributed: "
                f"{kinds['unattributed']} (of {len(calls)} PUT/DELETE by {len(writers)} "
                f"incarnations, {len(events)} assignment/revoke log lines)",
            )
        )
        # the scenarios really happened as the issue describes them
        pauses = [s for s in self.steps if s.kind == "pause"]
        expels = [s for s in self.steps if s.kind == "expel"]
        good_pauses = [s for s in pauses if s.in_backoff and s.reassigned]
        good_expels = [s for s in expels if s.hang_seen_at and s.revoking and self.expelled(s)]
        p = self.profile
        checks.append(
            Check(
                "scenarios",
                len(good_pauses) >= p.pauses and len(good_expels) >= p.expulsions,
                f"{len(good_pauses)}/{p.pauses} pauses with writes in backoff and the "
                f"partitions reassigned meanwhile; {len(good_expels)}/{p.expulsions} expulsions "
                "during a revoke with a hanging write",
            )
        )
        return checks

    def victim_after(self, step: FenceStep) -> dict[str, Any]:
        """What the victim of a fencing step logged after it was stopped."""
        tail = self.fleet.tails.get(step.victim or -1)
        stopped = step.stopped_at or 0.0
        out: dict[str, Any] = {"revoked_at": None, "cancelled": 0, "lease": 0, "abandoned": 0}
        if tail is None:
            return out
        tail.poll()
        revokes = [r for r in tail.revokes if r[0] > stopped]
        if revokes:
            out["revoked_at"], _, out["cancelled"] = revokes[0]
        # until its next step (or the end): what the wake-up of this victim caused
        later = [s.stopped_at for s in self.steps if s.stopped_at and s.stopped_at > stopped]
        until = min(later) if later else float("inf")
        out["lease"] = sum(1 for ts in tail.lease_expired if stopped < ts < until)
        out["abandoned"] = sum(1 for ts, _ in tail.abandoned if stopped < ts < until)
        return out

    def expelled(self, step: FenceStep) -> bool:
        """The group gave the victim's partitions away before the victim finished its revoke."""
        after = self.victim_after(step)
        revoked_at = after["revoked_at"]
        return (
            step.reassigned is not None
            and revoked_at is not None
            and step.reassigned[0] < revoked_at
        )

    def rows(self) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        n_pause = n_expel = 0
        for step in self.steps:
            after = self.victim_after(step)
            moved = (
                f"its partitions went to #{step.reassigned[1]} "
                f"{step.reassigned[0] - (step.stopped_at or 0):.1f}s after the stop"
                if step.reassigned
                else "its partitions were NOT reassigned"
            )
            woke = (
                f"after SIGCONT: lease expired {after['lease']}x, {after['abandoned']} "
                f"command(s) abandoned before their write, revoke cancelled {after['cancelled']}"
            )
            notes = f" [{'; '.join(step.notes)}]" if step.notes else ""
            if step.kind == "pause":
                n_pause += 1
                rows.append(
                    (
                        f"SIGSTOP in backoff #{n_pause}",
                        f"t={step.t:.1f}s bridge #{step.victim} (partitions "
                        f"{sorted(step.partitions)}) stopped {step.stopped_s:.1f}s with "
                        f"{len(step.in_backoff)} write(s) in retry backoff (503 + Retry-After); "
                        f"{moved}; {woke}{notes}",
                    )
                )
            else:
                n_expel += 1
                revoke_s = (
                    f"its revoke ended {after['revoked_at'] - (step.join_at or 0):.1f}s after "
                    "the join"
                    if after["revoked_at"]
                    else "no revoke logged"
                )
                rows.append(
                    (
                        f"expulsion #{n_expel}",
                        f"t={step.t:.1f}s bridge #{step.victim} (partitions "
                        f"{sorted(step.partitions)}): a write hanging"
                        f"{'' if step.hang_seen_at else ' (NOT seen)'}, an instance joined, "
                        f"stopped {'during' if step.revoking else 'NOT during'} its revoke for "
                        f"{step.stopped_s:.1f}s; "
                        f"{'expelled' if self.expelled(step) else 'NOT expelled'} "
                        f"({moved}, {revoke_s}); {woke}{notes}",
                    )
                )
        return rows
