"""The throughput benchmark's comparisons (event loop, tracing, Avro encoding) configure the bridge
of each variant with exactly the variables, and label its runs exactly as, before they were
folded into one mechanism: the expected values below were recorded from the three separate
implementations. Only ``variant_env`` (how a run of one variant is planned and its services set
up) follows the code; the expectations do not."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bridge_devkit.harness import SimulatorProcess
from bridge_devkit.throughput.bench import API_KEY, COMPARISONS, Bench
from bridge_devkit.throughput.cli import build_parser, parse_env
from bridge_devkit.throughput.planner import Planner, bridge_default_backend
from bridge_devkit.throughput.report import comparisons
from bridge_devkit.throughput.runs import RunResult

from bridge.config import TopicSettings

REGISTRY = "http://registry.invalid:8080/apis/ccompat/v7"

BASE = {
    "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
    "BRIDGE_TOPICS__COMMANDS": "norce.order.commands",
    "BRIDGE_TOPICS__SNAPSHOTS": "norce.order.snapshots",
    "BRIDGE_TOPICS__EVENTS": "norce.order.events",
    "BRIDGE_TOPICS__RESULTS": "norce.order.command-results",
    "BRIDGE_TOPICS__DLQ": "norce.order.commands.dlq",
    "BRIDGE_TOPICS__ORDER_STATE": "norce.order.bridge-state",
    "BRIDGE_TOPICS__NOTIFICATIONS": "norce.order.notifications",
    "BRIDGE_TOPICS__CREATE_MISSING": "false",
    "BRIDGE_NORCE__BASE_URL": "<sim>",
    "BRIDGE_NORCE__API_KEY": API_KEY,
    "BRIDGE_HTTP__HOST": "127.0.0.1",
    "BRIDGE_HTTP__PORT": "0",
    "BRIDGE_TOPICS__PARTITIONS": "12",
    "BRIDGE_NORCE__HTTP_BACKEND": bridge_default_backend(),
    "BRIDGE_NORCE__MAX_CONNECTIONS": "256",
    "BRIDGE_PROCESSING__ORDERING": "key",
    "BRIDGE_PROCESSING__MAX_IN_FLIGHT": "256",
    "BRIDGE_PROCESSING__WRITE_GUARD": "lease",
    "BRIDGE_EVENT_LOOP": "asyncio",
    "BRIDGE_LOG_LEVEL": "INFO",
    "BRIDGE_OTEL__ENABLED": "false",
}

# (dimension, value) or None (a main run) -> (label, variables that differ from BASE)
EXPECTED: dict[tuple[str, str] | None, tuple[str, dict[str, str]]] = {
    None: ("key L=0ms", {}),
    ("loop", "asyncio"): ("asyncio key L=0ms", {}),
    ("loop", "uvloop"): ("uvloop key L=0ms", {"BRIDGE_EVENT_LOOP": "uvloop"}),
    ("tracing", "off"): ("tracing=off key L=0ms", {}),
    ("tracing", "on"): (
        "tracing=on key L=0ms",
        {"BRIDGE_OTEL__ENABLED": "true", "OTEL_TRACES_EXPORTER": "none"},
    ),
    ("tracing", "otlp"): (
        "tracing=otlp key L=0ms",
        {
            "BRIDGE_OTEL__ENABLED": "true",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "<otlp>/v1/traces",
        },
    ),
    ("encoding", "single-object"): ("single-object key L=0ms", {}),
    ("encoding", "confluent"): (
        "confluent key L=0ms",
        {"BRIDGE_SCHEMA_REGISTRY__URL": REGISTRY, "BRIDGE_AVRO__ENCODING": "confluent"},
    ),
}


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    sim = SimulatorProcess(tmp_path / "simulator.log", api_key=API_KEY, seed=7)
    bench = Bench("127.0.0.1:9", sim, tmp_path, seed=1, stall_s=1.0, wrapper=[sys.executable])
    try:
        yield bench
    finally:
        await bench.aclose()
        await sim.aclose()
        if sim.proc.stdout is not None:  # the harness leaves its first-line pipe open
            sim.proc.stdout.close()


async def variant_env(
    bench: Bench, variant: tuple[str, str] | None
) -> tuple[str, dict[str, str], str]:
    """The label and environment of a key-mode run at L=0 of ``variant``, and the OTLP sink's
    URL (the code under test)."""
    args = build_parser().parse_args([])
    args.http_backend = bridge_default_backend()
    kind = "throughput" if variant is None else variant[0]
    spec = Planner(args).spec(
        kind, "key", 0.0, 300, variant=None if variant is None else variant[1]
    )
    async with contextlib.AsyncExitStack() as stack:
        for c in COMPARISONS:  # every service of every variant, as if all were compared
            bench.services |= await stack.enter_async_context(c.started(list(c.variants)))
        otlp = bench.services["otlp"].url
        return spec.label, bench.bridge_env(spec, TopicSettings()), otlp


@pytest.mark.parametrize("variant", list(EXPECTED), ids=lambda v: "-".join(v or ("main",)))
async def test_each_variant_configures_the_bridge_as_before(
    bench: Bench, variant: tuple[str, str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", REGISTRY)  # no Apicurio: an "external" registry
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    label, env, otlp = await variant_env(bench, variant)
    seen = {
        k: v.replace(bench.sim.url, "<sim>").replace(otlp, "<otlp>")
        for k, v in env.items()
        if k.startswith(("BRIDGE_", "OTEL_")) and k != "BRIDGE_KAFKA__GROUP_ID"
    }
    expected_label, changes = EXPECTED[variant]
    assert label == expected_label
    assert seen == BASE | changes
    assert env["BRIDGE_KAFKA__GROUP_ID"].startswith("bench-")


def test_an_unknown_variant_stops_the_benchmark_before_any_run() -> None:
    args = build_parser().parse_args(["--tracing", "off,of"])
    with pytest.raises(SystemExit, match=r"--tracing: unknown of \(known: off, on, otlp\)"):
        [c.values(args) for c in COMPARISONS]


def test_the_summary_gives_each_variant_and_its_difference_to_the_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args([])
    args.http_backend = bridge_default_backend()
    plan = Planner(args)
    results = []
    for rep, (value, cpu_s, rate) in enumerate(
        [("confluent", 1.2, 900.0), ("single-object", 1.0, 1000.0), ("confluent", 1.4, 700.0)]
    ):
        spec = plan.spec("encoding", "key", 0.0, 1000, repetition=rep, variant=value)
        results.append(RunResult(spec, passed=True, processed=1000, cpu_s=cpu_s, throughput=rate))
    failed = plan.spec("encoding", "key", 0.0, 1000, repetition=3, variant="single-object")
    results.append(RunResult(failed, passed=False, processed=1000, cpu_s=9.0, throughput=1.0))
    comparisons(results)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "encoding confluent (key mode, mean of 2): 800 cmd/s, 1300 us CPU/command "
        "(runs: 1200, 1400)",
        "encoding single-object (key mode, mean of 1): 1,000 cmd/s, 1000 us CPU/command, "
        "-300 us vs confluent (runs: 1000)",
    ]


def test_env_option_takes_bridge_settings_and_refuses_secrets() -> None:
    """``--env`` passes a setting to both pipelines; it is printed, so a secret is refused
    (without echoing its value)."""
    assert parse_env("BRIDGE_KAFKA__LINGER_MS=0") == ("BRIDGE_KAFKA__LINGER_MS", "0")
    assert parse_env("OTEL_SDK_DISABLED=true") == ("OTEL_SDK_DISABLED", "true")
    for bad in ("LINGER=0", "BRIDGE_KAFKA__LINGER_MS", "PATH=/tmp"):
        with pytest.raises(SystemExit):
            parse_env(bad)
    with pytest.raises(SystemExit) as refused:
        parse_env("BRIDGE_NORCE__API_KEY=s3cr3t-value")
    assert "s3cr3t-value" not in str(refused.value)
