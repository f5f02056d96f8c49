"""One vocabulary (bridge.vocabulary), and metrics that pre-create exactly what can occur.

"Can occur" is derived from the code paths, not from the enums: a corpus drives the real
parser, the decision core (through the processor, with a fake of the Norce API), the dead-letter
builders, the real Norce client and the circuit breaker, and collects every label value they
produce. The metrics of a fresh bridge must pre-create exactly those, and the enums must hold
exactly those (no member nothing emits, no emitted value outside them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bridge import runtime
from bridge.circuit import CircuitBreaker
from bridge.commands import DeleteOrder, RefreshOrder, SetOrderState, parse_command
from bridge.config import RetrySettings
from bridge.errors import InvalidCommandError, NorceInvalidRequestError
from bridge.events import OUTCOMES, CommandOutcome
from bridge.metric_collectors import NOTIFICATION_OUTCOMES, RELAY_OUTCOMES
from bridge.metrics import BridgeMetrics
from bridge.norce import NorceClient
from bridge.norce_http import NorceHttpClient
from bridge.outputs import new_order_state
from bridge.processor import Disposition, Processor, SourceRecord
from bridge.vocabulary import (
    TOPIC_ROLES,
    CircuitState,
    DeadLetterReason,
    Outcome,
    OutputKind,
)

from .norce_fake import T0, FakeApi

SRC = SourceRecord("commands", 0, 1, None, None, (), 0)

# Metrics whose label values cannot be known in advance (an endpoint template, a partition, the
# build's version): bounded at run time, never pre-created.
DYNAMIC: dict[str, frozenset[str]] = {
    "norce_bridge_api_requests": frozenset({"method", "endpoint", "status_class"}),
    "norce_bridge_api_request_duration_seconds": frozenset({"method", "endpoint"}),
    "norce_bridge_api_retries": frozenset({"endpoint", "reason"}),
    "norce_bridge_consumer_lag": frozenset({"topic", "partition"}),
    "norce_bridge_committed_offset": frozenset({"topic", "partition"}),
}
BUILD_INFO = "norce_bridge_build_info"


def pre_created() -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """Family name -> the label-value tuples a fresh BridgeMetrics exports (labelled only)."""
    registry = CollectorRegistry()
    BridgeMetrics(registry, version="t", processing_guarantee="at_least_once", ordering="key")
    out: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for family in registry.collect():
        if not family.name.startswith("norce_bridge_"):
            continue
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            if labels:
                out.setdefault(family.name, set()).add(labels)
    return out


# -- what the code emits ----------------------------------------------------------------------

PARSE_CORPUS: list[tuple[DeadLetterReason, bytes | None, list[tuple[str, bytes | None]]]] = [
    (DeadLetterReason.EMPTY_VALUE, b"", []),
    (DeadLetterReason.OVERSIZE, b"{" + b" " * 70_000 + b"}", []),
    (
        DeadLetterReason.UNSUPPORTED_CONTENT_TYPE,
        b"{}",
        [("content-type", b"application/json; charset=utf-16")],
    ),
    (DeadLetterReason.INVALID_UTF8, b'{"a": "\xff"}', []),
    (DeadLetterReason.INVALID_JSON, b'{"type": ', []),
    (DeadLetterReason.INVALID_AVRO, b"\xc3\x01nope", [("content-type", b"application/avro")]),
    (DeadLetterReason.NOT_AN_OBJECT, b"[1, 2]", []),
]
BASE_COMMAND: dict[str, Any] = {
    "type": "SetOrderState",
    "commandId": "c-1",
    "orderId": "o_1",
    "merchant": "norce",
    "channel": "1",
    "issuedAt": "2026-11-27T10:00:00Z",
    "state": "accepted",
}
FIELD_CORPUS: list[tuple[DeadLetterReason, dict[str, Any]]] = [
    (DeadLetterReason.UNKNOWN_TYPE, {**BASE_COMMAND, "type": "CancelOrder"}),
    (DeadLetterReason.MISSING_FIELD, {k: v for k, v in BASE_COMMAND.items() if k != "merchant"}),
    (DeadLetterReason.INVALID_FIELD, {**BASE_COMMAND, "channel": 1}),
    (DeadLetterReason.UNKNOWN_FIELD, {**BASE_COMMAND, "expectedStatus": "checkout"}),
    (DeadLetterReason.BAD_ORDER_ID, {**BASE_COMMAND, "orderId": "o/../1"}),
    (DeadLetterReason.UNKNOWN_STATE, {**BASE_COMMAND, "state": "Processing"}),
    (DeadLetterReason.BAD_TIMESTAMP, {**BASE_COMMAND, "issuedAt": 1764237600}),
]


def _command(state: str | None, cid: str, **extra: str) -> SetOrderState | DeleteOrder:
    raw = {**BASE_COMMAND, "commandId": cid, **extra}
    if state is None:
        del raw["state"]
        return DeleteOrder.model_validate({**raw, "type": "DeleteOrder"})
    return SetOrderState.model_validate({**raw, "state": state})


def _refresh(cid: str, **extra: str) -> RefreshOrder:
    raw = {**BASE_COMMAND, "commandId": cid, "type": "RefreshOrder", **extra}
    del raw["state"]
    return RefreshOrder.model_validate(raw)


async def _executions() -> list[Disposition]:
    """Every outcome of both command types, through the processor and the decision core."""
    out: list[Disposition] = []
    for kind in ("accepted", None):  # SetOrderState, DeleteOrder
        api = FakeApi(orders={"o_1": [("checkout", T0 - timedelta(hours=1))]})
        p = Processor(api, clock=lambda: T0)
        out.append(await p.handle(_command(kind, "e", expiresAt="2026-11-27T09:00:00Z"), SRC))
        out.append(await p.handle(_command(kind, "r", expectedState="completed"), SRC))
        api.fail["PUT" if kind else "DELETE"] = [
            NorceInvalidRequestError("no", status=400, code="InvalidTransition")
        ]
        out.append(await p.handle(_command(kind, "x"), SRC))
        out.append(await p.handle(_command(kind, "a"), SRC))
        out.append(await p.handle(_command(kind, "aa"), SRC))
    # RefreshOrder: applied (first snapshot), already_applied (unchanged), expired, failed (400)
    api = FakeApi(orders={"o_1": [("checkout", T0 - timedelta(hours=1))]})
    p = Processor(api, clock=lambda: T0)
    first = await p.handle(_refresh("f"), SRC)
    out.append(first)
    out.append(await p.handle(_refresh("u"), SRC, published=new_order_state(first)))
    out.append(await p.handle(_refresh("e", expiresAt="2026-11-27T09:00:00Z"), SRC))
    api.fail["GET"] = [NorceInvalidRequestError("no", status=400, code="Bad")]
    out.append(await p.handle(_refresh("x"), SRC))
    missing = Processor(FakeApi(), clock=lambda: T0)  # no orders: GET 404
    out.append(await missing.handle(_command("accepted", "nf"), SRC))
    broken = FakeApi(orders={"o_1": [("accepted", T0)]}, unmappable=True)
    out.append(await Processor(broken, clock=lambda: T0).handle(_command("accepted", "u"), SRC))
    return out


def _invalid_records() -> Iterator[tuple[DeadLetterReason, Disposition]]:
    p = Processor(FakeApi(), clock=lambda: T0)
    corpus = [(r, v, h) for r, v, h in PARSE_CORPUS] + [
        (r, json.dumps(doc).encode(), []) for r, doc in FIELD_CORPUS
    ]
    for expected, value, headers in corpus:
        with pytest.raises(InvalidCommandError) as info:
            parse_command(value, headers, max_bytes=65_536)
        src = SourceRecord("commands", 0, 1, None, value, tuple(headers), 0)
        yield expected, p.invalid(src, info.value)


async def _client_refusal() -> Disposition:
    """The real Norce client refuses a merchant it cannot send as a header (the command model
    validates the same rule first; this is the client's own guard, reached only if they drift)."""

    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing is sent")

    async with NorceHttpClient(
        base_url="https://norce.example/", transport=httpx.MockTransport(never)
    ) as http:
        client = NorceClient(http, api_key=SecretStr("k-1"), retry=RetrySettings(max_attempts=1))
        drifted = SetOrderState.model_construct(**{
            **_command("accepted", "h").model_dump(), "merchant": "nor\nce"
        })  # fmt: skip
        return await Processor(client, clock=lambda: T0).handle(drifted, SRC)


async def emitted() -> list[Disposition]:
    """Every disposition of the corpus."""
    done = await _executions()
    for expected, disposition in _invalid_records():
        assert disposition.dead_letter_reason == expected
        done.append(disposition)
    done.append(await _client_refusal())
    p = Processor(FakeApi(), clock=lambda: T0)
    done.append(p.internal_failure(_command("accepted", "p"), SRC, RuntimeError("bug")))
    done.append(p.internal_error(SRC, RuntimeError("bug")))
    return done


async def circuit_states() -> set[CircuitState]:
    """The states a circuit breaker goes through: closed, open, half_open (and back)."""
    now = [0.0]
    seen: set[CircuitState] = set()
    breaker = CircuitBreaker(
        threshold=1, open_s=1.0, max_open_s=2.0, clock=lambda: now[0], on_change=seen.add
    )
    seen.add(breaker.state)
    breaker.failure()
    now[0] = 5.0
    await breaker.acquire()  # the open period elapsed: the single probe goes through
    breaker.success()
    return seen


# -- the checks -------------------------------------------------------------------------------


async def test_metrics_pre_create_exactly_the_label_values_the_code_emits() -> None:
    done = await emitted()
    can_occur: dict[str, set[tuple[tuple[str, str], ...]]] = {
        "norce_bridge_commands": {(("outcome", d.outcome), ("type", d.command_type)) for d in done},
        "norce_bridge_command_duration_seconds": {(("type", d.command_type),) for d in done},
        "norce_bridge_dead_letters": {
            (("reason", d.dead_letter_reason),) for d in done if d.dead_letter_reason
        },
        "norce_bridge_records_published": {
            (("topic", o.kind.role),) for d in done for o in d.outputs
        },
        "norce_bridge_circuit_state": {(("state", s),) for s in await circuit_states()},
        # Every outcome is driven through the real ingress and relay in
        # tests/integration/test_ingress.py (which checks the counters).
        "norce_bridge_notifications_received": {(("outcome", o),) for o in NOTIFICATION_OUTCOMES},
        "norce_bridge_notifications_relayed": {(("outcome", o),) for o in RELAY_OUTCOMES},
    }
    exported = pre_created()
    assert set(exported) == set(can_occur) | {BUILD_INFO}, "a labelled metric is unclassified"
    for name, values in can_occur.items():
        assert exported[name] == values, name


def test_metrics_with_open_ended_labels_start_empty() -> None:
    """Endpoints, partitions: bounded at run time (see bridge.metrics), never pre-created."""
    exported = pre_created()
    assert not set(DYNAMIC) & set(exported)


async def test_every_enum_member_is_emitted_by_some_code_path() -> None:
    done = await emitted()
    assert {d.outcome for d in done} == set(Outcome)
    assert {d.dead_letter_reason for d in done if d.dead_letter_reason} == set(DeadLetterReason)
    assert {o.kind for d in done for o in d.outputs} == set(OutputKind)
    assert await circuit_states() == set(CircuitState)


async def test_emitted_values_are_members_not_bare_strings() -> None:
    """The core and the builders use the enums themselves (so a typo cannot slip through)."""
    for d in await emitted():
        assert type(d.outcome) is Outcome
        assert d.dead_letter_reason is None or type(d.dead_letter_reason) is DeadLetterReason
        assert all(type(o.kind) is OutputKind for o in d.outputs)


def test_old_names_are_the_vocabulary() -> None:
    """Compatibility names re-export the one definition."""
    from bridge import circuit, errors, metrics

    assert CommandOutcome is Outcome
    assert frozenset(Outcome) == OUTCOMES
    assert errors.DeadLetterReason is DeadLetterReason
    assert circuit.State is CircuitState
    assert metrics.CircuitState is CircuitState
    assert runtime.TOPIC_ROLES is TOPIC_ROLES
    assert {k.role for k in OutputKind} == {"snapshots", "events", "results", "dlq"}


def test_members_are_their_strings() -> None:
    assert str(Outcome.ALREADY_APPLIED) == "already_applied"
    assert Outcome("already_applied") is Outcome.ALREADY_APPLIED
    assert json.dumps({"outcome": Outcome.FAILED}) == '{"outcome": "failed"}'
    assert f"{DeadLetterReason.API_REJECTED}" == "api_rejected"
    assert [s.value for s in CircuitState] == ["closed", "open", "half_open"]
    assert Outcome.APPLIED.succeeded
    assert not Outcome.REJECTED.succeeded
