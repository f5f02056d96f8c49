"""``norce_bridge_memory_limit_bytes``: the cgroup memory limit, or no sample when unlimited."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bridge.memory_limit import MemoryLimit, read_memory_limit


@pytest.mark.parametrize(
    ("v2", "v1", "expected"),
    [
        ("536870912\n", None, 536870912),  # cgroup v2 with a limit
        ("max\n", None, None),  # cgroup v2 without one
        (None, "268435456\n", 268435456),  # cgroup v1
        (None, "9223372036854771712\n", None),  # v1's "no limit"
        (None, None, None),  # no cgroup files (not Linux, or not in a container)
        ("garbage", None, None),
        ("0", None, None),
    ],
)
def test_reads_the_limit_of_either_cgroup_version(
    tmp_path: Path, v2: str | None, v1: str | None, expected: int | None
) -> None:
    files = [tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"]
    for path, text in zip(files, (v2, v1), strict=True):
        if text is not None:
            path.write_text(text)
    assert read_memory_limit(files) == expected


def test_exported_with_a_limit_and_without_a_sample_when_unlimited(tmp_path: Path) -> None:
    limit_file = tmp_path / "memory.max"
    registry = CollectorRegistry()
    registry.register(MemoryLimit([limit_file]))

    limit_file.write_text("max\n")
    assert registry.get_sample_value("norce_bridge_memory_limit_bytes") is None
    assert b"# TYPE norce_bridge_memory_limit_bytes gauge" in generate_latest(registry)

    limit_file.write_text("536870912\n")  # read at each scrape: a resized pod shows
    assert registry.get_sample_value("norce_bridge_memory_limit_bytes") == 536870912.0
