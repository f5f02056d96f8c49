"""Find secrets (and their encoded forms) in logs, HTTP bodies, Kafka records and exceptions.

A :class:`SecretScanner` knows a few named secrets and, for each, the forms in which a careless
program could leak it:

* the raw text, and every window of ``fragment_len`` characters of it (a truncated secret is
  still a leak);
* percent-encoded (``quote`` and ``quote_plus``) and JSON-escaped (``\\/``) forms;
* base64 (standard and URL-safe alphabets) at each of the three byte alignments, so that the
  secret is found inside a longer encoded value such as ``base64("user:" + secret)`` or a SASL
  PLAIN message ``\\0user\\0secret``;
* lower-case hex.

Everything scanned is counted per category (``scanner.scanned``), so a test can also assert
that it looked at what it meant to look at. Findings are reported with the secret masked.
"""

from __future__ import annotations

import base64
import json
import traceback
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MASK = "<SECRET>"


def base64_cores(data: bytes) -> list[str]:
    """Base64 text that appears in every encoding of a byte string containing ``data``.

    For each alignment ``k`` (bytes before ``data`` modulo 3) the characters that depend on
    ``data`` alone are the same whatever surrounds it; those cores are returned (standard
    alphabet; see :func:`secret_forms` for the URL-safe one).
    """
    cores: list[str] = []
    n = len(data)
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + data).decode("ascii")
        start = -(-8 * k // 6)  # ceil: first character made only of ``data`` bits
        end = (8 * (k + n)) // 6  # floor: last character not touched by what follows
        cores.append(encoded[start:end])
    return cores


def secret_forms(secret: str, *, fragment_len: int = 12) -> dict[str, str]:
    """Every needle to look for, keyed by a name of the form (e.g. ``base64[1]``)."""
    if len(secret) < fragment_len:
        raise ValueError(f"test secrets must be at least {fragment_len} characters long")
    raw = secret.encode("utf-8")
    forms: dict[str, str] = {"raw": secret}
    forms["url"] = urllib.parse.quote(secret, safe="")
    forms["url_plus"] = urllib.parse.quote_plus(secret, safe="")
    forms["json"] = json.dumps(secret)[1:-1]
    forms["json_slash"] = forms["json"].replace("/", "\\/")
    for i, core in enumerate(base64_cores(raw)):
        forms[f"base64[{i}]"] = core
        forms[f"base64url[{i}]"] = core.translate(str.maketrans("+/", "-_"))
    forms["hex"] = raw.hex()
    for i in range(len(secret) - fragment_len + 1):
        forms[f"fragment[{i}:{i + fragment_len}]"] = secret[i : i + fragment_len]
    # Drop duplicates (a secret without special characters has equal raw/url/json forms) and
    # needles too short to mean anything.
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name, needle in forms.items():
        if len(needle) >= 8 and needle not in seen:
            seen.add(needle)
            out[name] = needle
    return out


@dataclass(frozen=True)
class Finding:
    """One place where a secret (in some form) was found."""

    where: str
    secret: str
    form: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.where}: {self.secret} ({self.form}) in {self.excerpt!r}"


