"""The container image definition: hadolint and the properties the chart relies on."""

from __future__ import annotations

import re

from helmtools import ROOT, find_tool, run

DOCKERFILE = ROOT / "Dockerfile"


def stages() -> list[str]:
    """The Dockerfile split into its stages (text after each FROM)."""
    text = DOCKERFILE.read_text()
    return re.split(r"(?m)^FROM ", text)[1:]


def test_hadolint_passes() -> None:
    """hadolint reports nothing."""
    proc = run([find_tool("hadolint"), str(DOCKERFILE)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_stage_with_pinned_slim_python() -> None:
    """A builder and a runtime stage on a pinned python:3.11.x slim image."""
    text = DOCKERFILE.read_text()
    parts = stages()
    assert len(parts) >= 2
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+", text)
    assert parts[0].startswith("${PYTHON_IMAGE} AS builder")
    assert parts[-1].startswith("${PYTHON_IMAGE} AS runtime")


def test_runtime_stage_runs_the_bridge_as_non_root_pid_1() -> None:
    """The runtime runs as UID 10001 with an exec-form entrypoint and no build tools."""
    runtime = stages()[-1]
    assert re.search(r"(?m)^USER 10001(:10001)?$", runtime)
    assert re.search(r'(?m)^ENTRYPOINT \["order-bridge"\]$', runtime)
    assert re.search(r'(?m)^CMD \["run"\]$', runtime)
    assert "EXPOSE 8000" in runtime
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    for tool in ("apt-get", "pip install", "gcc", "build-essential"):
        assert tool not in runtime


def test_image_environment_and_files() -> None:
    """Locked, hash-checked deps; schemas in the wheel; byte-compiled; unbuffered; OCI labels."""
    text = DOCKERFILE.read_text()
    builder = stages()[0]
    assert "compileall" in builder
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in builder
    assert "pip install --no-cache-dir --no-deps" in builder
    assert "pip check" in builder
    assert "BRIDGE_SCHEMAS_DIR" not in text.replace("BRIDGE_SCHEMAS_DIR may override", "")
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    assert "PYTHONUNBUFFERED=1" in text
    for label in ("title", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{label}" in text, label


def test_dockerignore_keeps_the_context_small() -> None:
    """Only the files the build needs are sent to the builder."""
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*"
    assert {"!pyproject.toml", "!README.md", "!bridge/", "!requirements.lock"} <= set(lines)
