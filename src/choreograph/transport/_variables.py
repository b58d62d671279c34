"""Reading environment variables the one way every setting does (shared by `_settings` and `_kafka_security`)."""

from __future__ import annotations

import os


def shown(value: str) -> str:
    """A variable's value as an error line quotes it: its repr, cut short if long (still one line)."""
    return repr(value) if len(value) <= 60 else f"{value[:60]!r}... ({len(value)} characters)"


def env(name: str) -> str | None:
    """The variable's value; None when unset or empty (an empty variable means the default)."""
    return os.environ.get(name) or None
