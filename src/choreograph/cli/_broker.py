"""`choreo broker start|stop|status`: a local embedded (Tansu) broker across commands."""

from __future__ import annotations

import orjson
import typer

from ._input import JsonFlag

broker_app = typer.Typer(no_args_is_help=True, help="A local embedded (Tansu) broker across commands.")


@broker_app.command("start")
def broker_start(as_json: JsonFlag = False) -> None:
    """Start a detached embedded broker (state in .choreo/) unless one is running; print its address."""
    from ..transport._broker import LocalBroker

    address = LocalBroker().start()
    print(orjson.dumps({"address": address}).decode() if as_json else address)


@broker_app.command("stop")
def broker_stop(as_json: JsonFlag = False) -> None:
    """Stop the detached embedded broker."""
    from ..transport._broker import LocalBroker

    stopped = LocalBroker().stop()
    print(orjson.dumps({"stopped": stopped}).decode() if as_json else "stopped" if stopped else "not running")


@broker_app.command("status")
def broker_status(as_json: JsonFlag = False) -> None:
    """Print the local broker's address, or exit 1 if none runs."""
    from ..transport._broker import LocalBroker

    address = LocalBroker().status()
    print(orjson.dumps({"running": address is not None, "address": address}).decode() if as_json
          else address or "not running")
    if address is None:
        raise typer.Exit(1)
