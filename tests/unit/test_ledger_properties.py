"""The replay invariant of :mod:`bridge.ledger`, checked with a simulated crash at every step.

A small world drives ledgers the way the runtime does: records are produced, fetched, admitted
(or held until a reservation commit), dispatched (which may reach the API), completed in any
order and committed. A crash throws the ledger and everything in memory away; the next owner
starts a fresh ledger from the last *committed* (offset, metadata) and the partition's end offset.
In exactly-once mode outputs become visible only when the transaction (with the offset) commits.

For every random action sequence, and for every prefix of it followed by a crash and a clean
finish, the world checks:

* nothing is lost: at the end every produced offset has its outputs;
* nothing done is dispatched again unless reported suspect (a fresh dispatch never repeats one
  that may have reached the API), and nothing is skipped that is not done;
* a suspect's history window starts no later than any earlier dispatch of that record;
* the reservation is never passed without a commit: every dispatch is below the committed limit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ledger import CommitMeta, Fate, PartitionLedger

CHUNK = 3
Action = tuple[str, int]


@dataclass
class World:
    eos: bool
    produced: int
    committed: tuple[int, str] | None = None
    clock: int = 1_000
    visible: set[int] = field(default_factory=set)  # offsets whose outputs exist
    dispatch_times: dict[int, list[int]] = field(default_factory=dict)
    fresh_runs: Counter[int] = field(default_factory=Counter)
    suspect_runs: Counter[int] = field(default_factory=Counter)
    outputs: Counter[int] = field(default_factory=Counter)
    # the current owner's memory (lost in a crash)
    ledger: PartitionLedger[int] = field(init=False)
    fetched: int = 0
    ready: list[int] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)
    unpublished: list[int] = field(default_factory=list)  # exactly-once: in the open transaction
    fates: dict[int, Fate] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.restart()

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def restart(self) -> None:
        """A crash: a new owner starts from the committed state (an open transaction aborts)."""
        self.ledger = PartitionLedger(self.committed, end_offset=self.produced)
        self.fetched = self.ledger.seek_to or 0
        self.ready = []
        self.in_flight = []
        self.unpublished = []
        self.fates = {}

    def committed_limit(self) -> int:
        if self.committed is None:
            return 0
        limit = CommitMeta.decode(self.committed[1], self.committed[0]).limit
        return self.committed[0] if limit is None else limit

    def fetch(self) -> None:
        if self.fetched >= self.produced:
            return
        offset = self.fetched
        self.fetched += 1
        verdict = self.ledger.accept(offset)
        assert verdict is not None
        assert verdict.offset == offset
        if verdict.fate is Fate.SKIP:
            assert offset in self.visible, f"offset {offset} skipped but its outputs do not exist"
            return
        earlier = self.dispatch_times.get(offset, [])
        if verdict.fate is Fate.DISPATCH:
            assert not earlier, f"offset {offset} dispatched as new but it may have run before"
        else:
            assert verdict.window_start_ms is not None
            assert all(verdict.window_start_ms <= t for t in earlier), (offset, verdict, earlier)
            assert offset < self.committed_limit()
        self.fates[offset] = verdict.fate
        if self.ledger.admit(offset, offset):
            self.ready.append(offset)

    def reserve(self) -> None:
        if not self.ledger.needs_reservation:
            return
        self.commit(self.ledger.reservation_target(CHUNK))
        self.ready.extend(self.ledger.release())

    def dispatch(self, pick: int) -> None:
        if not self.ready:
            return
        offset = self.ready.pop(pick % len(self.ready))
        assert offset < self.committed_limit(), "dispatched past the committed reservation"
        now = self.tick()
        self.ledger.dispatched(offset, now)
        self.dispatch_times.setdefault(offset, []).append(now)
        runs = self.fresh_runs if self.fates[offset] is Fate.DISPATCH else self.suspect_runs
        runs[offset] += 1
        self.in_flight.append(offset)

    def complete(self, pick: int) -> None:
        if not self.in_flight:
            return
        offset = self.in_flight.pop(pick % len(self.in_flight))
        if self.eos:
            self.unpublished.append(offset)
        else:
            self.publish(offset)
        self.ledger.complete(offset)

    def publish(self, offset: int) -> None:
        self.visible.add(offset)
        self.outputs[offset] += 1

    def commit(self, new_limit: int | None = None) -> None:
        request = self.ledger.commit_request(self.tick(), new_limit)
        if request is None:
            return
        for offset in self.unpublished:  # the transaction commits outputs with the offset
            self.publish(offset)
        self.unpublished = []
        self.committed = (request.offset, request.metadata)
        self.ledger.committed(request)

    def step(self, action: Action) -> None:
        name, arg = action
        if name == "produce":
            self.produced += arg
        elif name == "fetch":
            for _ in range(arg):
                self.fetch()
        elif name == "reserve":
            self.reserve()
        elif name == "dispatch":
            self.dispatch(arg)
        elif name == "complete":
            self.complete(arg)
        elif name == "commit":
            self.commit()
        else:
            self.restart()

    def finish(self) -> None:
        """No more crashes: the owner works until everything is done and committed."""
        for _ in range(10 * self.produced + 10):
            self.fetch()
            self.reserve()
            while self.ready:
                self.dispatch(0)
            while self.in_flight:
                self.complete(0)
            self.commit()
            if self.fetched >= self.produced and self.ledger.position >= self.produced:
                break

    def check_end(self) -> None:
        assert self.visible == set(range(self.produced)), "an offset was lost"
        assert self.committed is None or self.committed[0] == self.produced or self.produced == 0
        for offset in range(self.produced):
            assert self.fresh_runs[offset] <= 1, f"offset {offset} executed fresh twice"
            # outputs repeat only for a record re-run as a suspect (the processor matches it)
            assert self.outputs[offset] <= 1 + self.suspect_runs[offset]


actions = st.lists(
    st.one_of(
        st.tuples(st.just("produce"), st.integers(1, 4)),
        st.tuples(st.just("fetch"), st.integers(1, 4)),
        st.tuples(st.just("reserve"), st.just(0)),
        st.tuples(st.just("dispatch"), st.integers(0, 7)),
        st.tuples(st.just("complete"), st.integers(0, 7)),
        st.tuples(st.just("commit"), st.just(0)),
        st.tuples(st.just("crash"), st.just(0)),
    ),
    max_size=40,
)


@given(eos=st.booleans(), initial=st.integers(0, 6), steps=actions)
@settings(max_examples=250, deadline=None)
def test_a_crash_at_every_step_loses_nothing_and_repeats_nothing(
    eos: bool, initial: int, steps: list[Action]
) -> None:
    """Run each prefix, crash, restart from the committed state, finish: the invariant holds."""
    for cut in range(len(steps) + 1):
        world = World(eos=eos, produced=initial)
        for action in steps[:cut]:
            world.step(action)
        world.restart()
        world.finish()
        world.check_end()


@given(eos=st.booleans(), initial=st.integers(0, 6), steps=actions, crashes=st.integers(1, 3))
@settings(max_examples=150, deadline=None)
def test_crashes_during_recovery_recover_from_the_same_state(
    eos: bool, initial: int, steps: list[Action], crashes: int
) -> None:
    """Crashing again and again while replaying never loses or repeats anything either."""
    world = World(eos=eos, produced=initial)
    for action in steps:
        world.step(action)
    for _ in range(crashes):
        world.restart()
        for action in steps[: len(steps) // 2]:
            if action[0] != "crash":
                world.step(action)
    world.restart()
    world.finish()
    world.check_end()
