"""The `choreo` command line: commands, terminal rendering, the demo and the local stack."""

from ._app import app, main

__all__ = ["app", "main"]
