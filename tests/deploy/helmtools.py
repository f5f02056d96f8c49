"""Helpers of the deployment tests: locate helm/promtool/hadolint and render the chart."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "norce-order-bridge"
CI_VALUES = sorted((CHART_DIR / "ci").glob("*-values.yaml"))
# The smallest values that install (the chart requires a Norce API URL and a key source); the
# base of every render that names no values file.
MINIMAL_VALUES = CHART_DIR / "ci" / "minimal-values.yaml"
# Kubernetes version the manifests are rendered for and validated against (kubernetes-validate
# ships its schemas).
KUBE_VERSION = "1.33.0"
RELEASE = "bridge"
NAMESPACE = "orders"
INSTALL_HINT = "run scripts/install-tools.sh (see helm/README.md)"

# Isolated helm home so neither the user's repositories nor plugins influence the tests.
_HELM_HOME = Path(tempfile.mkdtemp(prefix="norce-bridge-helm-home-"))


def tools_bin_dir() -> Path:
    """Where scripts/install-tools.sh puts helm."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "norce-order-bridge" / "tools" / "bin"


def find_tool(name: str) -> str:
    """Path of a tool on PATH, in the tools cache or in the venv; fail loudly when missing."""
    for candidate in (
        shutil.which(name),
        str(tools_bin_dir() / name),
        str(Path(sys.executable).parent / name),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{name} not found on PATH nor in {tools_bin_dir()}: {INSTALL_HINT}", pytrace=False)


def run(
    argv: list[str], *, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool with a clean helm home and capture its output."""
    env = dict(os.environ)
    env.update(
        HELM_CACHE_HOME=str(_HELM_HOME / "cache"),
        HELM_CONFIG_HOME=str(_HELM_HOME / "config"),
        HELM_DATA_HOME=str(_HELM_HOME / "data"),
    )
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=120, check=False, cwd=cwd
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    return proc


def values_id(path: Path) -> str:
    """Readable test id of a values file."""
    return path.name


def template_argv(
    values: Iterable[Path] = (), sets: Iterable[str] = (), *, show_only: str | None = None
) -> list[str]:
    """The helm template command line."""
    argv = [
        find_tool("helm"),
        "template",
        RELEASE,
        str(CHART_DIR),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ]
    for path in values:
        argv += ["--values", str(path)]
    for item in sets:
        argv += ["--set", item]
    if show_only:
        argv += ["--show-only", show_only]
    return argv


@functools.cache
def render(values: tuple[Path, ...] = (), sets: tuple[str, ...] = ()) -> tuple[dict[str, Any], ...]:
    """Rendered manifests (parsed) for values files (default: the minimal ones) and --set items."""
    proc = run(template_argv(values or (MINIMAL_VALUES,), sets))
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def render_fails(
    sets: Iterable[str] = (), values: Iterable[Path] = (), *, bare: bool = False
) -> str:
    """Render expecting failure; return helm's error output.

    Without values files the minimal values are the base, unless ``bare`` (the chart's defaults).
    """
    files = list(values) or ([] if bare else [MINIMAL_VALUES])
    proc = run(template_argv(files, sets), check=False)
    assert proc.returncode != 0, f"helm template accepted invalid values {list(sets)}"
    return proc.stderr


def is_hook(doc: dict[str, Any]) -> bool:
    """A Helm hook (e.g. the `helm test` Pod and its NetworkPolicy), not part of the release."""
    return "helm.sh/hook" in ((doc.get("metadata") or {}).get("annotations") or {})


def by_kind(
    docs: Iterable[dict[str, Any]], kind: str, *, hook: bool | None = None
) -> list[dict[str, Any]]:
    """Documents of one kind; with ``hook``, only hooks (True) or only release objects (False)."""
    return [d for d in docs if d.get("kind") == kind and hook in (None, is_hook(d))]


def one(docs: Iterable[dict[str, Any]], kind: str, *, hook: bool | None = None) -> dict[str, Any]:
    """The single document of a kind (``hook`` as in :func:`by_kind`)."""
    found = by_kind(docs, kind, hook=hook)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
