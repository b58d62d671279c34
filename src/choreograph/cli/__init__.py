"""The `choreo` command line: commands, terminal rendering, the demo and the local stack."""

from ._app import app
from ._main import main

__all__ = ["app", "main"]
