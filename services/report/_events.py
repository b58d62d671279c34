"""Events of the example `report` workflow, each bound to its schema in schemas/report/."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from choreograph import Event

if TYPE_CHECKING:
    from choreograph import StepContext

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "report"


class ReportGoal(Event, schema=SCHEMAS / "report_goal.avsc"):
    topic: str
    fail_at: str | None = None


class ResearchCompleted(Event, schema=SCHEMAS / "research_completed.avsc"):
    topic: str
    fail_at: str | None = None
    sources: list[str]


class AnalysisCompleted(Event, schema=SCHEMAS / "analysis_completed.avsc"):
    topic: str
    fail_at: str | None = None
    findings: list[str]


class ChartCompleted(Event, schema=SCHEMAS / "chart_completed.avsc"):
    topic: str
    fail_at: str | None = None
    chart_uri: str


class DraftCompleted(Event, schema=SCHEMAS / "draft_completed.avsc"):
    topic: str
    fail_at: str | None = None
    text: str


class ReviewCompleted(Event, schema=SCHEMAS / "review_completed.avsc"):
    topic: str
    approved: bool
    notes: str


class DemoFailure(RuntimeError):
    """Raised by an example agent when the goal's fail_at names its step."""


async def work(ctx: StepContext, fail_at: str | None) -> None:
    """Stand-in for real work (REPORT_STEP_DELAY_MS), and the demo switch fail_at.

    With REPORT_EFFECTS_FILE set, each run also records its effect there (see `record_effect`).
    """
    started_ns = time.time_ns()
    delay_ms = int(os.environ.get("REPORT_STEP_DELAY_MS", "0"))
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    record_effect(ctx.workflow_id, ctx.step, started_ns)
    if fail_at == ctx.step:
        raise DemoFailure(f"{ctx.step} failed on purpose (fail_at={ctx.step})")


def record_effect(workflow_id: str, step: str, started_ns: int) -> None:
    """Append "<workflow_id> <step> <pid> <started_ns>" to $REPORT_EFFECTS_FILE, if it is set.

    Opt-in, for fault-injection runs (`make chaos`) that count how often a step's handler ran: one
    line per run, written once the work is done (the run's effect), stamped with the time the run
    started. The file is opened with O_APPEND and each line is one os.write, so lines from
    concurrent processes never interleave.
    """
    path = os.environ.get("REPORT_EFFECTS_FILE")
    if not path:
        return
    line = f"{workflow_id} {step} {os.getpid()} {started_ns}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
