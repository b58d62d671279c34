"""`choreo ui`'s server: uvicorn on loopback by default, stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from ..transport._settings import Settings
from ._app import make_app
from ._data import Source

# On Ctrl-C or SIGTERM uvicorn waits this long for open connections: live streams end within
# _app.STOP_CHECK_S of the stop, a page being rendered (a history read) within a few seconds.
GRACE_S = 5


def serve(settings: Settings, home: Path, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the web view until Ctrl-C or SIGTERM; print its URL first.

    Args:
        settings: The broker and namespace to show.
        home: CHOREO_HOME (where the workflow index is).
        host: The address to listen on; loopback unless told.
        port: The port to listen on.
    """
    servers: list[uvicorn.Server] = []
    app = make_app(Source(settings, home), stopping=lambda: bool(servers) and servers[0].should_exit)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=GRACE_S, lifespan="off")
    server = uvicorn.Server(config)
    servers.append(server)
    shown = f"[{host}]" if ":" in host else host
    print(f"choreo ui: http://{shown}:{port}/ (namespace {settings.namespace}; Ctrl-C stops it)", flush=True)
    server.run()
    if not server.started:  # the port was taken, say: uvicorn logged why
        sys.exit(1)
