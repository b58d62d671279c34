"""Sensitive fields: marked in the Avro schema, kept in the log, redacted wherever choreograph shows a payload.

    {"name": "card_number", "type": "string", "sensitive": true}

A field with `"sensitive": true` (a custom attribute: Avro ignores it, and the schema's parsing
canonical form, hence its fingerprint, drops it, so marking a field changes no schema id) is written
to the log as any other field: the log is the record of what happened, and recordings, archives and
replays keep its bytes. What shows payloads shows REDACTED in its place instead: `choreo history`
(table and --json), `choreo dlq show`, the repr of an event (so `log.info("%s", event)` is safe) and
the validation errors of one. `redact(schema, record)` is the one function they call.

The mark works at any depth: a field of a nested record, of the records of an array or a map, or of
a union's record branch. A marked field's whole value is replaced (a record, an array, a number
alike); a null stays null (it says the value is absent, not what it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import DecodeError
from ._avro import AvroSchema, SchemaStore

REDACTED = "[redacted]"
"""What a sensitive field's value is shown as."""

_NAMED_LEAVES = ("enum", "fixed")


class _Hide:
    """A sensitive field's value: replaced."""

    __slots__ = ()

    def apply(self, value: Any) -> Any:
        return None if value is None else REDACTED


class _Record:
    """A record holding sensitive fields (or records that do): field name -> what to do with its value."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: dict[str, _Plan] = {}

    def apply(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = dict(value)
        for name, plan in self.fields.items():
            if name in out:
                out[name] = plan.apply(out[name])
        return out


class _Items:
    """An array whose items hold sensitive fields."""

    __slots__ = ("plan",)

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan

    def apply(self, value: Any) -> Any:
        return [self.plan.apply(v) for v in value] if isinstance(value, (list, tuple)) else value


class _Values:
    """A map whose values hold sensitive fields."""

    __slots__ = ("plan",)

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan

    def apply(self, value: Any) -> Any:
        return {k: self.plan.apply(v) for k, v in value.items()} if isinstance(value, dict) else value


class _Union:
    """A union with branches holding sensitive fields.

    A decoded value does not say its branch, so each branch's plan is applied in turn (a plan leaves
    a value of another shape alone).
    """

    __slots__ = ("plans",)

    def __init__(self, plans: list[_Plan]) -> None:
        self.plans = plans

    def apply(self, value: Any) -> Any:
        for plan in self.plans:
            value = plan.apply(value)
        return value


_Plan = _Hide | _Record | _Items | _Values | _Union
_HIDE = _Hide()
_PLANS: dict[int, tuple[AvroSchema, _Record | None]] = {}  # by id; the schema is held so its id stays its own


def _full(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _compile(avro: Any, namespace: str | None, named: dict[str, _Plan | None]) -> _Plan | None:
    """What redacting a value of type `avro` takes; None when it holds nothing sensitive."""
    if isinstance(avro, list):
        plans = [p for branch in avro if (p := _compile(branch, namespace, named)) is not None]
        return None if not plans else plans[0] if len(plans) == 1 else _Union(plans)
    if isinstance(avro, str):
        return named.get(_full(avro, namespace), named.get(avro))  # a primitive is never named
    if not isinstance(avro, Mapping):
        return None
    kind = avro.get("type")
    if kind in ("record", "error"):
        ns = avro.get("namespace", namespace)
        full = _full(str(avro.get("name")), ns)
        record = _Record()
        named[full] = record  # before its fields: a recursive record refers to itself
        for field in avro.get("fields") or ():
            if field.get("sensitive") is True:
                record.fields[field["name"]] = _HIDE
            elif (plan := _compile(field.get("type"), full.rpartition(".")[0] or None, named)) is not None:
                record.fields[field["name"]] = plan
        if not record.fields:
            named[full] = None
            return None
        return record
    if kind == "array":
        return None if (plan := _compile(avro.get("items"), namespace, named)) is None else _Items(plan)
    if kind == "map":
        return None if (plan := _compile(avro.get("values"), namespace, named)) is None else _Values(plan)
    if kind in _NAMED_LEAVES:
        named[_full(str(avro.get("name")), avro.get("namespace", namespace))] = None
        return None
    return _compile(kind, namespace, named)  # {"type": "string"}, a logical type, a nested type


def _hides(plan: _Plan, seen: set[int]) -> bool:
    """Whether `plan` hides anything (a recursive record without a mark refers to itself, hiding nothing)."""
    if isinstance(plan, _Hide):
        return True
    if id(plan) in seen:
        return False
    seen.add(id(plan))
    if isinstance(plan, _Record):
        return any(_hides(p, seen) for p in plan.fields.values())
    if isinstance(plan, _Union):
        return any(_hides(p, seen) for p in plan.plans)
    return _hides(plan.plan, seen)


def _compiled(source: Mapping[str, Any]) -> _Record | None:
    plan = _compile(source, source.get("namespace"), {})
    return plan if isinstance(plan, _Record) and _hides(plan, set()) else None


def _plan(schema: AvroSchema | Mapping[str, Any]) -> _Record | None:
    if not isinstance(schema, AvroSchema):
        return _compiled(schema)
    known = _PLANS.get(id(schema))
    if known is None or known[0] is not schema:
        known = _PLANS[id(schema)] = (schema, _compiled(schema.source))
    return known[1]


def has_sensitive(schema: AvroSchema | Mapping[str, Any]) -> bool:
    """Whether the record schema marks any field sensitive, at any depth."""
    return _plan(schema) is not None


def redact(schema: AvroSchema | Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` (decoded with `schema`) with the value of every field the schema marks sensitive replaced.

    Args:
        schema: The record's schema: parsed (its plan is computed once) or as JSON data.
        record: The decoded record: field name -> value (nested records as dicts).

    Returns:
        A copy with REDACTED for each marked field's value at any depth (None stays None); the record
        itself when the schema marks nothing (a dict, not to be changed).
    """
    plan = _plan(schema)
    if plan is None:
        return record if isinstance(record, dict) else dict(record)
    redacted: dict[str, Any] = plan.apply(dict(record))
    return redacted


def payload_has_sensitive(store: SchemaStore, payload: bytes) -> bool:
    """Whether the payload's writer schema (in any variant the store knows) marks a field sensitive.

    What shows a payload's raw bytes (a dead letter's preview) hides them when this is true.
    """
    try:
        writer = store.writer_of(payload)
    except DecodeError:
        return False
    return any(has_sensitive(s) for s in (writer, *store.variants(writer.fingerprint)))


def redact_payload(store: SchemaStore, payload: bytes, record: Mapping[str, Any]) -> dict[str, Any]:
    """`record`, decoded from `payload`, redacted per every schema the store knows with the payload's fingerprint.

    Marking a field changes no fingerprint, so the store may hold the same schema with and without
    the mark (a contract announced again after the mark was added): a field marked in any is redacted.
    A payload whose writer schema is unknown is returned as it is.
    """
    try:
        writer = store.writer_of(payload)
    except DecodeError:  # no header, an unknown schema: nothing says what is sensitive
        return record if isinstance(record, dict) else dict(record)
    redacted = redact(writer, record)
    for variant in store.variants(writer.fingerprint):
        redacted = redact(variant, redacted)
    return redacted
