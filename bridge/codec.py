"""Avro single-object encoding of the bridge's Kafka records, without a schema registry.

Every message is ``C3 01`` (the single-object marker), then the 8-byte little-endian
CRC-64-AVRO (Rabin) fingerprint of the writer schema's Parsing Canonical Form, then the Avro
binary body. Readers find the writer schema by fingerprint, so every consumer needs the same
``schemas/*.avsc`` files (any schema change yields a new fingerprint). They ship inside the
package (``bridge/schemas/``, read with :mod:`importlib.resources`), so an installed wheel needs
no source tree; a directory may be given instead (``BRIDGE_SCHEMAS_DIR``).

All schemas are parsed once by :meth:`AvroCodec.load`; encoding then only writes a
precomputed 10-byte header and calls ``fastavro.schemaless_writer``. For speed, values of
``["null", <record or array>]`` unions are first tagged with fastavro's tuple notation
(``(branch name, value)``): untagged, fastavro picks a union branch by validating the whole
nested value against it, at every nesting level, which more than doubles the cost of a deep
record such as ``OrderSnapshot``. A :class:`bridge.snapshot.TaggedRecord` (tagged while mapping,
``bridge.snapshot.tagged_snapshot_from_order``) is written as it is.

**Confluent wire format** (issue 15, ``BRIDGE_AVRO__ENCODING=confluent``): ``00`` (the magic
byte), the 4-byte big-endian schema id a registry gave, then the Avro binary body (for a union
subject, the union branch index first). :meth:`AvroCodec.framed` returns a codec whose outputs
carry those headers (still precomputed: encoding costs the same). :meth:`AvroCodec.decode` reads
both framings, told apart by the first byte (``C3`` or ``00``; the latter only once framed: a
codec without a registry reads bytes exactly as before). A Confluent id the codec has not
seen raises :class:`UnknownSchemaIdError`; :meth:`AvroCodec.resolve` fetches its writer schema
once (the fetch function is given by the caller: the codec does no I/O itself) and caches it;
records are then read with the writer schema resolved to the codec's own (Avro schema
resolution), so a producer's compatible newer schema decodes.

Errors: ``SchemaLoadError`` and ``AvroDecodeError`` come from :mod:`bridge.errors` (both
``AvroError``); ``AvroEncodeError`` and ``UnknownSchemaError`` are the codec's own ``AvroError``
subclasses, re-exported here with the others.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from importlib.resources.abc import Traversable
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema

from bridge.errors import AvroDecodeError, AvroError, SchemaLoadError
from bridge.snapshot import TaggedRecord

__all__ = [
    "HEADER_SIZE",
    "MARKER",
    "AvroCodec",
    "AvroDecodeError",
    "AvroEncodeError",
    "AvroError",
    "ConfluentId",
    "SchemaLoadError",
    "UnknownSchemaError",
    "UnknownSchemaIdError",
    "packaged_schemas",
]

MARKER = b"\xc3\x01"
"""The two marker bytes that start every Avro single-object encoded message."""

FINGERPRINT_SIZE = 8
HEADER_SIZE = len(MARKER) + FINGERPRINT_SIZE
"""Marker plus CRC-64-AVRO fingerprint: the bytes in front of the Avro body."""

CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_SIZE = 5
"""Magic byte 0 plus the 4-byte big-endian schema id."""

SINGLE_OBJECT_CONTENT_TYPE = "application/avro"
CONFLUENT_CONTENT_TYPE = "application/vnd.confluent.avro"
"""Content types of the two framings (the latter has no registered media type; documented)."""


class AvroEncodeError(AvroError, ValueError):
    """A record does not match its schema."""


class UnknownSchemaError(AvroError, LookupError):
    """A short schema name that the codec did not load."""


class UnknownSchemaIdError(AvroDecodeError):
    """A Confluent-framed record whose schema id the codec has not seen (yet)."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"unknown Confluent schema id {schema_id}")
        self.schema_id = schema_id


@dataclass(frozen=True, slots=True)
class ConfluentId:
    """A schema's registry id; ``branch``: its index in a union subject's schema; ``writer``:
    the registered schema text to write with when it is not the codec's own (use.latest)."""

    schema_id: int
    branch: int | None = None
    writer: str | None = None


@dataclass(frozen=True, slots=True)
class _Reader:
    """How to read the body of one Confluent schema id."""

    short_name: str | None  # None: a writer schema that is none of the codec's records
    writer: Any
    reader: Any  # None: the writer schema itself
    branches: tuple[str, ...] = ()  # a union of the codec's own records, by branch index


