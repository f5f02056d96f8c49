"""The label values of the bridge's metrics: closed sets, and bounds on the open-ended ones.

Closed sets (command types, outcomes, status classes, retry reasons, HTTP methods, circuit
states, dead-letter reasons, output topics by role) come from :mod:`bridge.vocabulary` where
they are vocabulary; :class:`BoundedLabel` keeps the open-ended ones (endpoint, dead-letter
reason, topic) to a pattern and a cap, so a bug elsewhere cannot explode cardinality. Order ids
never become label values.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from typing import Final

from bridge.vocabulary import TOPIC_ROLES, CircuitState, DeadLetterReason, Outcome

__all__ = [
    "CIRCUIT_STATES",
    "CODE_RE",
    "COMMAND_LABELS",
    "COMMAND_OUTCOMES",
    "COMMAND_TYPES",
    "DEAD_LETTER_REASONS",
    "ENDPOINT_RE",
    "HTTP_METHODS",
    "MAX_DISTINCT_ENDPOINTS",
    "MAX_DISTINCT_REASONS",
    "MAX_DISTINCT_TOPICS",
    "OTHER",
    "PUBLISHED_TOPICS",
    "RETRY_REASONS",
    "STATUS_CLASSES",
    "TOPIC_RE",
    "UNKNOWN_TYPE",
    "BoundedLabel",
    "status_class",
    "template_endpoint",
]

OTHER: Final = "other"
UNKNOWN_TYPE: Final = "unknown"

COMMAND_TYPES: Final[tuple[str, ...]] = ("SetOrderState", "DeleteOrder", "RefreshOrder")
# One outcome per handled record (a dead-lettered command is ``failed``; dead letters are
# counted by reason in their own counter, so the outcomes sum to the records handled).
COMMAND_OUTCOMES: Final[tuple[Outcome, ...]] = tuple(Outcome)
# (type, outcome) pairs that can occur: a valid command of either type ends in any outcome; a
# record whose type cannot be read (``unknown``) is always dead-lettered, so only ``failed``.
# RefreshOrder has no precondition: it is never ``rejected``.
COMMAND_LABELS: Final[tuple[tuple[str, Outcome], ...]] = (
    *(
        (t, o)
        for t in COMMAND_TYPES
        for o in Outcome
        if not (t == "RefreshOrder" and o == Outcome.REJECTED)
    ),
    (UNKNOWN_TYPE, Outcome.FAILED),
)
RETRY_REASONS: Final[tuple[str, ...]] = ("429", "5xx", "timeout", "connection")
STATUS_CLASSES: Final[tuple[str, ...]] = ("2xx", "3xx", "4xx", "5xx", "error")
CIRCUIT_STATES: Final[tuple[CircuitState, ...]] = tuple(CircuitState)
HTTP_METHODS: Final[frozenset[str]] = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
)
# Dead-letter reasons: the bridge's one vocabulary, pre-initialised at zero so rate() and the
# alerts have a series before the first dead letter. Other short codes are accepted too.
DEAD_LETTER_REASONS: Final[tuple[DeadLetterReason, ...]] = tuple(DeadLetterReason)
# Output topics by role (the ``topic`` label: never a configured topic name).
PUBLISHED_TOPICS: Final[tuple[str, ...]] = tuple(TOPIC_ROLES.values())

# Open-ended labels: a short code / path template, and at most this many distinct values each.
CODE_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
TOPIC_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
ENDPOINT_RE: Final = re.compile(r"^[A-Za-z0-9_./{}:-]{1,120}$")
# A path segment that looks like an identifier: digits, a uuid, or a long token with a digit.
_ID_SEGMENT_RE: Final = re.compile(
    r"^(?:\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?=[^/]*\d)[A-Za-z0-9_.~-]{8,})$"
)
# Norce Order API collections: the segment after one of these is an identifier.
_COLLECTIONS: Final[frozenset[str]] = frozenset(
    {
        "orders",
        "consents",
        "validations",
        "hooks",
        "notifications",
        "payments",
        "actions",
        "transactions",
        "shippings",
    }
)
MAX_DISTINCT_ENDPOINTS: Final = 32
MAX_DISTINCT_REASONS: Final = 32
MAX_DISTINCT_TOPICS: Final = 16


def status_class(status: int | None) -> str:
    """Map an HTTP status (``None`` when no response arrived) to 2xx|3xx|4xx|5xx|error."""
    if status is None or not 200 <= status <= 599:
        return "error"
    return f"{status // 100}xx"


def template_endpoint(endpoint: str) -> str:
    """Replace identifier-looking path segments by ``{id}`` so a raw URL cannot leak an order id."""
    segments = endpoint.split("?", 1)[0].split("/")
    out: list[str] = []
    for i, seg in enumerate(segments):
        is_id = bool(seg) and not seg.startswith("{")
        is_id = is_id and (
            (i > 0 and segments[i - 1] in _COLLECTIONS) or _ID_SEGMENT_RE.match(seg) is not None
        )
        out.append("{id}" if is_id else seg)
    return "/".join(out)


class BoundedLabel:
    """Admits values matching a pattern, up to ``limit`` distinct ones; everything else is other."""

    def __init__(
        self,
        pattern: re.Pattern[str],
        limit: int,
        initial: Iterable[str] = (),
        normalise: Callable[[str], str] | None = None,
    ) -> None:
        self._pattern = pattern
        self._limit = limit
        self._normalise = normalise
        self._seen: set[str] = set(initial)
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if self._normalise is not None:
            value = self._normalise(value)
        if value in self._seen:
            return value
        if not self._pattern.match(value):
            return OTHER
        with self._lock:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(value)
        return value
