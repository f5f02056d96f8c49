"""The README's first command: `make demo` (`order-bridge-dev demo`) runs end to end, exits 0."""

from __future__ import annotations

import os
import subprocess

import pytest
from bridge_devkit.harness import console_script as order_bridge_script

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_demo_runs_end_to_end_on_embedded_defaults() -> None:
    """The demo starts its own broker and simulator, handles every record and prints a summary."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    proc = subprocess.run(
        [order_bridge_script("order-bridge-dev"), "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "records handled : 73/73" in out
    assert "applied=" in out
    assert "rejected=1" in out
    assert "expired=1" in out
    assert "dead letters    : 11" in out
    for reason in ("invalid_json", "bad_order_id", "unknown_state", "oversize", "api_rejected"):
        assert reason in out
    assert "sample snapshot" in out
    assert "sample event" in out
    # The change feed: a change by another adapter comes back through a Norce notification.
    assert "=== change feed (Norce notifications) ===" in out
    assert "1 delivery answered 200 by the bridge's ingress" in out
    assert '"previousStatus": "processing", "newStatus": "accepted", "source": "external"' in out
    assert "snapshot        : status accepted" in out