@dataclass(frozen=True, slots=True)
class _Entry:
    short_name: str
    full_name: str
    parsed: Any
    tagger: Callable[[Any], Any] | None
    canonical_form: str
    fingerprint: bytes
    header: bytes
    text: str = ""  # the schema as JSON text (what is registered)


class AvroCodec:
    """Encodes and decodes records of the loaded schemas in Avro single-object encoding."""

    __slots__ = (
        "_by_fingerprint",
        "_by_id",
        "_by_name",
        "_content_type",
        "_fetch",
    )

    def __init__(self, entries: Mapping[str, _Entry]) -> None:
        """Build from already parsed entries; use :meth:`load` instead."""
        self._by_name: dict[str, _Entry] = dict(entries)
        self._by_fingerprint: dict[bytes, _Entry] = {e.fingerprint: e for e in entries.values()}
        self._by_id: dict[int, _Reader] = {}
        self._content_type = SINGLE_OBJECT_CONTENT_TYPE
        self._fetch: Callable[[int], Awaitable[str]] | None = None

    @classmethod
    def load(cls, schemas_dir: Path | Traversable | None = None) -> AvroCodec:
        """Parse every ``*.avsc`` in ``schemas_dir``; each file holds one named record.

        ``None`` (the default) reads the schemas shipped in the package (:func:`packaged_schemas`).
        The record's short name must equal the file stem (``OrderSnapshot.avsc`` defines
        ``OrderSnapshot``). Raises :class:`SchemaLoadError` naming the offending file.
        """
        source = packaged_schemas() if schemas_dir is None else schemas_dir
        try:
            files = sorted(
                (f for f in source.iterdir() if f.name.endswith(".avsc") and f.is_file()),
                key=lambda f: f.name,
            )
        except OSError as exc:
            raise SchemaLoadError(
                f"cannot list the schema directory {source}: {exc.strerror or type(exc).__name__}"
            ) from None
        if not files:
            raise SchemaLoadError(f"no *.avsc schema files in {source}")
        entries: dict[str, _Entry] = {}
        fingerprints: dict[bytes, Path | Traversable] = {}
        for path in files:
            entry = _load_one(path)
            if entry.fingerprint in fingerprints:  # pragma: no cover - needs a CRC-64 collision
                raise SchemaLoadError(
                    f"{path}: same fingerprint as {fingerprints[entry.fingerprint]}"
                )
            fingerprints[entry.fingerprint] = path
            entries[entry.short_name] = entry
        return cls(entries)

    def framed(
        self,
        ids: Mapping[str, ConfluentId],
        *,
        fetch: Callable[[int], Awaitable[str]] | None = None,
    ) -> AvroCodec:
        """A codec writing the Confluent wire format with the registry's ``ids`` (by short name).

        Every loaded schema must have an id. ``fetch`` (a registry look-up of a schema id) lets
        :meth:`resolve` learn ids it has not seen. Raises :class:`SchemaLoadError` when a
        ``writer`` schema given is not usable for its record.
        """
        missing = sorted(set(self._by_name) - set(ids) - {"OrderCommand"})
        if missing:
            raise SchemaLoadError(f"no schema registry id for {', '.join(missing)}")
        entries: dict[str, _Entry] = {}
        by_id: dict[int, _Reader] = {}
        unions: dict[int, dict[int, str]] = {}
        for name, entry in self._by_name.items():
            cid = ids.get(name)
            if cid is None:
                entries[name] = entry
                continue
            if cid.writer is not None:
                entry = _entry_from_writer(entry, cid.writer)
            header = CONFLUENT_MAGIC.to_bytes(1, "big") + cid.schema_id.to_bytes(4, "big")
            if cid.branch is not None:
                header += _zigzag_varint(cid.branch)
                unions.setdefault(cid.schema_id, {})[cid.branch] = name
            else:
                by_id[cid.schema_id] = _Reader(name, entry.parsed, None)
            entries[name] = replace(entry, header=header)
        for schema_id, branches in unions.items():
            ordered = tuple(branches[i] for i in sorted(branches))
            by_id[schema_id] = _Reader(None, None, None, ordered)
        codec = AvroCodec(entries)
        codec._by_fingerprint = dict(self._by_fingerprint)  # single-object input still reads
        codec._by_id = by_id
        codec._content_type = CONFLUENT_CONTENT_TYPE
        codec._fetch = fetch
        return codec

    @property
    def content_type(self) -> str:
        """The ``content-type`` header of this codec's Avro outputs."""
        return self._content_type

    @property
    def fetcher(self) -> Callable[[int], Awaitable[str]] | None:
        """The fetch function of unknown schema ids given to :meth:`framed` (None: none)."""
        return self._fetch

    @property
    def can_resolve(self) -> bool:
        """True when unknown Confluent schema ids can be fetched (a registry is configured)."""
        return self._fetch is not None

    def schema_text(self, schema_name: str) -> str:
        """The schema as JSON text (what the bridge registers)."""
        return self._entry(schema_name).text

    def knows_id(self, schema_id: int) -> bool:
        return schema_id in self._by_id

    async def resolve(self, schema_id: int) -> None:
        """Fetch the writer schema of ``schema_id`` with the ``fetch`` function given to
        :meth:`framed` and cache it (the fetch function shares one request between concurrent
        callers, :class:`bridge.schema_registry.SchemaFetcher`). Errors of the fetch propagate
        (nothing is cached then)."""
        if schema_id in self._by_id:
            return
        if self._fetch is None:
            raise UnknownSchemaIdError(schema_id)
        text = await self._fetch(schema_id)
        if schema_id not in self._by_id:
            self.learn(schema_id, text)

    def learn(self, schema_id: int, writer_text: str) -> None:
        """Cache the writer schema of ``schema_id``: records of one of the codec's own record
        names are read into that record (schema resolution); others fail to decode."""
        try:
            writer = fastavro.parse_schema(json.loads(writer_text))
        except Exception as exc:
            self._by_id[schema_id] = _Reader(None, None, None)
            raise AvroDecodeError(f"schema id {schema_id} is not a valid Avro schema") from exc
        name = writer.get("name") if isinstance(writer, dict) else None
        short = str(name).rpartition(".")[2] if name else None
        entry = self._by_name.get(short) if short else None
        if entry is None or entry.full_name != name:
            self._by_id[schema_id] = _Reader(None, writer, None)
            return
        self._by_id[schema_id] = _Reader(entry.short_name, writer, entry.parsed)

    @property
    def schema_names(self) -> tuple[str, ...]:
        """Short names of the loaded schemas, sorted."""
        return tuple(sorted(self._by_name))

    def _entry(self, schema_name: str) -> _Entry:
        try:
            return self._by_name[schema_name]
        except KeyError:
            raise UnknownSchemaError(
                f"unknown schema {schema_name!r}; loaded: {', '.join(self.schema_names)}"
            ) from None

    def schema_full_name(self, short: str) -> str:
        """The namespaced name of a loaded schema, e.g. ``com.norce.bridge.v1.OrderSnapshot``."""
        return self._entry(short).full_name

    def fingerprint(self, schema_name: str) -> bytes:
        """The 8-byte little-endian CRC-64-AVRO fingerprint of the schema's canonical form."""
        return self._entry(schema_name).fingerprint

    def canonical_form(self, schema_name: str) -> str:
        """The schema's Parsing Canonical Form (the text the fingerprint is computed from)."""
        return self._entry(schema_name).canonical_form

    def parsed_schema(self, schema_name: str) -> Any:
        """The fastavro-parsed schema, for callers that need fastavro directly."""
        return self._entry(schema_name).parsed

    def tagged(self, schema_name: str, record: Mapping[str, Any]) -> Any:
        """``record`` with its nullable complex unions in fastavro's tuple notation (a copy).

        What :meth:`encode` hands to fastavro; for callers that write with fastavro directly.
        """
        entry = self._entry(schema_name)
        return record if entry.tagger is None else entry.tagger(record)

    def encode(self, schema_name: str, record: Mapping[str, Any]) -> bytes:
        """Encode ``record`` as a single-object message of the schema ``schema_name``.

        Fields with a default may be omitted; keys the schema does not know are an error.
        Raises :class:`UnknownSchemaError` or :class:`AvroEncodeError`.
        """
        entry = self._entry(schema_name)
        buf = BytesIO()
        buf.write(entry.header)
        try:
            if entry.tagger is None or type(record) is TaggedRecord:
                datum = record
            else:
                datum = entry.tagger(record)
            fastavro.schemaless_writer(buf, entry.parsed, datum, strict_allow_default=True)
        except Exception as exc:  # fastavro raises ValueError, TypeError, struct.error, ...
            raise AvroEncodeError(f"cannot encode {schema_name}: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes | bytearray | memoryview) -> tuple[str, dict[str, Any]]:
        """Decode a single-object or Confluent-framed message; returns ``(short name, record)``.

        Raises :class:`AvroDecodeError` when the marker is missing, the fingerprint is not a
        loaded schema, the body is truncated or corrupt, or bytes are left over after it;
        :class:`UnknownSchemaIdError` for a Confluent schema id not seen yet (:meth:`resolve`).
        """
        if self.is_confluent(data):
            return self._decode_confluent(data)
        if len(data) < HEADER_SIZE or data[:2] != MARKER:
            raise AvroDecodeError("not an Avro single-object message (missing C3 01 marker)")
        fp = bytes(data[2:HEADER_SIZE])
        entry = self._by_fingerprint.get(fp)
        if entry is None:
            raise AvroDecodeError(f"unknown schema fingerprint {fp.hex()}")
        buf = BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(buf, entry.parsed, None)
        except Exception as exc:  # EOFError, UnicodeDecodeError, IndexError, ...
            raise AvroDecodeError(f"corrupt {entry.short_name} body: {exc!r}") from exc
        return _whole_record(data, buf, entry.short_name, record)

    def _decode_confluent(self, data: bytes | bytearray | memoryview) -> tuple[str, dict[str, Any]]:
        schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big")
        r = self._by_id.get(schema_id)
        if r is None:
            raise UnknownSchemaIdError(schema_id)
        buf = BytesIO(data)
        buf.seek(CONFLUENT_HEADER_SIZE)
        short, writer, reader = r.short_name, r.writer, r.reader
        try:
            if r.branches:
                index = _read_zigzag_varint(buf)
                if not 0 <= index < len(r.branches):
                    raise AvroDecodeError(f"union branch {index} out of range")
                short = r.branches[index]
                writer = self._by_name[short].parsed
            if short is None or writer is None:
                raise AvroDecodeError(f"schema id {schema_id} is none of the bridge's records")
            record = fastavro.schemaless_reader(buf, writer, reader)
        except AvroDecodeError:
            raise
        except Exception as exc:  # EOFError, UnicodeDecodeError, SchemaResolutionError, ...
            raise AvroDecodeError(f"corrupt {short} body: {exc!r}") from exc
        return _whole_record(data, buf, short, record)

    @staticmethod
    def is_single_object(data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` starts with the single-object marker and a full header."""
        return len(data) >= HEADER_SIZE and data[:2] == MARKER

    def is_confluent(self, data: bytes | bytearray | memoryview) -> bool:
        """True when this codec reads the Confluent framing (:meth:`framed`) and ``data``
        starts with its magic byte and a full header. A codec without a registry reads a
        leading ``00`` as before (not Avro: e.g. UTF-16 text stays ``invalid_json``)."""
        return (
            self._content_type == CONFLUENT_CONTENT_TYPE
            and len(data) >= CONFLUENT_HEADER_SIZE
            and data[0] == CONFLUENT_MAGIC
        )

    @staticmethod
    def confluent_id(data: bytes | bytearray | memoryview) -> int | None:
        """The schema id of a Confluent-framed message, None for other bytes."""
        if len(data) >= CONFLUENT_HEADER_SIZE and data[0] == CONFLUENT_MAGIC:
            return int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big")
        return None


def _zigzag_varint(n: int) -> bytes:
    """An Avro ``long`` (zig-zag, then base-128 varint): a union's branch index."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _read_zigzag_varint(buf: BytesIO) -> int:
    shift = 0
    z = 0
    while True:
        b = buf.read(1)
        if not b:
            raise AvroDecodeError("truncated union branch index")
        z |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return (z >> 1) ^ -(z & 1)
        shift += 7
        if shift > 63:
            raise AvroDecodeError("bad union branch index")


def _whole_record(
    data: bytes | bytearray | memoryview, buf: BytesIO, short: str, record: Any
) -> tuple[str, dict[str, Any]]:
    """A decoded body that used every byte of the message and is a record (both framings)."""
    left = len(data) - buf.tell()
    if left:
        raise AvroDecodeError(f"{left} trailing bytes after the {short} body")
    if not isinstance(record, dict):  # pragma: no cover - every schema is a record
        raise AvroDecodeError(f"{short} body is not a record")
    return short, record


def _entry_from_writer(entry: _Entry, writer_text: str) -> _Entry:
    """``entry`` writing with a registered schema (use.latest): the record of the same full
    name, alone or in a union. Raises SchemaLoadError when there is none."""
    try:
        parsed = fastavro.parse_schema(json.loads(writer_text))
    except Exception as exc:
        raise SchemaLoadError(f"{entry.short_name}: registered schema is not valid Avro") from exc
    candidates = parsed if isinstance(parsed, list) else [parsed]
    for candidate in candidates:
        if isinstance(candidate, dict) and candidate.get("name") == entry.full_name:
            canonical = fastavro.schema.to_parsing_canonical_form(candidate)
            return replace(
                entry,
                parsed=candidate,
                tagger=_compile_tagger(candidate),
                canonical_form=canonical,
                text=writer_text,
            )
    raise SchemaLoadError(
        f"the registered schema of {entry.short_name} has no record {entry.full_name}"
    )


def packaged_schemas() -> Traversable:
    """The schema directory shipped inside the ``bridge`` package (``bridge/schemas``)."""
    return resources.files("bridge").joinpath("schemas")


def _load_one(path: Path | Traversable) -> _Entry:
    stem = path.name.removesuffix(".avsc")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaLoadError(f"{path}: cannot read schema JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise SchemaLoadError(f"{path}: top-level schema must be a named record")
    try:
        parsed = fastavro.parse_schema(raw)
        canonical = fastavro.schema.to_parsing_canonical_form(parsed)
        fp = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    except Exception as exc:  # SchemaParseException, UnknownType, ValueError, ...
        raise SchemaLoadError(f"{path}: invalid Avro schema: {exc}") from exc
    if not isinstance(parsed, dict):  # pragma: no cover - a record always parses to a dict
        raise SchemaLoadError(f"{path}: top-level schema must be a named record")
    full_name = str(parsed["name"])
    short_name = full_name.rpartition(".")[2]
    if short_name != stem:
        raise SchemaLoadError(f"{path}: record is named {short_name!r}, expected {stem!r}")
    if len(fp) != FINGERPRINT_SIZE:  # pragma: no cover - CRC-64 is always 8 bytes
        raise SchemaLoadError(f"{path}: unexpected fingerprint length {len(fp)}")
    return _Entry(
        short_name=short_name,
        full_name=full_name,
        parsed=parsed,
        tagger=_compile_tagger(parsed),
        canonical_form=canonical,
        fingerprint=fp,
        header=MARKER + fp,
        text=json.dumps(raw, separators=(",", ":")),
    )


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_Tagger = Callable[[Any], Any]


def _compile_tagger(schema: Any) -> _Tagger | None:
    """Build a function that tags values of nullable complex unions for fastavro.

    It returns a copy of a record in which every value of a ``["null", X]`` union, where X is a
    record or array, becomes ``(name of X, value)``. None means the schema needs no tagging.
    Other unions stay untagged; fastavro resolves them itself. Named types that refer back to
    themselves (Item.items) are looked up when the function runs.
    """
    by_name: dict[str, _Tagger | None] = {}

    def named_ref(name: str) -> _Tagger:
        def tag(value: Any) -> Any:
            inner = by_name.get(name)
            return value if inner is None else inner(value)

        return tag

    def compile_union(branches: list[Any]) -> _Tagger | None:
        others = [b for b in branches if b != "null"]
        if len(branches) != 2 or len(others) != 1:
            return None
        branch = others[0]
        if isinstance(branch, str):
            if branch in _PRIMITIVES:
                return None
            name = branch
        else:
            kind = branch["type"]
            if kind in _PRIMITIVES:
                return None
            name = branch["name"] if kind in _NAMED else kind
        inner = compile_type(branch)

        def tag(value: Any) -> Any:
            if value is None:
                return None
            return (name, value if inner is None else inner(value))

        return tag

    def compile_record(schema: dict[str, Any]) -> _Tagger | None:
        by_name[schema["name"]] = None  # placeholder while the fields compile (recursion)
        fields: list[tuple[str, _Tagger]] = []
        for field in schema["fields"]:
            tag = compile_type(field["type"])
            if tag is not None:
                fields.append((field["name"], tag))
        if not fields:
            return None

        def tag_record(value: Any) -> Any:
            out = dict(value)
            for name, tag in fields:
                if name in out:
                    out[name] = tag(out[name])
            return out

        by_name[schema["name"]] = tag_record
        return tag_record

    def compile_type(schema: Any) -> _Tagger | None:
        if isinstance(schema, str):
            return None if schema in _PRIMITIVES else named_ref(schema)
        if isinstance(schema, list):
            return compile_union(schema)
        kind = schema["type"]
        if kind == "record" or kind == "error":
            return compile_record(schema)
        if kind == "array":
            items = compile_type(schema["items"])
            return None if items is None else (lambda value: [items(v) for v in value])
        if kind == "map":
            values = compile_type(schema["values"])
            if values is None:
                return None
            return lambda value: {k: values(v) for k, v in value.items()}
        return None  # primitives (possibly with a logical type), enums, fixed

    return compile_type(schema)
