"""The demo behind `make run`: start the stack, run several report goals (some failing), show
progress live, print the outcomes, stop the stack. Last line: completed=N compensated=M failed=K."""

from __future__ import annotations

import asyncio
import os
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .client import Client, PublishedGoal
from .events import WorkflowOutcome
from .settings import Settings
from .supervisor import down, up

GOALS: list[tuple[str, str | None]] = [
    ("heat pump market sizing", None),
    ("EU battery supply chain", None),
    ("open-source agent frameworks", None),
    ("vector database benchmarks", "chart"),
    ("solid-state batteries", "review"),
    ("grid-scale storage", "research"),
]


def _table(goals: list[tuple[PublishedGoal, str, str | None]], outcomes: dict[str, WorkflowOutcome],
           started: float) -> Table:
    table = Table(title=f"report workflows ({time.monotonic() - started:.1f} s)")
    for column in ("workflow id", "topic", "fail_at", "status", "completed steps", "compensated steps"):
        table.add_column(column)
    for goal, topic, fail_at in goals:
        outcome = outcomes.get(goal.workflow_id)
        status = outcome.status.value if outcome else "running"
        colour = {"completed": "green", "compensated": "yellow", "failed": "red"}.get(status, "cyan")
        table.add_row(goal.workflow_id[:8], topic, fail_at or "", f"[{colour}]{status}[/{colour}]",
                      ", ".join(outcome.completed_steps) if outcome else "",
                      ", ".join(outcome.compensated_steps) if outcome else "")
    return table


async def _run(console: Console, timeout_s: float) -> dict[str, WorkflowOutcome]:
    async with Client(Settings.from_env(), source="choreo://demo") as client:
        goals = []
        for topic, fail_at in GOALS:
            goals.append((await client.publish("report", {"topic": topic, "fail_at": fail_at}), topic, fail_at))
        outcomes: dict[str, WorkflowOutcome] = {}
        started = time.monotonic()
        with Live(_table(goals, outcomes, started), console=console, refresh_per_second=8) as live:
            while len(outcomes) < len(goals) and time.monotonic() - started < timeout_s:
                waiting = [g for g, _, _ in goals if g.workflow_id not in outcomes]
                outcomes.update(await client.wait_many(waiting, 0.25))
                live.update(_table(goals, outcomes, started))
        return outcomes


def run_demo(timeout_s: float = 90.0) -> int:
    console = Console()
    os.environ.setdefault("REPORT_STEP_DELAY_MS", "300")  # so progress is visible; agents read it
    console.print("[bold]starting broker, coordinator and agents...[/bold]")
    for name, pid in up().items():
        console.print(f"  {name} (pid {pid})")
    try:
        outcomes = asyncio.run(_run(console, timeout_s))
    finally:
        console.print(f"stopped: {' '.join(down())}")
    counts = {s: sum(o.status.value == s for o in outcomes.values()) for s in ("completed", "compensated", "failed")}
    unfinished = len(GOALS) - len(outcomes)
    if unfinished:
        console.print(f"[red]{unfinished} workflow(s) did not finish within {timeout_s:.0f} s[/red]")
    print(f"completed={counts['completed']} compensated={counts['compensated']} failed={counts['failed']}")
    return 0 if not unfinished else 1
