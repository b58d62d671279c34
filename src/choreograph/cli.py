"""`choreo`: the command line. A thin front over the library; see README for the contract."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import orjson
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from .errors import ChoreographError, GoalValidationError
from .settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Choreographed agent workflows on Kafka.")
broker_app = typer.Typer(no_args_is_help=True, help="A local embedded (Tansu) broker across commands.")
agent_app = typer.Typer(no_args_is_help=True, help="Run agents.")
coordinator_app = typer.Typer(no_args_is_help=True, help="Run the saga coordinator.")
app.add_typer(broker_app, name="broker")
app.add_typer(agent_app, name="agent")
app.add_typer(coordinator_app, name="coordinator")
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


@broker_app.command("start")
def broker_start() -> None:
    """Start a detached embedded broker (state in .choreo/) unless one is running."""
    from .broker import LocalBroker

    print(LocalBroker().start())


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the detached embedded broker."""
    from .broker import LocalBroker

    print("stopped" if LocalBroker().stop() else "not running")


@broker_app.command("status")
def broker_status() -> None:
    """Print the local broker's address, or exit 1 if none runs."""
    from .broker import LocalBroker

    address = LocalBroker().status()
    if address is None:
        print("not running")
        raise typer.Exit(1)
    print(address)


@agent_app.command("run")
def agent_run(spec: Annotated[str, typer.Argument(help="MODULE:ATTR of an Agent")]) -> None:
    """Run one agent in this process, in its own consumer group, until SIGTERM."""
    from .process import run_agent

    run_agent(spec)


@coordinator_app.command("run")
def coordinator_run() -> None:
    """Run the saga coordinator in this process until SIGTERM."""
    from .process import run_coordinator

    run_coordinator()


@app.command()
def up(timeout: Annotated[float, typer.Option(help="seconds to wait for readiness")] = 60.0) -> None:
    """Start broker (unless configured or running), coordinator and agents in the background."""
    from .supervisor import exit_on_signals
    from .supervisor import up as start_stack

    exit_on_signals()
    for name, pid in start_stack(timeout).items():
        print(f"{name}\tpid {pid}")


@app.command()
def down() -> None:
    """Stop everything `choreo up` started."""
    from .supervisor import down as stop_stack

    print(" ".join(stop_stack()) or "nothing to stop")


@app.command()
def publish(
    workflow: str,
    data: Annotated[str, typer.Option(help="goal data as a JSON object")],
    wait: Annotated[float | None, typer.Option(help="wait up to SECONDS for the outcome")] = None,
) -> None:
    """Publish a goal; print {"workflow_id": ...} (and "status" with --wait)."""
    from .client import Client

    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _fail(f"--data is not JSON: {exc}", 2) from exc

    async def go() -> dict[str, Any]:
        async with Client(Settings.from_env(), source="choreo://cli") as client:
            goal = await client.publish(workflow, payload)
            result: dict[str, Any] = {"workflow_id": goal.workflow_id, "workflow": workflow,
                                      "partition": goal.partition, "offset": goal.offset}
            if wait is not None:
                outcome = await client.wait(goal, wait)
                result["status"] = outcome.status.value if outcome else "running"
                if outcome is not None:
                    result["outcome"] = outcome.model_dump(mode="json")
            return result

    try:
        print(orjson.dumps(asyncio.run(go())).decode())
    except GoalValidationError as exc:
        raise _fail(str(exc), 2) from exc


@app.command()
def history(
    workflow_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per event")] = False,
) -> None:
    """A workflow's events in log order."""
    from .history import history as read_history

    entries = asyncio.run(read_history(Settings.from_env(), workflow_id))
    if as_json:
        for entry in entries:
            print(entry.json())
        return
    table = Table(title=f"workflow {workflow_id}", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in ("#", "time", "kind", "step", "source", "cause"):
        table.add_column(column, no_wrap=True)
    offsets = {e.event_id: e.offset for e in entries}
    for e in entries:
        cause = f"@{offsets[e.causation_id]}" if e.causation_id in offsets else ""
        style = "yellow" if e.kind.startswith("compensation") else "bold" if e.kind == "outcome" else None
        table.add_row(str(e.offset), e.time[11:23], e.kind, e.step or "", e.source.rsplit("/", 1)[-1], cause,
                      style=style)
    Console().print(table)


@app.command()
def demo() -> None:
    """`make run`: up, several report goals (some failing), live progress, outcomes, down."""
    from .demo import run_demo

    raise typer.Exit(run_demo())


def main() -> None:
    try:
        app()
    except ChoreographError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
