"""HTML by template: every value is escaped unless it is already `Markup` (HTML this package made).

Events carry whatever their publishers wrote (tests/unit/test_fuzz_records.py sends hostile ones):
no value reaches a page without html.escape, and pages are built from templates, never by
concatenating raw data.
"""

from __future__ import annotations

import html
from collections.abc import Iterable


class Markup(str):
    """Text that is HTML already (a rendered template): inserted as it is."""

    __slots__ = ()


def escape(value: object) -> Markup:
    """`value` as HTML: Markup as it is, anything else as escaped text (quotes too, for attributes)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def render(template: str, /, **values: object) -> Markup:
    """The template with each `{name}` replaced by its value, escaped (see escape).

    Args:
        template: HTML with `{name}` fields (format syntax; literal braces doubled).
        **values: The fields' values.

    Returns:
        The HTML.
    """
    return Markup(template.format_map({name: escape(value) for name, value in values.items()}))


def join(parts: Iterable[object], separator: str = "") -> Markup:
    """The parts, each escaped (see escape), one after the other."""
    return Markup(separator.join(escape(part) for part in parts))
