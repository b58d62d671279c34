"""The demo behind `make run`: report workflows, some failing, with live progress, on a local stack.

Start the stack, run several report goals (some failing), show progress live, print the outcomes,
stop the stack. Last line: completed=N compensated=M failed=K.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..events._envelope import Kind
from ..events._models import WorkflowOutcome
from ..examples.report import AGENTS
from ..runtime._client import Client, PublishedGoal
from ._config import cli_settings
from ._stack import down, exit_on_signals, ignore_signals, up

GOALS: list[tuple[str, str | None]] = [
    ("heat pump market sizing", None),
    ("EU battery supply chain", None),
    ("open-source agent frameworks", None),
    ("vector database benchmarks", "chart"),
    ("solid-state batteries", "review"),
    ("grid-scale storage", "research"),
]
COLOURS = {"completed": "green", "compensated": "yellow", "failed": "red", "running": "cyan"}


@dataclass
class Row:
    """One goal of the demo and what has happened to it so far."""

    goal: PublishedGoal
    topic: str
    fail_at: str | None
    completed: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)
    latest: str = "goal published"
    outcome: WorkflowOutcome | None = None

    @property
    def status(self) -> str:
        """The outcome's status, or "running"."""
        return self.outcome.status.value if self.outcome else "running"


def _table(rows: list[Row], started: float) -> Table:
    """The live table: a row per goal, with the time since `started`."""
    table = Table(title=f"report workflows ({time.monotonic() - started:.1f} s)")
    for column in ("workflow", "topic", "fail_at", "status", "steps done", "latest event", "compensated, in order"):
        table.add_column(column)
    for row in rows:
        colour = COLOURS[row.status]
        table.add_row(row.goal.workflow_id[:8], row.topic, row.fail_at or "", f"[{colour}]{row.status}[/{colour}]",
                      str(len(row.completed)), row.latest, " > ".join(row.compensated))
    return table


async def _run(console: Console, timeout_s: float) -> list[Row]:
    """Publish the goals and follow them to their outcomes (or the timeout), showing the live table."""
    async with Client(cli_settings(), source="choreo://demo") as client:
        rows = [Row(await client.publish("report", {"topic": t, "fail_at": f}), t, f) for t, f in GOALS]
        by_id = {row.goal.workflow_id: row for row in rows}
        started = time.monotonic()
        with Live(_table(rows, started), console=console, refresh_per_second=8) as live:
            async for update in client.follow([row.goal for row in rows], timeout_s):
                row = by_id[update.workflow_id]
                row.latest = f"{update.kind.value} {update.step or ''}".strip()
                if update.kind is Kind.STEP_COMPLETED and update.step:
                    row.completed.append(update.step)
                elif update.kind is Kind.COMPENSATION_COMPLETED and update.step:
                    row.compensated.append(update.step)
                row.outcome = update.outcome or row.outcome
                live.update(_table(rows, started))
        console.line()
        return rows


def run_demo(timeout_s: float = 90.0, keep: bool = False) -> int:
    """Run the demo: start the stack, run the goals, print the outcomes, stop the stack.

    Args:
        timeout_s: How long to wait for every workflow's outcome.
        keep: Leave the stack running afterwards (explore with history, state, replay, archive; end
            with `choreo down`).

    Returns:
        The exit status: 0, or 1 if a workflow did not finish in time.
    """
    exit_on_signals()  # a closed terminal or a kill must still stop what the demo started
    console = Console()
    os.environ.setdefault("REPORT_STEP_DELAY_MS", "300")  # so progress is visible; the example agents read it
    console.print("[bold]starting broker, coordinator and agents...[/bold]")
    for name, pid in up(agents=AGENTS).items():
        console.print(f"  {name} (pid {pid})")
    stopped = False
    try:
        rows = asyncio.run(_run(console, timeout_s))
    except BaseException:
        stopped = True
        raise
    finally:
        if stopped or not keep:
            ignore_signals()  # a second signal must not cut the cleanup short
            console.print(f"stopped: {' '.join(down())}")
    if keep:
        console.print("still running; try `choreo history ID`, `choreo state ID`, then `choreo down`")
        for row in rows:
            console.print(f"  {row.goal.workflow_id} {row.status}")
    counts = {s: sum(row.status == s for row in rows) for s in ("completed", "compensated", "failed")}
    unfinished = sum(row.outcome is None for row in rows)
    if unfinished:
        console.print(f"[red]{unfinished} workflow(s) did not finish within {timeout_s:.0f} s[/red]")
    print(f"completed={counts['completed']} compensated={counts['compensated']} failed={counts['failed']}")
    return 0 if not unfinished else 1
