"""Drift check: does a pydantic model mirror its Avro record schema (names, types, optionality)?"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

_PRIMITIVE = {"string": "string", "boolean": "boolean", "bytes": "bytes", "int": "long",
              "long": "long", "float": "double", "double": "double", "null": "null"}
_PYTHON = {str: "string", bool: "boolean", bytes: "bytes", int: "long", float: "double"}


def _from_avro(avro: Any, named: dict[str, Any], namespace: str | None) -> Any:
    """Normalise an Avro type so that compatible spellings compare equal (int/long, float/double)."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(avro) == 2 and len(branches) == 1:
            return ("optional", _from_avro(branches[0], named, namespace))
        return ("union", tuple(_from_avro(b, named, namespace) for b in avro))
    if isinstance(avro, str):
        if avro in _PRIMITIVE:
            return _PRIMITIVE[avro]
        full = avro if "." in avro or namespace is None else f"{namespace}.{avro}"
        return named.get(full, named.get(avro, ("unresolved", avro)))
    kind = avro["type"]
    if kind == "array":
        return ("array", _from_avro(avro["items"], named, namespace))
    if kind == "map":
        return ("map", _from_avro(avro["values"], named, namespace))
    if kind == "enum":
        result: Any = ("enum", tuple(avro["symbols"]))
    elif kind == "record":
        ns = avro.get("namespace", namespace)
        result = ("record", tuple(sorted(
            (f["name"], _from_avro(f["type"], named, ns), "default" in f) for f in avro["fields"])))
    else:
        return _from_avro(kind, named, namespace)
    ns = avro.get("namespace", namespace)
    full = avro["name"] if "." in avro["name"] or ns is None else f"{ns}.{avro['name']}"
    named[full] = named[avro["name"]] = result
    return result


def _from_python(annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        branches = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(branches) == 1:
            return ("optional", _from_python(branches[0]))
        return ("union", tuple(_from_python(a) for a in args))
    if origin is list:
        return ("array", _from_python(get_args(annotation)[0]))
    if origin is dict:
        return ("map", _from_python(get_args(annotation)[1]))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return ("enum", tuple(m.value for m in annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("record", tuple(sorted(
            (name, _from_python(f.annotation), not f.is_required())
            for name, f in annotation.model_fields.items())))
    if annotation is type(None):
        return "null"
    if annotation in _PYTHON:
        return _PYTHON[annotation]
    return ("unsupported", repr(annotation))


def drift(model: type[BaseModel], schema: Mapping[str, Any]) -> list[str]:
    """Differences between a model and its record schema; empty when they agree."""
    expected = _from_avro(dict(schema), {}, schema.get("namespace"))
    actual = _from_python(model)
    problems: list[str] = []
    avro_fields = {name: (t, d) for name, t, d in expected[1]}
    model_fields = {name: (t, d) for name, t, d in actual[1]}
    for name in sorted(avro_fields.keys() - model_fields.keys()):
        problems.append(f"field {name!r} is in the schema but not the model")
    for name in sorted(model_fields.keys() - avro_fields.keys()):
        problems.append(f"field {name!r} is in the model but not the schema")
    for name in sorted(avro_fields.keys() & model_fields.keys()):
        (a_type, a_default), (m_type, m_default) = avro_fields[name], model_fields[name]
        if a_type != m_type:
            problems.append(f"field {name!r}: schema type {a_type} != model type {m_type}")
        elif a_default != m_default:
            problems.append(f"field {name!r}: default in schema={a_default}, in model={m_default}")
    return problems
