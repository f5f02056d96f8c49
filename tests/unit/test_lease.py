"""The membership lease that fences Norce writes, driven by an injected clock."""

from __future__ import annotations

import pytest

from bridge.config import load_settings
from bridge.errors import ConfigError
from bridge.lease import MembershipLease, lease_clock, lease_margin_s


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(timeout_s: float = 6.0) -> tuple[MembershipLease, FakeClock]:
    clock = FakeClock()
    return MembershipLease(timeout_s, lease_margin_s(timeout_s), clock=clock), clock


def test_no_lease_before_the_first_successful_heartbeat() -> None:
    """A member that never heard back from the coordinator may not write."""
    lease, _ = make()
    assert lease.age() is None
    assert not lease.valid()


def test_lease_holds_below_the_timeout_minus_the_margin() -> None:
    """Valid while the last successful heartbeat was sent less than timeout - margin ago."""
    lease, clock = make(6.0)
    assert lease.limit_s == pytest.approx(4.8)
    lease.renew(clock.now)
    clock.now += 4.79
    assert lease.valid()
    clock.now += 0.02
    assert not lease.valid()


def test_age_is_measured_from_when_the_heartbeat_was_sent() -> None:
    """A heartbeat answered late renews from its send time, not from the answer."""
    lease, clock = make(6.0)
    sent = clock.now
    clock.now += 5.0  # the answer arrives after a pause
    lease.renew(sent)
    assert lease.age() == pytest.approx(5.0)
    assert not lease.valid()


def test_a_pause_expires_the_lease_and_the_next_heartbeat_renews_it() -> None:
    """A pause longer than the limit shows as expired at once; a later heartbeat revives it."""
    lease, clock = make(10.0)
    lease.renew(clock.now)
    assert lease.valid()
    clock.now += 9.0  # SIGSTOP'd, or a long GC pause
    assert not lease.valid()
    assert lease.lost_count == 1
    lease.renew(clock.now)
    assert lease.valid()
    assert not lease.valid() or lease.lost_count == 1


def test_an_older_heartbeat_answer_never_moves_the_lease_back() -> None:
    """Answers may arrive out of order; the newest send time wins."""
    lease, clock = make()
    lease.renew(clock.now)
    lease.renew(clock.now - 3.0)
    assert lease.age() == pytest.approx(0.0)


def test_idle_member_keeps_its_lease_with_regular_heartbeats() -> None:
    """Heartbeats every interval keep the lease valid indefinitely without any traffic."""
    lease, clock = make(6.0)
    for _ in range(100):
        lease.renew(clock.now)
        clock.now += 2.0  # heartbeat interval for a 6 s session
        assert lease.valid()
    assert lease.lost_count == 0


def test_each_loss_is_counted_once() -> None:
    """lost_count counts transitions from valid to lost, not checks."""
    lease, clock = make(6.0)
    lease.renew(clock.now)
    assert lease.valid()
    clock.now += 100
    for _ in range(5):
        assert not lease.valid()
    assert lease.lost_count == 1
    lease.renew(clock.now)
    assert lease.valid()
    lease.revoke()
    assert not lease.valid()
    assert lease.lost_count == 2


def test_margin_is_at_least_one_second_and_a_fifth_of_the_timeout() -> None:
    """Short sessions keep 1 s; long ones 20 %."""
    assert lease_margin_s(6.0) == pytest.approx(1.2)
    assert lease_margin_s(3.0) == pytest.approx(1.0)
    assert lease_margin_s(30.0) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="margin"):
        MembershipLease(1.0, 1.0)


def test_lease_clock_is_monotonic() -> None:
    """The lease clock never goes back."""
    a = lease_clock()
    b = lease_clock()
    assert b >= a


def test_revoke_deadline_longer_than_the_session_timeout_is_refused() -> None:
    """A revoke that could outlast the session gets the member expelled mid-revoke: refused."""
    with pytest.raises(ConfigError) as info:
        load_settings(kafka={"session_timeout_ms": 6000})
    text = str(info.value)
    assert "BRIDGE_PROCESSING__REVOKE_DEADLINE_S" in text
    assert "BRIDGE_KAFKA__SESSION_TIMEOUT_MS" in text
    with pytest.raises(ConfigError, match="BRIDGE_KAFKA__REBALANCE_TIMEOUT_MS"):
        load_settings(kafka={"rebalance_timeout_ms": 10_000}, processing={"revoke_deadline_s": 9})


def test_rebalance_timeout_is_derived_from_the_revoke_deadline() -> None:
    """Default rebalance timeout: the session timeout, or revoke deadline + 10 s if longer."""
    s = load_settings(kafka={"session_timeout_ms": 6000}, processing={"revoke_deadline_s": 3})
    assert s.kafka.effective_rebalance_timeout_ms(3) == 13_000
    s = load_settings()
    assert s.kafka.effective_rebalance_timeout_ms(s.processing.revoke_deadline_s) == 30_000
