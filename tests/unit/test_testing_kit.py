"""The saga test kit: the example workflow end to end on the memory log, with injected crashes,
duplicates and reordering, as a user would test their own agents."""

from __future__ import annotations

import asyncio

import pytest

from choreograph import OutcomeStatus
from choreograph.events import Kind
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.testing import COORDINATOR, Crash, SagaKit

REPORT = (research.agent, analyze.agent, chart.agent, draft.agent, review.agent)


async def test_a_goal_completes_and_a_failure_compensates_in_reverse() -> None:
    async with SagaKit(*REPORT) as kit:
        happy = await kit.given_goal("report", {"topic": "rust"})
        failing = await kit.given_goal("report", {"topic": "go", "fail_at": "review"})
        await kit.expect_outcome(happy, OutcomeStatus.COMPLETED)
        await kit.expect_outcome(failing, OutcomeStatus.COMPENSATED, failed_step="review",
                                 compensated=["research", "analyze", "chart", "draft"])
        undone = [e.step for e in await kit.emitted(failing, kind="compensation_completed")]
        assert undone.index("analyze") > max(undone.index("chart"), undone.index("draft"))
        assert undone[-1] == "research"


@pytest.mark.parametrize("at", [Crash.AFTER_EFFECT, Crash.AFTER_PUBLISH])
async def test_an_agent_killed_around_its_publish_leaves_exactly_one_result(at: Crash) -> None:
    async with SagaKit(*REPORT) as kit:
        kit.crash("analyze", at)
        goal = await kit.given_goal("report", {"topic": "crash"})
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        results = await kit.emitted(goal, kind="step_completed", step="analyze")
        assert kit.crashes("analyze") == 1
        assert len(results) == 1, [r.offset for r in results]
        # Killed after its effect, the step runs again (at least once); killed after its result was
        # logged, the restarted agent finds that result and does not run the step again.
        assert kit.handler_runs[(goal.workflow_id, "analyze")] == (2 if at is Crash.AFTER_EFFECT else 1)
        await kit.idle()
    # The killed copy's handler run is not left pending for a later test's garbage collection.
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_coordinator_killed_after_a_decision_gives_one_outcome() -> None:
    async with SagaKit(*REPORT) as kit:
        kit.crash(COORDINATOR, Crash.AFTER_PUBLISH, times=3)
        goals = [await kit.given_goal("report", {"topic": f"t{i}", "fail_at": f}) for i, f in
                 enumerate([None, "chart", "review"])]
        for goal in goals:
            await kit.outcome(goal)
            assert len(await kit.emitted(goal, kind="outcome")) == 1
        assert kit.crashes(COORDINATOR) == 3
        await kit.idle()


async def test_duplicated_and_reordered_deliveries_change_nothing_a_user_sees() -> None:
    async with SagaKit(*REPORT) as kit:
        kit.duplicate(kind=Kind.STEP_COMPLETED, step="chart")
        kit.hold_back(kind=Kind.STEP_COMPLETED, step="draft")
        goal = await kit.given_goal("report", {"topic": "twice"})
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        assert len(await kit.emitted(goal, kind="step_completed", step="chart")) == 2  # the copy is in the log
        assert kit.handler_runs[(goal.workflow_id, "review")] == 1
        await kit.idle()
