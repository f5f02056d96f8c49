"""Verifier helpers that more than one user needs (the benchmarks, the chaos run, tests)."""

from __future__ import annotations

from typing import Any

from bridge.events import order_from_snapshot


def snapshot_diff(snapshot: dict[str, Any], order: dict[str, Any] | None) -> list[str]:
    """The fields in which the order rebuilt from its snapshot (``order_from_snapshot``) differs
    from the order the API serves; empty when they are equal."""
    rebuilt = order_from_snapshot(snapshot)
    if rebuilt == order:
        return []
    other = order or {}
    diff = sorted(k for k in set(rebuilt) | set(other) if rebuilt.get(k) != other.get(k))
    return diff or ["(shape)"]


def collapse(states: list[str]) -> list[str]:
    """Consecutive duplicates collapsed: what a status history shows of a command sequence."""
    out: list[str] = []
    for s in states:
        if not out or out[-1] != s:
            out.append(s)
    return out
