"""`choreo`'s entry point: the command line's errors as one line on stderr and an exit status."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from ..errors import ConfigurationError
from ._app import app
from ._input import INTERRUPTED, debugging, err, exit_code, one_line


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
        app()
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except Exception as exc:
        if debugging():
            raise
        err(one_line(exc))
        sys.exit(exit_code(exc))
