"""The installed artifact is the product: build the wheel, install it as the image does (locked,
hash-checked dependencies, then the wheel without dependencies) into a fresh venv, and run the
console script from a directory outside the repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from bridge import __version__
from bridge.codec import packaged_schemas

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _run(
    argv: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIDGE_", "PYTHON", "VIRTUAL_ENV")) and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env.update(extra)
    return env


def test_wheel_installed_from_the_lock_runs_outside_the_repository(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The service wheel carries the schemas and no development tooling; installed from the
    lock it passes pip check and runs --version, schema and refuses a bad configuration from
    another directory; with the devkit wheel added, a short demo drives the installed service."""
    # Build from a copy holding only what the image's build context holds (.dockerignore), so
    # the repo gets no build/ directory and nothing outside that set can leak into the wheel.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "bridge", src / "bridge", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    build = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(src)],
        cwd=tmp_path,
    )
    assert "project.license" not in build.stdout + build.stderr  # no deprecation warning
    devkit_src = tmp_path / "devkit"
    shutil.copytree(ROOT / "devkit", devkit_src, ignore=shutil.ignore_patterns("__pycache__"))
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(devkit_src)],
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("norce_order_bridge-*.whl")
    (devkit_wheel,) = dist.glob("norce_order_bridge_devkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(
            next(n for n in names if n.endswith(".dist-info/METADATA"))
        ).decode()
    shipped = {f.name for f in packaged_schemas().iterdir() if f.is_file()}
    assert {f"bridge/schemas/{name}" for name in shipped} <= names
    assert "License-Expression: Apache-2.0" in metadata
    # The product is the service only: no simulator, local broker or demo in its wheel.
    tooling = {n for n in names if not n.startswith(("bridge/", "norce_order_bridge-"))}
    assert not tooling, sorted(tooling)
    assert not {n for n in names if "simulator" in n or "localkafka" in n or "demo" in n}

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    pip = [str(bin_dir / "python"), "-m", "pip", "--disable-pip-version-check"]
    _run(
        [*pip, "install", "-q", "--require-hashes", "-r", str(ROOT / "requirements.lock")],
        cwd=tmp_path,
    )
    _run([*pip, "install", "-q", "--no-deps", str(wheel)], cwd=tmp_path)
    _run([*pip, "check"], cwd=tmp_path)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = _clean_env()
    located = _run(
        [str(bin_dir / "python"), "-c", "import bridge; print(bridge.__file__)"],
        cwd=outside,
        env=env,
    )
    assert Path(located.stdout.strip()).is_relative_to(env_dir), located.stdout
    script = str(bin_dir / "order-bridge")

    version = _run([script, "--version"], cwd=outside, env=env)
    assert version.stdout.strip() == f"order-bridge {__version__}"

    schema = _run([script, "schema"], cwd=outside, env=env)
    assert json.loads(schema.stdout) == json.loads(
        packaged_schemas().joinpath("order-command.schema.json").read_text()
    )

    # The service alone starts far enough to check its configuration: a plain-http API URL is
    # refused with exit 2 and one line naming the setting.
    refused = subprocess.run(
        [script, "run"],
        cwd=outside,
        env=_clean_env(
            BRIDGE_NORCE__BASE_URL="http://norce.example",
            BRIDGE_NORCE__API_KEY="k",
            BRIDGE_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "BRIDGE_NORCE__ALLOW_INSECURE_HTTP" in refused.stderr
    assert "Traceback" not in refused.stderr

    # The devkit's own dependencies (e.g. jsonschema for the simulator's notifications) are not
    # the service's: pip resolves them, the service and its locked dependencies stay as they are.
    _run([*pip, "install", "-q", str(devkit_wheel)], cwd=tmp_path)
    _run([*pip, "check"], cwd=tmp_path)
    demo = _run(
        [str(bin_dir / "order-bridge-dev"), "demo", "--orders", "8"],
        cwd=outside,
        env=_clean_env(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap),
        timeout=300,
    )
    handled = re.search(r"records handled : (\d+)/(\d+)", demo.stdout)
    assert handled, demo.stdout
    assert handled.group(1) == handled.group(2), demo.stdout
    assert "sample snapshot" in demo.stdout
    assert "Traceback" not in demo.stderr
