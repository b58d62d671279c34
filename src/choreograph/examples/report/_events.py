"""Events of the example `report` workflow, each bound to its schema in schemas/report/.

The schemas are the package's data (`choreograph/_schemas/report/` in a wheel, the repository's
`schemas/report/` in a source checkout; see `choreograph.events.schema_root`).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from choreograph import Event, NonRetryable, Retry
from choreograph.events import schema_root

from ._faults import raise_planned, undo_seconds

if TYPE_CHECKING:
    from choreograph import StepContext

SCHEMAS = schema_root() / "report"

# Every step calls something that can fail for a moment (a search API, a model, a renderer): a
# failed attempt is retried after 0.2 s, then 0.4 s. REPORT_MAX_ATTEMPTS changes the count.
RETRY = Retry(max_attempts=int(os.environ.get("REPORT_MAX_ATTEMPTS", "3")), initial=0.2, multiplier=2.0, max=2.0)


def step_timeout(default_s: float) -> float:
    """Seconds an attempt of a step may take before the coordinator times it out.

    Counted from the moment its inputs are in the log; REPORT_STEP_TIMEOUT_S overrides the default
    (the chaos suite shortens it).
    """
    return float(os.environ.get("REPORT_STEP_TIMEOUT_S", default_s))



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


class DemoFailure(NonRetryable):
    """Raised by an example agent when the goal's fail_at names its step.

    The step fails at once (a retry would fail the same way).
    """


async def work(ctx: StepContext, fail_at: str | None) -> None:
    """Stand-in for real work (REPORT_STEP_DELAY_MS), and the demo switch fail_at.

    With REPORT_EFFECTS_FILE set, each run also records its effect there (see `record_effect`); with
    REPORT_FAULTS_DIR set, the chaos suite's planned failures are raised before the effect (_faults.py).
    """
    started_ns = time.time_ns()
    delay_ms = int(os.environ.get("REPORT_STEP_DELAY_MS", "0"))
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    raise_planned(ctx.workflow_id, ctx.step)  # a failed call: no effect happened
    record_effect(ctx.workflow_id, ctx.step, started_ns)
    if fail_at == ctx.step:
        raise DemoFailure(f"{ctx.step} failed on purpose (fail_at={ctx.step})")


async def undo(ctx: StepContext) -> None:
    """Stand-in for a compensation's work (as long as the chaos plan says, else none).

    Recorded as the effect of step "undo:<step>" when REPORT_EFFECTS_FILE is set.
    """
    started_ns = time.time_ns()
    if seconds := undo_seconds(ctx.workflow_id):
        await asyncio.sleep(seconds)
    record_effect(ctx.workflow_id, f"undo:{ctx.step}", started_ns)


def record_effect(workflow_id: str, step: str, started_ns: int) -> None:
    """Append "<workflow_id> <step> <pid> <started_ns> <done_ns>" to $REPORT_EFFECTS_FILE, if it is set.

    Opt-in, for fault-injection runs (`make chaos`) that count how often a step's handler ran: one
    line per run, written once the work is done (the run's effect), stamped with the times the run
    started and its effect was done. The file is opened with O_APPEND and each line is one os.write, so lines from
    concurrent processes never interleave.
    """
    path = os.environ.get("REPORT_EFFECTS_FILE")
    if not path:
        return
    line = f"{workflow_id} {step} {os.getpid()} {started_ns} {time.time_ns()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
