"""Secrets from the environment or from a mounted file, never echoed."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from bridge.errors import ConfigError

__all__ = ["load_secret"]


def load_secret(
    value: SecretStr | None,
    file: Path | None,
    *,
    variable: str = "BRIDGE_NORCE__API_KEY",
    what: str = "API key",
) -> SecretStr:
    """Return a secret from ``value`` (environment) or ``file`` (a mounted Kubernetes Secret).

    Exactly one source must be set. Surrounding whitespace (the trailing newline of a file) is
    stripped. Errors name the secret's own variable (``variable`` or ``variable_FILE``) and the
    file, never the content.
    """
    given = value is not None and value.get_secret_value() != ""
    if given and file is not None:
        raise ConfigError(f"set either {variable} or {variable}_FILE, not both ({what})")
    if value is not None and given:
        stripped = value.get_secret_value().strip()
        if not stripped:
            raise ConfigError(f"{variable}: the {what} is blank")
        return SecretStr(stripped)
    if file is None:
        raise ConfigError(f"no {what} configured: set {variable} or {variable}_FILE")
    try:
        content = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{variable}_FILE: the {what} file {str(file)!r} is not UTF-8 text"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{variable}_FILE: cannot read the {what} file {str(file)!r}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    stripped = content.strip()
    if not stripped:
        raise ConfigError(f"{variable}_FILE: the {what} file {str(file)!r} is empty")
    return SecretStr(stripped)
