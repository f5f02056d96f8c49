"""The snapshot mapping's compiled fast path (see :mod:`bridge.snapshot`).

Straight-line converters generated at import from the same specification
(:mod:`bridge.snapshot_spec`) as the generic walk; they build no JSON paths, check types exactly,
and on anything unexpected give up (``Mismatch``) so that the generic walk runs instead: results
and error messages stay the walk's. The tagged variant builds fastavro's union tags while mapping
(:class:`TaggedRecord`), so the codec needs no second pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeAlias

from bridge.snapshot_json import INT32_MAX, INT32_MIN, dumps
from bridge.snapshot_spec import ORDER_SPEC, ArraySpec, Kind, ObjectSpec

__all__ = ["FAST_ORDER", "FAST_ORDER_TAGGED", "SNAPSHOT_NAMESPACE", "Mismatch", "TaggedRecord"]

# Compiled fast path. The generic walk above builds a JSON path string for every field so that
# errors can name it; that is most of its cost. The converters below are compiled once from the
# same specification, build no paths and check types exactly; on anything unexpected they give
# up (``Mismatch``) and the generic walk runs instead, so results and error messages are the
# generic walk's, only faster on well-formed orders.


class Mismatch(Exception):
    """The fast path met something it does not handle; use the generic walk."""


_MISMATCH = Mismatch()
_FastConv: TypeAlias = Callable[[Any], Any]


def _fast_string(v: Any) -> Any:
    if type(v) is str:
        return v
    raise _MISMATCH


def _fast_int(v: Any) -> Any:
    if type(v) is int and INT32_MIN <= v <= INT32_MAX:
        return v
    raise _MISMATCH


def _fast_double(v: Any) -> Any:
    if type(v) is float and v - v == 0.0:  # finite
        return v
    if type(v) is int and -(2**53) <= v <= 2**53:
        return float(v)
    raise _MISMATCH


def _fast_boolean(v: Any) -> Any:
    if type(v) is bool:
        return v
    raise _MISMATCH


def _fast_attributes(v: Any) -> Any:
    if type(v) is dict:
        return dumps(v, "")
    raise _MISMATCH


def _fast_json(v: Any) -> Any:
    return dumps(v, "")


_FAST_SCALARS: Final[dict[str, _FastConv]] = {
    "string": _fast_string,
    "int": _fast_int,
    "double": _fast_double,
    "boolean": _fast_boolean,
    "attributes": _fast_attributes,
    "json": _fast_json,
}


SNAPSHOT_NAMESPACE: Final = "com.norce.bridge.v1"
"""Avro namespace of ``OrderSnapshot`` and its records (their names are the spec's names)."""


class TaggedRecord(dict[str, Any]):
    """A snapshot record whose ``["null", record]`` and ``["null", array]`` union values are
    already in fastavro's tuple notation (``(full name or "array", value)``).

    ``bridge.codec.AvroCodec.encode`` writes it as it is instead of tagging a copy first. Only
    for encoding: read the untagged record of :func:`snapshot_from_order` instead.
    """

    __slots__ = ()


def _union_tag(kind: Kind) -> str | None:
    """The fastavro branch name of a non-null value of ``kind`` (None: scalar, not tagged)."""
    if isinstance(kind, ObjectSpec):
        return f"{SNAPSHOT_NAMESPACE}.{kind.name}"
    if isinstance(kind, ArraySpec):
        return "array"
    return None


def _compile_fast(kind: Kind, record: Callable[[ObjectSpec], _FastConv]) -> _FastConv:
    """The converter of a scalar or array ``kind``; ``record`` gives that of a record type."""
    if isinstance(kind, ObjectSpec):
        return record(kind)
    if isinstance(kind, ArraySpec):
        item = _compile_fast(kind.items, record)

        def conv_array(v: Any) -> Any:
            if type(v) is not list:
                raise _MISMATCH
            return [item(x) for x in v]

        return conv_array
    return _FAST_SCALARS[kind]


# Generated converters: one function per record type, written out as straight-line code (one
# local per field, scalar checks inline; a loop over the fields with a call per field cost half
# again as much), generated once at import from the spec. The fast-path equality test and the
# byte-equality tests in tests/unit/test_events.py hold them to the generic walk.

_INLINE_CHECKS: Final[dict[str, str]] = {
    "string": "if type(x) is not str: raise _MISMATCH",
    "int": "if type(x) is not int or not (_INT32_MIN <= x <= _INT32_MAX): raise _MISMATCH",
    "boolean": "if type(x) is not bool: raise _MISMATCH",
}


def _generate_fast(root: ObjectSpec, *, tagged: bool) -> _FastConv:
    """Generate the converter functions of ``root`` and every record type under it."""
    names: dict[int, str] = {}
    specs: list[ObjectSpec] = []
    namespace: dict[str, Any] = {
        "_MISMATCH": _MISMATCH,
        "_INT32_MIN": INT32_MIN,
        "_INT32_MAX": INT32_MAX,
        "dumps": dumps,
    }

    def name_of(spec: ObjectSpec) -> str:
        if id(spec) not in names:
            names[id(spec)] = f"conv_{len(names)}_{spec.name}"
            specs.append(spec)
        return names[id(spec)]

    def late(spec: ObjectSpec) -> _FastConv:
        name = name_of(spec)
        return lambda v: namespace[name](v)

    def value_expr(kind: Kind) -> tuple[list[str], str]:
        """Statements checking a field's value ``x`` and the expression of its converted value."""
        if isinstance(kind, ObjectSpec):
            return [], f"{name_of(kind)}(x)"
        if isinstance(kind, ArraySpec):
            if isinstance(kind.items, ObjectSpec):
                item = f"{name_of(kind.items)}(y)"
            else:  # scalars (or nested arrays): the functions above
                conv = f"_item_{len(namespace)}"
                namespace[conv] = _compile_fast(kind.items, late)
                item = f"{conv}(y)"
            return ["if type(x) is not list: raise _MISMATCH"], f"[{item} for y in x]"
        if kind in _INLINE_CHECKS:
            return [_INLINE_CHECKS[kind]], "x"
        if kind == "double":  # _fast_double, inline
            return [
                "if type(x) is float:",
                "    if x - x != 0.0: raise _MISMATCH",
                "elif type(x) is int and -(2**53) <= x <= 2**53: x = float(x)",
                "else: raise _MISMATCH",
            ], "x"
        conv = f"_scalar_{kind}"
        namespace[conv] = _FAST_SCALARS[kind]
        return [], f"{conv}(x)"

    def generate(spec: ObjectSpec) -> str:
        known = f"_known_{name_of(spec)}"
        namespace[known] = frozenset(spec.fields)
        lines = [
            f"def {name_of(spec)}(v):",
            "    if type(v) is not dict: raise _MISMATCH",
            "    extra = None",
            "    present = 0",
        ]
        fields = []
        for i, (key, kind) in enumerate(spec.fields.items()):
            k = repr(key)
            checks, expr = value_expr(kind)
            tag = _union_tag(kind) if tagged else None
            if tag is not None:
                expr = f"({tag!r}, {expr})"
            lines += [
                f"    x = v.get({k})",
                "    if x is None:",
                f"        r{i} = None",
                f"        if {k} in v:",
                "            present += 1",
                "            if extra is None: extra = {}",
                f"            extra[{k}] = None",
                "    else:",
                "        present += 1",
                *(f"        {c}" for c in checks),
                f"        r{i} = {expr}",
            ]
            fields.append(f"{k}: r{i}")
        lines += [
            "    if len(v) > present:",
            "        for key in v:",
            f"            if key not in {known}:",
            "                if type(key) is not str: raise _MISMATCH",
            "                if extra is None: extra = {}",
            "                extra[key] = v[key]",
            f"    return {{{', '.join(fields)}, 'extra': dumps(extra, '') if extra else None}}",
        ]
        return "\n".join(lines)

    root_name = name_of(root)
    done = 0
    while done < len(specs):  # generating a record type may name others
        source = generate(specs[done])
        exec(compile(source, f"<snapshot converter {specs[done].name}>", "exec"), namespace)  # noqa: S102
        done += 1
    conv: _FastConv = namespace[root_name]
    return conv


FAST_ORDER: Final = _generate_fast(ORDER_SPEC, tagged=False)
FAST_ORDER_TAGGED: Final = _generate_fast(ORDER_SPEC, tagged=True)
