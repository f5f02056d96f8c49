"""Order notifications of the simulator: registry, matching, events, delivery queue, attempt log.

The ``NotificationHub`` is synchronous and never does I/O: the app calls ``capture`` before a
write and ``fire`` after it (under the app's lock); ``fire`` turns every notification whose
scope value changed and validates into an *event* (a stable ``event_id``, the resolved URL and
the payload ``{"notification": ..., "order": ...}`` as of that moment) and queues a delivery.
``norce_simulator.delivery.Deliverer`` (started with the HTTP server) takes due deliveries with
``take_due`` and reports each attempt with ``finish_attempt``, which schedules retries (capped
exponential backoff) and injected duplicates. See README "Notifications" for the admin API.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from norce_simulator.data import format_ts, new_id
from norce_simulator.model import NOTIFICATION
from norce_simulator.notify_rules import (
    MISSING,
    SchemaMatcher,
    UnresolvedPlaceholderError,
    check_schema,
    resolve_invoke,
    resolve_pointer,
    same_json,
)

JSON_CONTENT_TYPE = "application/json"
AdminAnswer = tuple[int, Any]


def _number(raw: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = raw.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be a number within [{low:g}, {high:g}]")
    return float(value)


def _integer(raw: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = raw.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer within [{low}, {high}]")
    return value


def _known(raw: Mapping[str, Any], cls: type[Any]) -> None:
    unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown fields: {sorted(unknown)}")


@dataclass(slots=True)
class DeliveryPolicy:
    """How deliveries are attempted: per-attempt timeout, retries with capped backoff."""

    max_attempts: int = 30  # with the 1 s cap: ~27 s, enough to outlive a receiver restart
    backoff_s: float = 0.05
    backoff_max_s: float = 1.0
    timeout_s: float = 5.0
    concurrency: int = 4

    def backoff(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1-based): backoff_s * 2^(n-1), capped."""
        return float(min(self.backoff_max_s, self.backoff_s * (2 ** (attempt - 1))))

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], base: DeliveryPolicy) -> DeliveryPolicy:
        """Partially update ``base`` (raises ``ValueError``)."""
        _known(raw, cls)
        merged = {**dataclasses.asdict(base), **raw}
        return cls(
            max_attempts=_integer(merged, "max_attempts", 30, 1, 1000),
            backoff_s=_number(merged, "backoff_s", 0.05, 0.0, 60.0),
            backoff_max_s=_number(merged, "backoff_max_s", 1.0, 0.0, 600.0),
            timeout_s=_number(merged, "timeout_s", 5.0, 0.001, 300.0),
            concurrency=_integer(merged, "concurrency", 4, 1, 256),
        )


@dataclass(slots=True)
class NotificationFaults:
    """Injected delivery faults (all off by default; randomness seeded by ``seed``).

    ``duplicate_rate``: probability that a delivered event is delivered once more (1.0: every
    event twice), after ``duplicate_delay_s``. ``delay_s`` + uniform ``[0, delay_jitter_s]``:
    wait before an event's first attempt (jitter reorders events). ``reorder_window`` N > 0: hold
    new events until N are due (or the oldest waited ``reorder_hold_s``), then send them
    newest first. ``receiver_down``: every attempt fails without a connection (then retried).
    """

    duplicate_rate: float = 0.0
    duplicate_delay_s: float = 0.0
    delay_s: float = 0.0
    delay_jitter_s: float = 0.0
    reorder_window: int = 0
    reorder_hold_s: float = 1.0
    receiver_down: bool = False
    seed: int = 1

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], base: NotificationFaults) -> NotificationFaults:
        """Partially update ``base`` (raises ``ValueError``)."""
        _known(raw, cls)
        merged = {**dataclasses.asdict(base), **raw}
        down = merged["receiver_down"]
        if not isinstance(down, bool):
            raise ValueError("receiver_down must be a boolean")
        return cls(
            duplicate_rate=_number(merged, "duplicate_rate", 0.0, 0.0, 1.0),
            duplicate_delay_s=_number(merged, "duplicate_delay_s", 0.0, 0.0, 600.0),
            delay_s=_number(merged, "delay_s", 0.0, 0.0, 600.0),
            delay_jitter_s=_number(merged, "delay_jitter_s", 0.0, 0.0, 600.0),
            reorder_window=_integer(merged, "reorder_window", 0, 0, 10_000),
            reorder_hold_s=_number(merged, "reorder_hold_s", 1.0, 0.0, 600.0),
            receiver_down=down,
            seed=_integer(merged, "seed", 1, -(2**63), 2**63 - 1),
        )


