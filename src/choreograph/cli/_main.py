"""`choreo`'s entry point: the command line's errors as one line on stderr and an exit status."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import typer

from ..errors import ConfigurationError
from ._app import app
from ._input import INTERRUPTED, USAGE, debugging, err, exit_code, one_line


def _usage_error(exc: BaseException) -> bool:
    """Whether `exc` is a usage error of the command line's parser (bad option, missing argument, bad value).

    By class name: typer 0.29 vendors click (`typer._click`), earlier versions raise click's own.
    """
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


def _usage_line(exc: BaseException) -> str:
    """A usage error as one line, naming the command's --help.

    Typer (its click, and rich) would print a usage block and a framed error over several lines.
    """
    format_message = getattr(exc, "format_message", None)
    text = " ".join((format_message() if callable(format_message) else str(exc)).split())
    context = getattr(exc, "ctx", None)
    names = []
    while context is not None and context.parent is not None:  # the root's name is how it was run
        names.append(context.info_name)
        context = context.parent
    return f"{text} (see `{' '.join(['choreo', *reversed(names), '--help'])}`)"


def _project_defaults() -> None:
    """The project file's namespace and broker, for every command run in the project (the environment wins).

    A project file that cannot be read is left for `choreo up` to report: other commands work without it.
    """
    from ..runtime._project import apply_defaults, find_project  # deferred: --help and completion stay fast

    with contextlib.suppress(ConfigurationError):
        apply_defaults(find_project())


def main() -> None:
    """Run the `choreo` command line: every error is one line on stderr and an exit status (cli._input).

    `--debug` (anywhere on the command line) or CHOREO_DEBUG=1 lets the traceback through instead.
    """
    if "--debug" in sys.argv[1:]:
        sys.argv = [arg for arg in sys.argv if arg != "--debug"]
        os.environ["CHOREO_DEBUG"] = "1"
    if not debugging():
        # aiokafka logs each failed connection attempt at ERROR: the command's own error line says it once.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        _project_defaults()
        # Not standalone: click's own errors reach us, to be printed as one line like every other.
        status = app(standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(INTERRUPTED)
    except Exception as exc:
        if _usage_error(exc):
            err(_usage_line(exc))
            sys.exit(getattr(exc, "exit_code", USAGE) or USAGE)
        if debugging():
            raise
        err(one_line(exc))
        sys.exit(exit_code(exc))
    # A command's typer.Exit(code) or --help/--version's exit arrives as its status; a command's
    # own return value (None) means success.
    sys.exit(status if isinstance(status, int) else 0)
