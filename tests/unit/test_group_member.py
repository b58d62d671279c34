"""The group-member rule on the memory log: a partition's records are handled only after its set-up,
the set-up never replaces state that handling created, and revocations and commits never race.

Rebalances are injected at every await of a set-up (the memory log's `on_await` hook), and a
partition's set-up is slowed at each of its awaits so that records of the new assignment arrive
while it runs, as they do with aiokafka (which activates an assignment before it awaits
`on_partitions_assigned`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import pytest

from choreograph import OutcomeStatus, PublishedGoal
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.examples.report._events import ChartCompleted
from choreograph.testing import Crash, SagaKit

REPORT = (research.agent, analyze.agent, chart.agent, draft.agent, review.agent)
SET_UP = {"end_offsets", "committed", "position", "read"}  # the awaits of a partition's set-up
FAIL_AT = [None, "chart", "review", "draft", "analyze"]


def inject_at(kit: SagaKit, nth: int, action: Callable[[], Coroutine[Any, Any, None]]) -> list[str]:
    """Run `action` at the `nth` set-up await from now; widen every set-up await meanwhile."""
    seen: list[str] = []

    async def hook(operation: str) -> None:
        if operation not in SET_UP:
            return
        seen.append(operation)
        if len(seen) == nth:
            asyncio.get_running_loop().create_task(action())
        for _ in range(3):  # let the services' loops run while a set-up waits on "the broker"
            await asyncio.sleep(0)

    kit.log.on_await = hook
    return seen


async def publish(kit: SagaKit, count: int) -> dict[str, tuple[PublishedGoal, str | None]]:
    goals = {}
    for i in range(count):
        goal = await kit.given_goal("report", {"topic": f"t{i}", "fail_at": FAIL_AT[i % len(FAIL_AT)]})
        goals[goal.workflow_id] = (goal, FAIL_AT[i % len(FAIL_AT)])
    return goals


async def assert_each_saga_has_one_right_outcome(
        kit: SagaKit, goals: dict[str, tuple[PublishedGoal, str | None]]) -> None:
    for goal, fail_at in goals.values():
        want = OutcomeStatus.COMPLETED if fail_at is None else OutcomeStatus.COMPENSATED
        await kit.expect_outcome(goal, want, timeout_s=20)
        assert len(await kit.emitted(goal, kind="outcome")) == 1, goal.workflow_id
        requested = {e.step for e in await kit.emitted(goal, kind="compensation_requested")}
        completed = {e.step for e in await kit.emitted(goal, kind="step_completed")}
        assert requested == (completed if fail_at else set()), goal.workflow_id


@pytest.mark.parametrize("nth", range(1, 9))
async def test_coordinators_joining_at_any_await_of_a_set_up_lose_no_saga(nth: int) -> None:
    async with SagaKit(*REPORT, partitions=4) as kit:
        goals = await publish(kit, 10)
        seen = inject_at(kit, nth, lambda: kit.start_service("coordinator#3"))
        await kit.start_service("coordinator#2")  # a rebalance while sagas are open...
        goals |= await publish(kit, 10)  # ...and a third member joins at set-up await `nth`
        await assert_each_saga_has_one_right_outcome(kit, goals)
        assert len(seen) >= nth, f"only {len(seen)} set-up awaits happened"
        await kit.idle()


@pytest.mark.parametrize("nth", range(1, 7))
async def test_an_agent_taking_over_partitions_never_reruns_a_logged_step(nth: int) -> None:
    async with SagaKit(*REPORT, partitions=2) as kit:
        await kit.start_service("analyze#2")
        kit.crash("analyze", Crash.AFTER_PUBLISH, times=3)  # dies with a result logged, its input not committed
        inject_at(kit, nth, lambda: kit.start_service("analyze#3"))
        goals = await publish(kit, 10)
        await assert_each_saga_has_one_right_outcome(kit, goals)
        # A run whose result never reached the log may run again (at least once); a step whose
        # result is in the log never does.
        assert kit.reruns_after_result == {}
        assert kit.crashes("analyze") >= 1
        await kit.idle()


async def test_a_half_finished_join_survives_a_rebalance_of_its_agent() -> None:
    async with SagaKit(*REPORT, partitions=4) as kit:
        kit.pause_step("draft")  # review holds chart's result and waits for draft's
        goals = await publish(kit, 6)
        for goal, fail_at in goals.values():
            if fail_at in (None, "review"):
                await kit.eventually(partial(kit.emitted, goal, kind="step_completed", step="chart"))
        await kit.start_service("review#2")  # review's partitions move while its joins are half done
        kit.resume_step("draft")
        await assert_each_saga_has_one_right_outcome(kit, goals)
        await kit.idle()


async def test_a_rebalance_during_a_commit_kills_no_service() -> None:
    async with SagaKit(*REPORT, partitions=4) as kit:
        rebalanced = asyncio.Event()

        async def at_commit(operation: str) -> None:
            if operation == "commit" and not rebalanced.is_set():
                rebalanced.set()  # every group rebalances while this commit is on its way
                await asyncio.gather(*(kit.start_service(f"{name}#2") for name in
                                       ["coordinator", "research", "analyze", "chart", "draft", "review"]))

        kit.log.on_await = at_commit
        goals = await publish(kit, 10)
        await asyncio.wait_for(rebalanced.wait(), 10)
        goals |= await publish(kit, 10)
        await assert_each_saga_has_one_right_outcome(kit, goals)
        await kit.idle()  # every service still runs (the kit raises if one died): it committed everything


async def test_a_duplicate_join_input_after_the_outcome_pins_no_commit() -> None:
    async with SagaKit(*REPORT) as kit:
        goal = await kit.given_goal("report", {"topic": "late", "fail_at": "draft"})
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED)
        [chart_done] = await kit.emitted(goal, kind="step_completed", step="chart")
        await kit.given_event(goal, ChartCompleted(**(chart_done.data or {})), step="chart")
        await kit.expect_outcome(await kit.given_goal("report", {"topic": "after"}), OutcomeStatus.COMPLETED)
        await kit.idle()  # review's committed lag returns to 0
