"""RFC 3339 date-times as the bridge writes and reads them (records, events, replay)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["epoch_millis", "format_rfc3339", "parse_rfc3339"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


def format_rfc3339(moment: datetime) -> str:
    """Format a timezone-aware datetime as RFC 3339 in UTC with microseconds and ``Z``."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime {moment!r} is naive; a timezone-aware datetime is required")
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.removesuffix("+00:00") + "Z"


def parse_rfc3339(text: str) -> datetime | None:
    """Parse an RFC 3339 / ISO 8601 date-time leniently; None when it cannot be parsed.

    Accepts ``Z`` or numeric offsets, lower-case ``t``/``z``, and any number of fraction
    digits (.NET writes seven; Python keeps six). A missing offset is taken as UTC, which is
    what the API documents for its timestamps.
    """
    try:
        parsed = datetime.fromisoformat(text.strip().upper())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def epoch_millis(text: str) -> int | None:
    """Milliseconds since the Unix epoch of an RFC 3339 date-time; None if unparseable."""
    parsed = parse_rfc3339(text)
    if parsed is None:
        return None
    return (parsed - _EPOCH) // _ONE_MS
