"""Validating an AsyncAPI 3.0.0 document against the official JSON schema, vendored in tests/data/asyncapi."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator  # type: ignore[import-untyped]  # no stubs (types-jsonschema)

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "asyncapi" / "3.0.0.json"


@functools.cache
def validator() -> Draft7Validator:
    """The schema's validator; its $refs all point inside the file (definitions keyed by $id): no network."""
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema"
    return Draft7Validator(schema)


def problems(document: Any) -> list[str]:
    """Why `document` is not a valid AsyncAPI 3.0.0 document: one line per error (none: it is)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator().iter_errors(document)]


def message_types(document: dict[str, Any]) -> set[str]:
    """The event types (ce_type) the document's events channel carries."""
    components = document["components"]["messages"]
    refs = document["channels"]["events"]["messages"].values()
    return {components[r["$ref"].rsplit("/", 1)[1]]["title"] for r in refs}
