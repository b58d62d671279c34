"""`choreo asyncapi`: the AsyncAPI 3.0.0 document of the events, from what agents announced.

YAML is written here, by hand, for the JSON data of the document: PyYAML is not a runtime
dependency, and the document holds only mappings, lists, strings, numbers, booleans and null.
Every string value is written double-quoted with JSON's escapes (a YAML double-quoted scalar reads
them the same), so no value can be mistaken for another type.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
import typer

from ._agents import run
from ._config import cli_settings

_PLAIN_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_.$-]*$")
# Plain words YAML 1.1 readers (PyYAML among them) take for booleans or null.
_RESERVED = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def to_yaml(data: Any) -> str:
    """`data` (JSON data) as block-style YAML text that any YAML reader loads back equal."""
    return "\n".join(_lines(data, 0)) + "\n"


def _key(key: str) -> str:
    return key if _PLAIN_KEY.match(key) and key.lower() not in _RESERVED else orjson.dumps(key).decode()


def _lines(data: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(data, dict) and data:
        out = []
        for key, value in data.items():
            if isinstance(value, dict | list) and value:
                out.append(f"{pad}{_key(key)}:")
                out.extend(_lines(value, indent + 2))
            else:
                out.append(f"{pad}{_key(key)}: {_scalar(value)}")
        return out
    if isinstance(data, list) and data:
        out = []
        for item in data:
            nested = _lines(item, indent + 2)
            out.append(f"{pad}- {nested[0][indent + 2:]}")
            out.extend(nested[1:])
        return out
    return [pad + _scalar(data)]


def _scalar(value: Any) -> str:
    """A scalar, or an empty mapping or list, as JSON text (valid YAML flow style)."""
    return orjson.dumps(value).decode()


def asyncapi(
    workflow: Annotated[str | None, typer.Option(help="only this workflow's steps and event types")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML")] = False,
) -> None:
    """Print the AsyncAPI 3.0.0 document of the events topic, from the contracts agents announced.

    One message per event type (its Avro schema as the payload, the CloudEvents headers, the workflow
    id as the Kafka key), a receive and a send operation per step. Exit 1 if --workflow names a
    workflow none of whose steps is announced.
    """
    from ..timetravel._asyncapi import asyncapi_report

    document = run(asyncapi_report(cli_settings(), workflow=workflow))
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() if as_json else to_yaml(document), end="")
    if as_json:
        print()
