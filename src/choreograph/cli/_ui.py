"""`choreo ui`: the live web view (choreograph.ui), with the `ui` extra (starlette, uvicorn)."""

from __future__ import annotations

import importlib.util
from typing import Annotated

import typer

from ..transport._settings import check_env, run_dir
from ._config import cli_settings
from ._input import USAGE, fail

# What `choreo ui` needs beyond the library (the `ui` extra); looked for, not imported, so a
# command line without them starts as fast as ever (tests/e2e/test_import_cost.py).
NEEDS = ("starlette", "uvicorn")


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or half-removed install counts as missing
        return False


def ui(
    port: Annotated[int, typer.Option(min=0, max=65535, help="the port to listen on")] = 8765,
    host: Annotated[str, typer.Option(help="the address to listen on (loopback unless told; 0.0.0.0 shows it "
                                           "to the network, with its cancel button)")] = "127.0.0.1",
) -> None:
    """A live web view of workflows, steps, agents and dead letters, with cancel; prints its URL, Ctrl-C stops it.

    Pages: workflows (filters, counts by status, live updates), one workflow (step graph, timeline,
    events, dead letters, trace id, cancel), agents (contracts, live instances, lag), dead letters.
    """
    missing = [name for name in NEEDS if not _installed(name)]
    if missing:
        raise fail(f"choreo ui needs {' and '.join(missing)}: pip install 'choreograph[ui]'", USAGE)
    check_env()
    from ..ui import serve  # deferred: starlette and uvicorn load only for this command

    serve(cli_settings(), run_dir(), host=host, port=port)