@dataclass
class SecretScanner:
    """Scans text, bytes, Kafka records and exceptions for the given named secrets."""

    secrets: Mapping[str, str]
    fragment_len: int = 12
    findings: list[Finding] = field(default_factory=list)
    scanned: Counter[str] = field(default_factory=Counter)
    _needles: list[tuple[str, str, str]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        for label, secret in self.secrets.items():
            for form, needle in secret_forms(secret, fragment_len=self.fragment_len).items():
                self._needles.append((label, form, needle))

    # -- primitives ---------------------------------------------------------------------------

    def scan_text(self, where: str, text: str, *, category: str = "text") -> list[Finding]:
        """Scan one text; findings are recorded and returned."""
        self.scanned[category] += 1
        found: list[Finding] = []
        for label, form, needle in self._needles:
            at = text.find(needle)
            if at < 0:
                continue
            if form.startswith("fragment") and any(f.secret == label for f in found):
                continue  # fragments come last: one finding per secret and place is enough
            found.append(Finding(where, label, form, self._excerpt(text, at, len(needle))))
        self.findings.extend(found)
        return found

    def scan_bytes(self, where: str, data: bytes | None, *, category: str = "bytes") -> None:
        """Scan bytes as UTF-8 (invalid sequences replaced) and as Latin-1 (byte for byte)."""
        if data is None:
            self.scanned[category] += 1
            return
        text = data.decode("utf-8", "replace")
        latin = data.decode("latin-1")
        self.scan_text(where, text if text == latin else text + "\n" + latin, category=category)

    def _excerpt(self, text: str, at: int, length: int) -> str:
        lo, hi = max(0, at - 60), min(len(text), at + length + 60)
        masked = text[lo:at] + MASK + text[at + length : hi]
        for secret in self.secrets.values():
            masked = masked.replace(secret, MASK)
        return masked

    # -- composites ---------------------------------------------------------------------------

    def scan_lines(self, where: str, text: str, *, category: str = "log line") -> int:
        """Scan a multi-line text line by line (findings name the line); returns the count."""
        lines = text.splitlines()
        for i, line in enumerate(lines, 1):
            self.scan_text(f"{where}:{i}", line, category=category)
        # A secret split across lines (a wrapped traceback) is caught by the whole-text pass.
        self.scan_text(where, text, category=f"{category} file")
        return len(lines)

    def scan_record(
        self,
        where: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
        *,
        category: str = "record",
    ) -> None:
        """Scan a Kafka record: key, value and every header name and value."""
        self.scanned[category] += 1
        self.scan_bytes(f"{where} key", key, category=f"{category} key")
        self.scan_bytes(f"{where} value", value, category=f"{category} value")
        for name, hvalue in headers:
            self.scan_text(f"{where} header name", name, category=f"{category} header")
            self.scan_bytes(f"{where} header {name}", hvalue, category=f"{category} header")

    def scan_exception(self, where: str, exc: BaseException) -> None:
        """Scan ``str``, ``repr``, ``args``, attributes and the traceback of ``exc`` and its chain.

        The chain is followed as Python prints it: ``__cause__``, else ``__context__`` unless
        suppressed (``raise ... from None``).
        """
        self.scanned["exception"] += 1
        seen: set[int] = set()
        current: BaseException | None = exc
        depth = 0
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            label = f"{where} {type(current).__name__}" + (f" (chain {depth})" if depth else "")
            self.scan_text(f"{label} str", str(current), category="exception text")
            self.scan_text(f"{label} repr", repr(current), category="exception text")
            for i, arg in enumerate(current.args):
                self.scan_text(f"{label} args[{i}]", repr(arg), category="exception text")
            for name, value in vars(current).items():
                self.scan_text(f"{label} .{name}", repr(value), category="exception attribute")
            if current.__cause__ is not None:
                current = current.__cause__
            elif not current.__suppress_context__:
                current = current.__context__
            else:
                current = None
            depth += 1
        formatted = "".join(traceback.format_exception(exc))
        self.scan_text(f"{where} traceback", formatted, category="exception traceback")

    # -- verdict ------------------------------------------------------------------------------

    def assert_clean(self, *, max_shown: int = 15) -> None:
        """Fail listing (masked) where secrets were found."""
        if not self.findings:
            return
        shown = "\n  ".join(str(f) for f in self.findings[:max_shown])
        more = len(self.findings) - max_shown
        raise AssertionError(
            f"{len(self.findings)} secret leak(s) found"
            + (f" (first {max_shown} shown)" if more > 0 else "")
            + f":\n  {shown}"
        )


def find_values(text: str, values: Mapping[str, str], *, min_len: int = 4) -> list[str]:
    """``label: line`` for each configuration value (``label -> value``) that occurs in ``text``."""
    found: list[str] = []
    for label, value in values.items():
        if len(value) < min_len:
            continue
        at = text.find(value)
        if at < 0:
            continue
        start = text.rfind("\n", 0, at) + 1
        end = text.find("\n", at)
        line = text[start : end if end >= 0 else len(text)]
        found.append(f"{label} in {line[:200]!r}")
    return found
