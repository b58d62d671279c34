"""Events of the example `report` workflow, each bound to its schema in schemas/report/."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from choreograph import Event

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


async def work(step: str, fail_at: str | None) -> None:
    """Stand-in for real work (REPORT_STEP_DELAY_MS), and the demo switch fail_at."""
    delay_ms = int(os.environ.get("REPORT_STEP_DELAY_MS", "0"))
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    if fail_at == step:
        raise DemoFailure(f"{step} failed on purpose (fail_at={step})")
