"""The shape of an ``OrderSnapshot``, derived from the one description of the Order.

``bridge.order_model`` (the pydantic ``Order``) is the single description of the Order's
shape: its classes, camelCase field names, nesting and value types. :data:`ORDER_SPEC` is
derived from it once, at import: one :class:`ObjectSpec` per model class (same name as the
class and as the Avro record in ``OrderSnapshot.avsc``), one :data:`Kind` per field:

==========================================  =====================================
model annotation (``X | None``)             snapshot kind (Avro type)
==========================================  =====================================
``str``, ``Timestamp``, ``OrderStatus``     ``"string"`` (values kept as sent)
``int``                                     ``"int"``
``Number`` (``int | float``)                ``"double"``
``bool``                                    ``"boolean"``
``Attributes`` (``dict[str, Any]``)         ``"attributes"`` (JSON object text)
``list[X]``                                 :class:`ArraySpec` of X's kind
a model class                               its :class:`ObjectSpec` (a record)
==========================================  =====================================

The only exception is :data:`KIND_OVERRIDES` (``Notification.schema`` is any JSON value). A
unit test checks ``OrderSnapshot.avsc`` against :data:`ORDER_SPEC` field by field, in both
directions, so a field added to the model fails the build until the schema has it too.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal, TypeAlias, Union

from pydantic import BaseModel

from bridge.order_model import Order

__all__ = [
    "KIND_OVERRIDES",
    "ORDER_REQUIRED",
    "ORDER_SPEC",
    "ArraySpec",
    "Kind",
    "ObjectSpec",
    "Scalar",
    "derive_spec",
]

Scalar: TypeAlias = Literal["string", "int", "double", "boolean", "attributes", "json"]


class ObjectSpec:
    """The documented keys of one API object (an Avro record) and the kind of each value."""

    __slots__ = ("fields", "name")

    def __init__(self, name: str, fields: dict[str, Kind]) -> None:
        self.name = name
        self.fields = fields  # filled while deriving: Item.items refers to Item itself

    def __repr__(self) -> str:
        return f"ObjectSpec({self.name!r}, {list(self.fields)!r})"


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """A JSON array (Avro array) whose items all have one kind."""

    items: Kind


Kind: TypeAlias = "Scalar | ObjectSpec | ArraySpec"

KIND_OVERRIDES: Final[dict[tuple[str, str], Scalar]] = {("Notification", "schema"): "json"}
"""(class, JSON key) -> kind, where the model's type alone does not say it."""

ORDER_REQUIRED: Final = ("id", "merchant", "channel")
"""Order keys a snapshot cannot be written without (non-null in the Avro schema)."""


def _without_none(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _kind(annotation: Any, where: str, done: dict[type[BaseModel], ObjectSpec]) -> Kind:
    options = _without_none(annotation)
    if set(options) == {int, float}:
        return "double"
    if len(options) != 1:
        raise TypeError(f"{where}: no snapshot kind for {annotation!r}")
    (tp,) = options
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        return ArraySpec(_kind(item, f"{where}[]", done))
    if origin is dict:
        return "attributes"
    if tp is bool:
        return "boolean"
    if tp is int:
        return "int"
    if tp is float:
        return "double"
    if tp is str or (isinstance(tp, type) and issubclass(tp, StrEnum)):
        return "string"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return derive_spec(tp, done)
    raise TypeError(f"{where}: no snapshot kind for {annotation!r}")


def derive_spec(
    model: type[BaseModel], done: dict[type[BaseModel], ObjectSpec] | None = None
) -> ObjectSpec:
    """The :class:`ObjectSpec` of ``model``, keyed by each field's JSON name (its alias)."""
    done = {} if done is None else done
    if model in done:
        return done[model]
    spec = ObjectSpec(model.__name__, {})
    done[model] = spec
    for name, field in model.model_fields.items():
        key = field.alias or name
        override = KIND_OVERRIDES.get((model.__name__, key))
        spec.fields[key] = (
            override
            if override is not None
            else _kind(field.annotation, f"{model.__name__}.{key}", done)
        )
    return spec


ORDER_SPEC: Final = derive_spec(Order)
"""The snapshot shape of the whole Order."""
