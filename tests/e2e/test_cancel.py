"""`choreo cancel` on a real broker, every service its own process (issue 14): a running saga is cancelled,
what completed is compensated in reverse dependency order, a second cancel publishes nothing, the late
result of the step that ran is compensated, and the sandbox re-runs the cancelled workflow identically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from helpers import ROOT, Stack, agent_spec, choreo, eventually
from helpers.sagas import REPORT_DEPENDS, assert_reverse_dependency_order, steps_of

from choreograph import Client, HistoryEntry, history
from choreograph.runtime import discover

# review, held: its handler runs until the test lets it go (a file appears), so the saga is running
# when it is cancelled, with research, analyze, chart and draft completed.
HELD_REVIEW = '''
import asyncio
from pathlib import Path

from choreograph import Agent, CompensationRequested, StepContext
from choreograph.examples.report._events import ChartCompleted, DraftCompleted, ReviewCompleted

GATE = Path({gate!r})
agent = Agent(workflow="report", step="review")


@agent.handler
async def review(ctx: StepContext, chart: ChartCompleted, draft: DraftCompleted) -> ReviewCompleted:
    GATE.with_suffix(".started").touch()
    while not GATE.exists():
        await asyncio.sleep(0.05)
    return ReviewCompleted(topic=draft.topic, approved=True, notes="held")


@agent.compensation
async def withdraw(ctx: StepContext, request: CompensationRequested) -> None:
    ctx.log.info("review: withdrawing %s", ctx.workflow_id)
'''
COMPLETED = ["analyze", "chart", "draft", "research"]


def entries_of(stdout: str) -> list[HistoryEntry]:
    """`choreo history --json` lines as entries (kind, step and offset are what the checks read)."""
    return [HistoryEntry(**orjson.loads(line)) for line in stdout.splitlines() if line.strip()]


async def test_choreo_cancel_ends_a_running_saga_cancelled_and_refuses_it_again(
        stack: Stack, cli_env: dict[str, str], tmp_path: Path) -> None:
    gate = tmp_path / "review.go"
    (tmp_path / "held_review.py").write_text(HELD_REVIEW.format(gate=str(gate)))
    specs = [spec for spec in discover(ROOT) if spec.name != "report.review"]
    stack.start(*specs, agent_spec("report.review", "held_review:agent"), pythonpath=tmp_path)
    async with Client(stack.settings) as client:
        goal = await client.publish("report", {"topic": "cancel me"})
    wid = goal.workflow_id

    async def review_runs() -> bool:
        return gate.with_suffix(".started").exists()

    await eventually(review_runs, 60, "review runs")

    cancelled = choreo("cancel", wid, "--reason", "changed my mind", "--wait", "60", "--json", env=cli_env)
    assert cancelled.returncode == 0, (cancelled.stdout, cancelled.stderr)
    result: dict[str, Any] = orjson.loads(cancelled.stdout)
    assert result["status"] == "cancelled", result
    assert (result["outcome"]["reason"], result["outcome"]["completed_steps"], result["outcome"]["compensated_steps"]
            ) == ("changed my mind", COMPLETED, COMPLETED)

    shown = choreo("history", wid, "--json", env=cli_env)
    assert shown.returncode == 0, shown.stderr
    entries = entries_of(shown.stdout)
    assert [e.kind for e in entries].count("cancel_requested") == 1
    assert sorted(steps_of(entries, "step_completed")) == COMPLETED
    assert sorted(steps_of(entries, "compensation_requested")) == COMPLETED  # exactly the completed steps
    assert sorted(steps_of(entries, "compensation_completed")) == COMPLETED
    assert_reverse_dependency_order(entries, REPORT_DEPENDS)
    assert entries[-1].kind == "outcome"
    assert (entries[-1].data or {}).get("status") == "cancelled"

    table = choreo("history", wid, env=cli_env)
    assert table.returncode == 0, table.stderr
    assert "CANCEL: changed my mind" in table.stdout
    state = choreo("state", wid, "--json", env=cli_env)
    assert state.returncode == 0, state.stderr
    folded = orjson.loads(state.stdout)
    assert (folded["status"], folded["cancelled"], folded["compensated"]) == ("cancelled", "changed my mind", COMPLETED)

    before = len(await history(stack.settings, wid, to_end=True))
    again = choreo("cancel", wid, "--reason", "again", env=cli_env)
    assert (again.returncode, again.stdout) == (1, ""), again
    assert again.stderr == f"error: {wid} is already cancelled; nothing published\n"
    unknown = choreo("cancel", "no-such-workflow", env=cli_env)
    assert (unknown.returncode, unknown.stderr.count("\n")) == (1, 1), unknown
    assert "nothing published" in unknown.stderr

    # review's result comes after the outcome: compensated too; and nothing else was published.
    gate.touch()

    async def review_undone() -> bool:
        return "review" in steps_of(await history(stack.settings, wid, to_end=True), "compensation_completed")

    await eventually(review_undone, 60, "review's late result compensated")
    late = [(e.kind, e.step) for e in (await history(stack.settings, wid, to_end=True))[before:]]
    assert late == [("step_completed", "review"), ("compensation_requested", "review"),
                    ("compensation_completed", "review")], late

    # The sandbox re-runs chart against the recording, the cancellation fed back with the rest.
    replayed = choreo("replay", wid, "--sandbox", "cancelled", "--agents", "chart", "--json", env=cli_env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert orjson.loads(replayed.stdout)["identical"]