@dataclass(slots=True)
class AdapterConfig:
    """An adapter's configuration (for ``{configuration.adapter.KEY}``) and outgoing headers."""

    configuration: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AdapterConfig:
        """``{"internalUrl": "...", ..., "headers": {"X-Norce-Webhook-Secret": "..."}}``."""
        headers = raw.get("headers", {})
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("headers must map header names to strings")
        for name, value in headers.items():
            if any(c in name + value for c in "\r\n") or ":" in name:
                raise ValueError(f"header {name!r} is not a valid header")
        configuration = {k: v for k, v in raw.items() if k != "headers"}
        if not all(isinstance(v, str) for v in configuration.values()):
            raise ValueError("configuration values must be strings")
        return cls(dict(configuration), dict(headers))

    def to_json(self) -> dict[str, Any]:
        """The admin view; header values are not shown (they usually are secrets)."""
        return {**self.configuration, "headers": dict.fromkeys(self.headers, "***")}


@dataclass(slots=True)
class Event:
    """One notification event: what fired, for which order, and where it goes."""

    id: str
    notification: dict[str, Any]
    order_id: str
    merchant: str
    channel: str
    source: str
    created: str
    url: str | None
    body: bytes
    headers: list[tuple[str, str]]
    status: str = "pending"  # pending | delivered | failed | undeliverable
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The admin view of the event (without the body)."""
        return {
            "event_id": self.id,
            "notification_id": self.notification.get("id"),
            "reference": self.notification.get("reference"),
            "order_id": self.order_id,
            "merchant": self.merchant,
            "channel": self.channel,
            "source": self.source,
            "created": self.created,
            "url": self.url,
            "status": self.status,
            "error": self.error,
        }


@dataclass(slots=True)
class Delivery:
    """One delivery job: an event, or an injected duplicate of it, with its own attempts."""

    event: Event
    duplicate: bool
    seq: int
    next_at: float
    attempts: int = 0
    in_flight: bool = False
    held_since: float | None = None

    def held_since_or(self, default: float) -> float:
        """When the reorder hold of this job began (``default`` if it is not held)."""
        return self.held_since if self.held_since is not None else default


class NotificationHub:
    """Notification registrations, events, delivery queue and attempt log of one simulator."""

    def __init__(
        self,
        lock: threading.RLock,
        clock: Callable[[], datetime],
        seed: int,
        max_log_entries: int = 100_000,
    ) -> None:
        self._lock = lock
        self._clock = clock
        self._ids = random.Random(f"notifications-{seed}")
        self.faults = NotificationFaults()
        self._fault_rng = random.Random(self.faults.seed)
        self.policy = DeliveryPolicy()
        self.channels: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.adapters: dict[str, AdapterConfig] = {}
        self.events: dict[str, Event] = {}
        self._max_events = max_log_entries
        # Deliveries not due yet: a heap by (due time, seq). Fresh events held for reordering
        # wait in ``_held``; due ones queue in ``_ready`` until a concurrency slot is free.
        self._waiting: list[tuple[float, int, Delivery]] = []
        self._held: list[Delivery] = []
        self._ready: deque[Delivery] = deque()
        self._in_flight: set[int] = set()
        self._seq = 0
        self.attempts: deque[dict[str, Any]] = deque(maxlen=max_log_entries)
        self.counters: Counter[str] = Counter()
        self._matcher = SchemaMatcher()
        self.wakeup: Callable[[], None] | None = None

    # -- registration ------------------------------------------------------------------------

    def new_notification_id(self) -> str:
        """A notification id in the reference's style: ``oc`` + 26 letters."""
        return new_id(self._ids, "oc")

    def prepare(self, notification: dict[str, Any], taken: Iterable[str] = ()) -> dict[str, Any]:
        """Check a bound Notification (raises ``ValueError``) and give it an id if it has none."""
        check_schema(notification.get("schema"))
        scope = notification.get("scope")
        if scope is not None and scope != "" and not scope.startswith("/"):
            raise ValueError("scope must be a JSON pointer such as /state/currentStatus")
        prepared = dict(notification)
        if not prepared.get("id"):
            prepared["id"] = self.new_notification_id()
        elif prepared["id"] in set(taken):
            raise ValueError(f"A notification with id '{prepared['id']}' already exists.")
        return prepared

    def notifications_of(
        self, data: Mapping[str, Any], merchant: str, channel: str
    ) -> list[dict[str, Any]]:
        """The order's own notifications, then those of its merchant/channel."""
        own = data.get("notifications")
        listed = [n for n in own if isinstance(n, dict)] if isinstance(own, list) else []
        return listed + self.channels.get((merchant, channel), [])

    # -- evaluation ----------------------------------------------------------------------------

    def capture(
        self, data: Mapping[str, Any], merchant: str, channel: str, *, new: bool = False
    ) -> list[tuple[dict[str, Any], Any]]:
        """Each notification with its scope value before a write (``new``: the order is new)."""
        return [
            (n, MISSING if new else resolve_pointer(data, n.get("scope")))
            for n in self.notifications_of(data, merchant, channel)
        ]

    def fire(
        self,
        captured: list[tuple[dict[str, Any], Any]],
        data: Mapping[str, Any],
        order_json: Callable[[], bytes],
        merchant: str,
        channel: str,
        source: str,
    ) -> list[str]:
        """Create an event for every captured notification whose scope changed and validates."""
        fired: list[str] = []
        order_bytes: bytes | None = None
        for notification, before in captured:
            after = resolve_pointer(data, notification.get("scope"))
            if after is MISSING or same_json(before, after):
                continue
            if not self._matcher.matches(notification.get("schema"), after):
                continue
            if order_bytes is None:
                order_bytes = order_json()
            fired.append(
                self._new_event(notification, data, order_bytes, merchant, channel, source)
            )
        if fired and self.wakeup is not None:
            self.wakeup()
        return fired

    def _new_event(
        self,
        notification: dict[str, Any],
        data: Mapping[str, Any],
        order_bytes: bytes,
        merchant: str,
        channel: str,
        source: str,
    ) -> str:
        order_id = str(data.get("id"))
        event_id = new_id(self._ids, "ev_")
        snapshot = json.loads(json.dumps(notification))
        adapter = self.adapters.get(str(notification.get("adapterId")))
        url: str | None = None
        error: str | None = None
        try:
            url = resolve_invoke(
                str(notification.get("invoke") or ""),
                order_id,
                adapter.configuration if adapter else None,
            )
        except UnresolvedPlaceholderError as exc:
            error = str(exc)
        body = b""  # kept only while the event still has deliveries to make
        if url is not None:
            body = (
                b'{"notification":'
                + json.dumps(snapshot, separators=(",", ":"), ensure_ascii=False).encode()
                + b',"order":'
                + order_bytes
                + b"}"
            )
        headers = [("content-type", JSON_CONTENT_TYPE)]
        if adapter is not None:
            headers += list(adapter.headers.items())
        event = Event(
            event_id,
            snapshot,
            order_id,
            merchant,
            channel,
            source,
            format_ts(self._clock()),
            url,
            body,
            headers,
        )
        self._remember(event)
        self.counters["events"] += 1
        if url is None:
            event.status, event.error = "undeliverable", error
            self.counters["undeliverable"] += 1
            self._log_attempt(event, 0, False, None, error, 0.0)
            return event_id
        faults = self.faults
        delay = faults.delay_s
        if faults.delay_jitter_s:
            delay += self._fault_rng.uniform(0.0, faults.delay_jitter_s)
        self._queue(event, duplicate=False, delay=delay)
        return event_id

    def _remember(self, event: Event) -> None:
        if len(self.events) >= self._max_events:
            for key in [k for k, e in self.events.items() if e.status != "pending"][:1000]:
                del self.events[key]
        self.events[event.id] = event

    def _queue(self, event: Event, *, duplicate: bool, delay: float) -> None:
        self._seq += 1
        self._schedule(Delivery(event, duplicate, self._seq, time.monotonic() + delay))

    def _schedule(self, job: Delivery) -> None:
        heapq.heappush(self._waiting, (job.next_at, job.seq, job))

    # -- delivery (called by the Deliverer) ----------------------------------------------------

    def take_due(self, now: float) -> tuple[list[Delivery], float | None]:
        """Jobs to attempt now (within the concurrency) and seconds until the next one is due."""
        with self._lock:
            faults = self.faults
            window = faults.reorder_window
            waiting = self._waiting
            while waiting and waiting[0][0] <= now:
                job = heapq.heappop(waiting)[2]
                if window > 0 and job.attempts == 0 and not job.duplicate:
                    job.held_since = now
                    self._held.append(job)
                else:
                    self._ready.append(job)
            held = self._held
            if held and (
                window <= 0
                or len(held) >= window
                or now - held[0].held_since_or(now) >= faults.reorder_hold_s
            ):
                held.sort(key=lambda j: j.seq, reverse=window > 0)
                self._ready.extend(held)
                if window > 0:
                    self.counters["reordered_batches"] += 1
                self._held = []
            free = self.policy.concurrency - len(self._in_flight)
            taken: list[Delivery] = []
            while free > 0 and self._ready:
                job = self._ready.popleft()
                job.in_flight = True
                job.attempts += 1
                self._in_flight.add(job.seq)
                taken.append(job)
                free -= 1
            due_times = [waiting[0][0]] if waiting else []
            if self._held:
                due_times.append(self._held[0].held_since_or(now) + faults.reorder_hold_s)
            wait = max(0.0, min(due_times) - now) if due_times else None
            return taken, wait

    def finish_attempt(
        self, job: Delivery, status: int | None, error: str | None, duration_s: float
    ) -> None:
        """Record one attempt; schedule the retry, the duplicate, or end the job."""
        with self._lock:
            self._in_flight.discard(job.seq)
            job.in_flight = False
            event = job.event
            ok = status is not None and 200 <= status < 300
            self._log_attempt(event, job.attempts, job.duplicate, status, error, duration_s)
            self.counters["attempts"] += 1
            job_done = True
            if ok:
                self.counters["deliveries"] += 1
                if job.duplicate:
                    self.counters["duplicates_delivered"] += 1
                elif event.status == "pending":
                    event.status, event.error = "delivered", None
                    self.counters["delivered"] += 1
                    rate = self.faults.duplicate_rate
                    if rate and (rate >= 1.0 or self._fault_rng.random() < rate):
                        self._queue(event, duplicate=True, delay=self.faults.duplicate_delay_s)
                        self.counters["duplicates"] += 1
                        job_done = False  # the duplicate still needs the body
            elif job.attempts < self.policy.max_attempts:
                job.next_at = time.monotonic() + self.policy.backoff(job.attempts)
                self._schedule(job)
                self.counters["retries"] += 1
                job_done = False
            else:
                self.counters["failed"] += 1
                if not job.duplicate:
                    event.status = "failed"
                    event.error = error if error is not None else f"HTTP {status}"
            if job_done:
                event.body = b""  # bounded memory: finished events keep no payload
        if self.wakeup is not None:
            self.wakeup()

    def abandon(self, job: Delivery) -> None:
        """Put back a job whose attempt was cancelled (not counted as an attempt)."""
        with self._lock:
            if job.seq in self._in_flight:
                self._in_flight.discard(job.seq)
                job.in_flight = False
                job.attempts -= 1
                self._schedule(job)

    def _log_attempt(
        self,
        event: Event,
        attempt: int,
        duplicate: bool,
        status: int | None,
        error: str | None,
        duration_s: float,
    ) -> None:
        self.attempts.append(
            {
                "event_id": event.id,
                "notification_id": event.notification.get("id"),
                "order_id": event.order_id,
                "attempt": attempt,
                "duplicate": duplicate,
                "ts": format_ts(self._clock()),
                "url": event.url,
                "status": status,
                "error": error,
                "duration_ms": round(duration_s * 1000.0, 3),
            }
        )

    # -- views -----------------------------------------------------------------------------------

    def pending(self) -> list[dict[str, Any]]:
        """Deliveries not finished yet (waiting, ready or in flight), oldest first."""
        now = time.monotonic()
        jobs = sorted(
            [*(entry[2] for entry in self._waiting), *self._held, *self._ready],
            key=lambda j: j.seq,
        )
        in_flight_count = len(self._in_flight)
        rows = [
            {
                **job.event.to_json(),
                "duplicate": job.duplicate,
                "attempts": job.attempts,
                "due_in_s": round(max(0.0, job.next_at - now), 3),
            }
            for job in jobs
        ]
        return rows + [{"in_flight": True}] * in_flight_count

    def stats(self) -> dict[str, Any]:
        """Counts of events, attempts and deliveries (``deliveries`` includes duplicates)."""
        keys = (
            "events",
            "attempts",
            "deliveries",
            "delivered",
            "retries",
            "failed",
            "undeliverable",
            "duplicates",
            "duplicates_delivered",
            "reordered_batches",
        )
        counts: dict[str, Any] = {key: self.counters[key] for key in keys}
        counts["pending"] = (
            len(self._waiting) + len(self._held) + len(self._ready) + len(self._in_flight)
        )
        return counts

    def reset_log(self) -> None:
        """Forget the attempt log and the counters (queued deliveries stay)."""
        self.attempts.clear()
        self.counters.clear()

    def reset(self) -> None:
        """Forget everything: channel registrations, adapters, settings, events and the log."""
        self.channels.clear()
        self.adapters.clear()
        self.faults = NotificationFaults()
        self._fault_rng = random.Random(self.faults.seed)
        self.policy = DeliveryPolicy()
        self.events.clear()
        self._waiting.clear()
        self._held.clear()
        self._ready.clear()
        self.reset_log()

    # -- admin -------------------------------------------------------------------------------------

    def admin(
        self, method: str, route: str, params: Mapping[str, list[str]], payload: Any
    ) -> AdminAnswer | None:
        """Answer an admin route of notifications (``None``: not one of them).

        ``payload`` is the parsed JSON body (``None`` for an empty body).
        """

        def param(name: str) -> str | None:
            values = params.get(name)
            return values[-1] if values else None

        key = (method, route)
        if key == ("GET", "/notifications/attempts"):
            rows = [
                a
                for a in self.attempts
                if _wanted(a, "order_id", param("order_id"))
                and _wanted(a, "notification_id", param("notification_id"))
                and _wanted(a, "event_id", param("event_id"))
            ]
            return 200, {"attempts": rows}
        if key == ("GET", "/notifications/pending"):
            rows = self.pending()
            return 200, {"count": len(rows), "pending": rows}
        if key == ("GET", "/notifications/events"):
            events = [
                e.to_json()
                for e in self.events.values()
                if _wanted(e.to_json(), "order_id", param("order_id"))
                and _wanted(e.to_json(), "notification_id", param("notification_id"))
                and _wanted(e.to_json(), "status", param("status"))
            ]
            return 200, {"events": events}
        if key == ("POST", "/notifications/reset"):
            self.reset()
            return 204, None
        if key == ("GET", "/notifications"):
            merchant, channel = param("merchant"), param("channel")
            rows = [
                {"merchant": m, "channel": c, "notifications": n}
                for (m, c), n in sorted(self.channels.items())
                if merchant in (None, m) and channel in (None, c)
            ]
            return 200, {"channels": rows}
        if key == ("PUT", "/notifications"):
            return self._put_channel(payload)
        if key in (("GET", "/notification-faults"), ("PUT", "/notification-faults")):
            if method == "PUT":
                self.faults = NotificationFaults.from_json(_object(payload), self.faults)
                self._fault_rng = random.Random(self.faults.seed)
            return 200, dataclasses.asdict(self.faults)
        if key in (("GET", "/notification-settings"), ("PUT", "/notification-settings")):
            if method == "PUT":
                self.policy = DeliveryPolicy.from_json(_object(payload), self.policy)
                if self.wakeup is not None:
                    self.wakeup()
            return 200, dataclasses.asdict(self.policy)
        if route.startswith("/adapters/") and method in ("GET", "PUT"):
            adapter_id = route[len("/adapters/") :]
            if not adapter_id:
                return None
            if method == "PUT":
                self.adapters[adapter_id] = AdapterConfig.from_json(_object(payload))
            adapter = self.adapters.get(adapter_id)
            if adapter is None:
                return 404, {"code": "not-found", "message": f"No adapter {adapter_id!r}."}
            return 200, {"adapterId": adapter_id, **adapter.to_json()}
        return None

    def _put_channel(self, payload: Any) -> AdminAnswer:
        raw = _object(payload)
        unknown = set(raw) - {"merchant", "channel", "notifications"}
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        merchant, channel = raw.get("merchant"), raw.get("channel")
        if not isinstance(merchant, str) or not merchant:
            raise ValueError("merchant must be a non-empty string")
        if not isinstance(channel, str) or not channel:
            raise ValueError("channel must be a non-empty string")
        entries = raw.get("notifications", [])
        if not isinstance(entries, list):
            raise ValueError("notifications must be a list")
        stored: list[dict[str, Any]] = []
        for index, entry in enumerate(entries):
            errors: dict[str, list[str]] = {}
            bound = NOTIFICATION(entry, f"notifications[{index}]", errors)
            if errors or not isinstance(bound, dict):
                raise ValueError(f"invalid notification: {errors}")
            stored.append(self.prepare(bound, (n["id"] for n in stored)))
        if stored:
            self.channels[(merchant, channel)] = stored
        else:
            self.channels.pop((merchant, channel), None)
        return 200, {"merchant": merchant, "channel": channel, "notifications": stored}


def _object(payload: Any) -> dict[str, Any]:
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise ValueError("Body must be a JSON object.")
    return payload


def _wanted(row: Mapping[str, Any], name: str, wanted: str | None) -> bool:
    return wanted is None or row.get(name) == wanted
