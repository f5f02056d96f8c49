"""Configuration objects of the Norce Order API simulator (plain dataclasses, stdlib only)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

ORDER_STATUSES: tuple[str, ...] = (
    "checkout",
    "processing",
    "accepted",
    "completed",
    "declined",
    "removed",
)

DEFAULT_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "checkout": frozenset({"processing", "removed"}),
    "processing": frozenset({"checkout", "accepted", "declined", "removed"}),
    "accepted": frozenset({"completed", "declined"}),
    "completed": frozenset(),
    "declined": frozenset(),
    "removed": frozenset(),
}

FaultKind = Literal["reset", "hang"]


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime (the default simulator clock)."""
    return datetime.now(UTC)


@dataclass(slots=True)
class ScriptedResponse:
    """One forced response in the fault script, matched before any random fault rate applies.

    ``method``/``path_suffix`` restrict which requests it matches (``None`` matches any).
    ``status``/``headers``/``body`` (any JSON value, serialised; ``None`` = empty body) describe
    the answer. ``fault`` = ``"reset"`` or ``"hang"`` sends no answer at all instead.
    ``after_apply`` applies the request to the store first and then answers with the scripted
    response (ambiguous outcome). ``count`` is how many requests it answers before it is used up.
    """

    status: int = 500
    method: str | None = None
    path_suffix: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    count: int = 1
    fault: FaultKind | None = None
    after_apply: bool = False

    def matches(self, method: str, path: str) -> bool:
        """Tell whether this entry applies to a request with ``method`` and ``path``."""
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path_suffix is None or path.endswith(self.path_suffix)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form used by the admin endpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ScriptedResponse:
        """Build an entry from its JSON form, raising ``ValueError`` on bad content."""
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"unknown script fields: {sorted(unknown)}")
        status = raw.get("status", 500)
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise ValueError("script status must be an integer 100..599")
        count = raw.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError("script count must be a positive integer")
        method = raw.get("method")
        path_suffix = raw.get("path_suffix")
        for name, value in (("method", method), ("path_suffix", path_suffix)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"script {name} must be a string")
        headers = raw.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("script headers must map strings to strings")
        fault = raw.get("fault")
        if fault not in (None, "reset", "hang"):
            raise ValueError("script fault must be null, 'reset' or 'hang'")
        after_apply = raw.get("after_apply", False)
        if not isinstance(after_apply, bool):
            raise ValueError("script after_apply must be a boolean")
        return cls(
            status=status,
            method=method.upper() if isinstance(method, str) else None,
            path_suffix=path_suffix,
            headers=dict(headers),
            body=raw.get("body"),
            count=count,
            fault=fault,
            after_apply=after_apply,
        )


_RATE_FIELDS = (
    "error_rate",
    "rate_limit_rate",
    "hang_rate",
    "reset_rate",
    "fault_after_apply_rate",
)


@dataclass(slots=True)
class FaultConfig:
    """Fault injection settings; every rate is a per-request probability in ``[0, 1]``.

    The rates are mutually exclusive outcomes of one random draw per API request, so their sum
    must not exceed 1. Precedence: ``down`` first, then the ``script`` queue, then the rates.
    """

    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 503)
    rate_limit_rate: float = 0.0
    retry_after_s: float = 1.0
    hang_rate: float = 0.0
    hang_s: float = 30.0
    reset_rate: float = 0.0
    fault_after_apply_rate: float = 0.0
    down: bool = False
    down_status: int = 503
    script: list[ScriptedResponse] = field(default_factory=list)

    def validate(self) -> None:
        """Raise ``ValueError`` when a field is out of range."""
        total = 0.0
        for name in _RATE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"{name} must be a number")
            if not 0.0 <= float(value) <= 1.0 or math.isnan(value):
                raise ValueError(f"{name} must be within [0, 1]")
            total += float(value)
        if total > 1.0 + 1e-9:
            raise ValueError("the sum of all fault rates must not exceed 1")
        for name in ("retry_after_s", "hang_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
        if not self.error_statuses or not all(
            isinstance(s, int) and 100 <= s <= 599 for s in self.error_statuses
        ):
            raise ValueError("error_statuses must be a non-empty list of HTTP statuses")
        if not isinstance(self.down_status, int) or not 100 <= self.down_status <= 599:
            raise ValueError("down_status must be an HTTP status")
        if not isinstance(self.down, bool):
            raise ValueError("down must be a boolean")
        for entry in self.script:
            ScriptedResponse.from_json(entry.to_json())

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form used by ``GET /__admin/faults``."""
        return {
            "error_rate": self.error_rate,
            "error_statuses": list(self.error_statuses),
            "rate_limit_rate": self.rate_limit_rate,
            "retry_after_s": self.retry_after_s,
            "hang_rate": self.hang_rate,
            "hang_s": self.hang_s,
            "reset_rate": self.reset_rate,
            "fault_after_apply_rate": self.fault_after_apply_rate,
            "down": self.down,
            "down_status": self.down_status,
            "script": [entry.to_json() for entry in self.script],
        }


@dataclass(slots=True)
class SimulatorConfig:
    """Everything the simulator needs at start; fields may be changed while it runs.

    ``orders`` orders are seeded at start under ``merchant``/``channel`` with statuses drawn
    from ``seed_statuses``. ``clock`` returns aware datetimes and drives every timestamp.
    """

    api_keys: tuple[str, ...] = ("sim-api-key",)
    seed: int = 1
    orders: int = 10
    merchant: str = "norce"
    channel: str = "1"
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    enforce_transitions: bool = True
    transitions: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: dict(DEFAULT_TRANSITIONS)
    )
    enforce_required_consents: bool = True
    seed_statuses: tuple[str, ...] = ("checkout",)
    base_paths: tuple[str, ...] = ("", "/checkout/order")
    default_limit: int = 10
    max_limit: int = 100
    log_calls: bool = True
    max_log_entries: int = 100_000
    max_body_bytes: int = 8 * 1024 * 1024
    clock: Callable[[], datetime] = utc_now
    # A simulator in a process of its own (the CLI sets it): after each seeding (the one at
    # start, and every ``seed`` later), everything alive moves to the garbage collector's
    # permanent generation (``gc.freeze``). The store only grows, and a full collection walks
    # all of it: after a benchmark's worth of orders (tens of thousands) that stalled every
    # request in flight for 100-300 ms, a latency the real API does not have. Frozen objects
    # are still freed by reference counting.
    freeze_after_seed: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` when a field is out of range."""
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError("latency_ms and jitter_ms must be non-negative")
        if self.orders < 0:
            raise ValueError("orders must be non-negative")
        if not self.merchant or not self.channel:
            raise ValueError("merchant and channel must be non-empty")
        for status in self.seed_statuses:
            if status not in ORDER_STATUSES:
                raise ValueError(f"unknown seed status {status!r}")
        if not self.seed_statuses:
            raise ValueError("seed_statuses must not be empty")
        if not 1 <= self.default_limit <= self.max_limit:
            raise ValueError("default_limit must be within 1..max_limit")
        self.faults.validate()
