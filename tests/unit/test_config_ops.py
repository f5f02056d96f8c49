"""Operability of the settings and the shipped artifact: schemas, URL and secret guards, locks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from pydantic import SecretStr

from bridge.codec import AvroCodec, packaged_schemas
from bridge.config import BridgeSettings, NorceSettings, load_settings
from bridge.errors import ConfigError, SchemaLoadError
from bridge.norce import load_secret

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# --------------------------------------------------------------------------- schemas


def test_packaged_schemas_are_identical_to_the_readers_copy() -> None:
    """bridge/schemas (shipped, loaded) and schemas/ (for readers) hold the same bytes."""
    packaged = {f.name: f.read_bytes() for f in packaged_schemas().iterdir() if f.is_file()}
    readers = {p.name: p.read_bytes() for p in (ROOT / "schemas").iterdir() if p.is_file()}
    assert set(packaged) == set(readers), "copy with `make schemas` (bridge/schemas is the source)"
    for name, data in packaged.items():
        assert data == readers[name], f"{name} differs: bridge/schemas/ is the source; make schemas"
    assert {n for n in packaged if n.endswith(".avsc")} >= {
        "OrderSnapshot.avsc",
        "OrderStateChanged.avsc",
        "OrderDeleted.avsc",
        "CommandResult.avsc",
        "OrderCommand.avsc",
    }
    assert "order-command.schema.json" in packaged


def test_default_settings_load_the_schemas_shipped_in_the_package() -> None:
    """Without BRIDGE_SCHEMAS_DIR the codec reads the package's schemas, not a source tree."""
    assert BridgeSettings().schemas_dir is None
    codec = AvroCodec.load(BridgeSettings().schemas_dir)
    assert "OrderSnapshot" in codec.schema_names
    assert "schemas/*.avsc" in PYPROJECT["tool"]["setuptools"]["package-data"]["bridge"]


def test_schemas_dir_override_is_used(tmp_path: Path) -> None:
    """BRIDGE_SCHEMAS_DIR still overrides; an empty directory fails naming it."""
    with pytest.raises(SchemaLoadError, match=r"no \*\.avsc schema files"):
        AvroCodec.load(load_settings(schemas_dir=tmp_path).schemas_dir)


# --------------------------------------------------------------------------- Norce URL guards


@pytest.mark.parametrize("slug", ["evil.example/", "evil.example", "a@b", "-x", "x" * 64, ""])
def test_slug_must_be_one_dns_label(slug: str) -> None:
    """A slug that is not one DNS label cannot redirect the production host elsewhere."""
    with pytest.raises(ConfigError) as info:
        load_settings(norce={"environment": "production", "slug": slug, "api_key": "k"})
    assert "BRIDGE_NORCE__SLUG" in str(info.value)


def test_valid_slug_builds_the_documented_host() -> None:
    """A DNS-label slug yields https://<slug>.api-se.norce.tech/checkout/order/."""
    n = NorceSettings(environment="production", slug="Customer-Slug1")
    assert n.resolved_base_url() == "https://customer-slug1.api-se.norce.tech/checkout/order/"


@pytest.mark.parametrize(
    "url",
    ["http://norce.example.com/checkout/order/", "http://10.0.0.5:8089", "http://[2001:db8::1]/"],
)
def test_plain_http_to_a_remote_host_is_refused(url: str) -> None:
    """The API key never goes over plain http to another host unless explicitly allowed."""
    with pytest.raises(ConfigError) as info:
        load_settings(norce={"base_url": url})
    message = str(info.value)
    assert "BRIDGE_NORCE__ALLOW_INSECURE_HTTP" in message
    assert url not in message
    allowed = load_settings(norce={"base_url": url, "allow_insecure_http": True})
    assert allowed.norce.resolved_base_url() == url


@pytest.mark.parametrize(
    "url",
    [
        "https://norce.example.com/checkout/order/",
        "http://127.0.0.1:8089",
        "http://127.1.2.3/",
        "http://localhost:8089/",
        "http://[::1]:8089/",
    ],
)
def test_https_and_loopback_are_accepted(url: str) -> None:
    """https:// anywhere and http:// to loopback (the simulator) need no opt-in."""
    assert load_settings(norce={"base_url": url}).norce.base_url == url


def test_a_base_url_that_is_not_http_is_refused() -> None:
    """Another scheme or a relative URL is a configuration error naming the variable."""
    for url in ("ftp://norce.example.com/", "norce.example.com/checkout"):
        with pytest.raises(ConfigError, match="BRIDGE_NORCE__BASE_URL"):
            load_settings(norce={"base_url": url})


# --------------------------------------------------------------------------- env parsing


def refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """Set ``env`` and return the text of the ConfigError ``load_settings`` raises (chained to
    nothing: no pydantic traceback behind it)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.__cause__ is None
    return str(info.value)


def test_malformed_nested_json_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BRIDGE_NORCE='{bad' is a ConfigError naming BRIDGE_NORCE, not a traceback."""
    text = refused(monkeypatch, BRIDGE_NORCE='{"api_key": "s3cret-in-json", ')
    assert "BRIDGE_NORCE:" in text
    assert "JSON" in text
    assert "s3cret-in-json" not in text


