"""A handler runs in a task of its own (issue 11, item 1): asyncio.timeout, TaskGroup, current_task()
and context variables behave as in plain asyncio, and nothing a handler does reaches the agent's
consumer loop. Until then a handler's first steps ran inside the loop's task: its timeout cancelled
the loop (the agent exited and the timeout never fired), a failing TaskGroup cancelled the loop too,
and a context variable a handler set was seen by the next one."""

from __future__ import annotations

import asyncio
import contextvars

from helpers.trip import data

from choreograph import Agent, Event, OutcomeStatus, StepContext
from choreograph.testing import SagaKit


def _schema(name: str) -> dict[str, object]:
    return {"type": "record", "name": name, "namespace": "ctxtest", "fields": [{"name": "n", "type": "long"}]}


class Goal(Event, schema=_schema("Goal")):
    n: int


class Done(Event, schema=_schema("Done")):
    n: int


SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("SEEN", default="unset")


async def test_a_handlers_own_timeout_fails_its_attempt_and_the_agent_keeps_running() -> None:
    agent = Agent("ctx", "slow")

    @agent.handler
    async def slow(ctx: StepContext, goal: Goal) -> Done:
        if goal.n == 1:
            async with asyncio.timeout(0.2):
                await asyncio.sleep(2)
        return Done(n=goal.n)

    async with SagaKit(agent) as kit:
        timed = await kit.given_goal("ctx", {"n": 1})
        outcome = await kit.expect_outcome(timed, OutcomeStatus.COMPENSATED, failed_step="slow", timeout_s=1.5)
        [failure] = await kit.emitted(timed, kind="step_failed")
        assert data(failure)["error_type"] == "TimeoutError"
        assert outcome.failed_step == "slow"
        # The consumer loop was not cancelled: the agent still works.
        after = await kit.given_goal("ctx", {"n": 2})
        await kit.expect_outcome(after, OutcomeStatus.COMPLETED)


async def test_a_task_group_in_a_handler_fails_its_step_not_the_agent() -> None:
    agent = Agent("ctx", "fan")

    @agent.handler
    async def fan(ctx: StepContext, goal: Goal) -> Done:
        async def part(i: int) -> int:
            await asyncio.sleep(0)
            if goal.n == 1 and i == 2:
                raise ValueError("part 2 broke")
            return i

        async with asyncio.TaskGroup() as group:
            parts = [group.create_task(part(i)) for i in range(3)]
        return Done(n=sum(p.result() for p in parts))

    async with SagaKit(agent) as kit:
        broken = await kit.given_goal("ctx", {"n": 1})
        await kit.expect_outcome(broken, OutcomeStatus.COMPENSATED, failed_step="fan")
        [failure] = await kit.emitted(broken, kind="step_failed")
        assert data(failure)["error_type"] == "ExceptionGroup"
        fine = await kit.given_goal("ctx", {"n": 2})
        await kit.expect_outcome(fine, OutcomeStatus.COMPLETED)
        [done] = await kit.emitted(fine, kind="step_completed")
        assert done.data == {"n": 3}


async def test_each_run_is_its_own_task_and_its_context_variables_stay_its_own() -> None:
    agent = Agent("ctx", "vars")
    tasks: list[asyncio.Task[object] | None] = []
    seen: list[str] = []

    @agent.handler
    async def remember(ctx: StepContext, goal: Goal) -> Done:
        tasks.append(asyncio.current_task())
        seen.append(SEEN.get())
        SEEN.set(f"set by {ctx.workflow_id}")  # before any await: the part that ran in the loop's task
        await asyncio.sleep(0)
        return Done(n=goal.n)

    async with SagaKit(agent) as kit:
        for n in range(3):
            await kit.expect_outcome(await kit.given_goal("ctx", {"n": n}), OutcomeStatus.COMPLETED)
    assert seen == ["unset"] * 3  # no run saw a variable another run set
    assert SEEN.get() == "unset"
    assert None not in tasks
    assert len({id(t) for t in tasks}) == 3
    assert all(t is not None and t.done() for t in tasks)  # each run's own task, over when it ended