def test_problems_are_listed_one_per_line_without_pydantic_prefixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each problem is one line that starts with its variable."""
    monkeypatch.setenv("BRIDGE_PROCESSING__MAX_IN_FLIGHT", "lots")
    monkeypatch.setenv("BRIDGE_NORCE__ENVIRONMENT", "production")
    with pytest.raises(ConfigError) as info:
        load_settings()
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 2
    assert all(line.strip().startswith("BRIDGE_") for line in lines), lines
    assert not any("Value error," in line for line in lines)


def test_a_bridge_variable_that_names_no_setting_is_refused_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A misspelt top-level name would otherwise be ignored (its setting silently default):
    each is one line naming it and the setting it most resembles; never its value."""
    text = refused(
        monkeypatch,
        BRIDGE_LOGLEVEL="secret-looking-value",
        BRIDGE_KAFKAA__BOOTSTRAP_SERVERS="x:1",
        BRIDGE_NOTHING_LIKE_IT="1",
    )
    lines = [line.strip() for line in text.splitlines()[1:]]
    assert lines == [
        "BRIDGE_KAFKAA__BOOTSTRAP_SERVERS: not a setting of the bridge "
        "(did you mean BRIDGE_KAFKA__BOOTSTRAP_SERVERS?)",
        "BRIDGE_LOGLEVEL: not a setting of the bridge (did you mean BRIDGE_LOG_LEVEL?)",
        "BRIDGE_NOTHING_LIKE_IT: not a setting of the bridge",
    ]
    assert "secret-looking-value" not in text


def test_known_names_in_any_case_and_whole_sections_are_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Names are matched like pydantic-settings reads them: case-insensitively, a section as
    one JSON variable or field by field; a real problem is still reported beside a typo."""
    monkeypatch.setenv("bridge_log_level", "debug")
    monkeypatch.setenv("BRIDGE_HTTP", '{"port": 9100}')
    monkeypatch.setenv("BRIDGE_PROCESSING__MAX_IN_FLIGHT", "8")
    settings = load_settings()
    assert (settings.log_level, settings.http.port) == ("DEBUG", 9100)
    assert settings.processing.max_in_flight == 8
    text = refused(monkeypatch, BRIDGE_PROCESSING__MAX_IN_FLIGHT="lots", BRIDGE_EVENTLOOP="uvloop")
    assert "BRIDGE_PROCESSING__MAX_IN_FLIGHT" in text
    assert "BRIDGE_EVENTLOOP: not a setting of the bridge (did you mean BRIDGE_EVENT_LOOP?)" in text


def test_startup_deadline_is_a_positive_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """BRIDGE_KAFKA__STARTUP_DEADLINE_S is read from the environment and must be positive."""
    monkeypatch.setenv("BRIDGE_KAFKA__STARTUP_DEADLINE_S", "7.5")
    assert load_settings().kafka.startup_deadline_s == 7.5
    monkeypatch.setenv("BRIDGE_KAFKA__STARTUP_DEADLINE_S", "0")
    with pytest.raises(ConfigError, match="BRIDGE_KAFKA__STARTUP_DEADLINE_S"):
        load_settings()


# --------------------------------------------------------------------------- secrets


def test_each_secret_error_names_its_own_variable(tmp_path: Path) -> None:
    """SASL password file errors name BRIDGE_KAFKA__SASL_PASSWORD_FILE, not the API key."""
    sasl = {"variable": "BRIDGE_KAFKA__SASL_PASSWORD", "what": "SASL password"}
    missing = tmp_path / "missing"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path in (missing, empty, tmp_path):
        with pytest.raises(ConfigError) as info:
            load_secret(None, path, **sasl)
        assert "BRIDGE_KAFKA__SASL_PASSWORD_FILE" in str(info.value)
        assert "API key" not in str(info.value)
    with pytest.raises(ConfigError, match="BRIDGE_KAFKA__SASL_PASSWORD or"):
        load_secret(None, None, **sasl)
    with pytest.raises(ConfigError, match="BRIDGE_NORCE__API_KEY_FILE"):
        load_secret(None, missing)
    with pytest.raises(ConfigError, match="not both"):
        load_secret(SecretStr("x"), empty, **sasl)


# --------------------------------------------------------------------------- lock files


def _lock(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, hashes) of a pip requirements file with --hash options."""
    text = path.read_text()
    pins: dict[str, tuple[Version, list[str]]] = {}
    for block in re.split(r"\n(?=\S)", text):
        line = block.splitlines()[0].rstrip(" \\")
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{path.name}: {line} is not pinned"
        pins[canonicalize_name(req.name)] = (
            Version(spec.version),
            re.findall(r"--hash=(\S+)", block),
        )
    return pins


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        (
            "requirements.lock",
            PYPROJECT["project"]["dependencies"]
            + PYPROJECT["project"]["optional-dependencies"]["otel"],
        ),
        ("requirements-build.lock", PYPROJECT["build-system"]["requires"]),
    ],
)
def test_lock_pins_every_declared_dependency_with_hashes(
    lock: str, requirements: list[str]
) -> None:
    """Every dependency in pyproject.toml is pinned in the lock within its range, with hashes.

    A failure means pyproject.toml changed without `make lock` (README: Dependencies).
    """
    pins = _lock(ROOT / lock)
    assert pins, lock
    for text in requirements:
        req = Requirement(text)
        name: str = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in {lock}: run `make lock`"
        version, _ = pins[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, outside {req.specifier}: run `make lock`"
        )
    for name, (_, hashes) in pins.items():
        assert hashes, f"{name} has no hash in {lock}"
        assert all(h.startswith("sha256:") for h in hashes)


def test_lock_is_generated_by_the_documented_command() -> None:
    """The locks say how to regenerate them, and make install/the image use them."""
    for lock in ("requirements.lock", "requirements-build.lock"):
        assert "make lock" in (ROOT / lock).read_text().splitlines()[1]
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements.lock" in makefile
    assert "--generate-hashes" in makefile
