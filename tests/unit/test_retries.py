"""Retries with backoff, kept by the agent and counted in the log (issue 11, item 2), on the memory log
with a ManualClock: time moves only when a test advances it, and tests wait on what the log shows.
A trip books (compensable), then pays; `pay` fails as each test says (helpers.trip)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from helpers.trip import Booked, Paid, agent_committed, attempts_failed, data, logged, trip

from choreograph import NonRetryable, OutcomeStatus, Retry, StepContext
from choreograph.events import COORDINATOR_SOURCE, Kind, WorkflowOutcome
from choreograph.testing import SagaKit
from choreograph.transport import TopicPartition
from choreograph.transport._clock import ManualClock


async def test_a_step_that_fails_twice_then_succeeds_completes_with_both_failures_in_history() -> None:
    clock = ManualClock()
    runs: list[int] = []

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        runs.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError(f"payment API timed out (attempt {ctx.attempt})")
        return Paid(n=booked.n)

    async with SagaKit(*trip(pay, retry=Retry(max_attempts=3, initial=1, multiplier=2, jitter=0)), clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        [first] = await attempts_failed(kit, goal, 1)
        assert (data(first)["attempt"], data(first)["error_type"]) == (1, "ConnectionError")
        start = clock.now_ms()  # still: the clock moves only when advanced
        assert data(first)["next_attempt_at"] == start + 1000
        assert data(first)["input_offsets"]
        assert runs == [1]  # nothing runs before its time
        clock.advance(1000)
        second = (await attempts_failed(kit, goal, 2))[1]
        assert data(second)["next_attempt_at"] == start + 1000 + 2000
        clock.advance(2000)
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        history = [(e.kind, e.step) for e in await kit.events(goal)]
    assert runs == [1, 2, 3]
    assert history.count(("step_attempt_failed", "pay")) == 2
    assert history.index(("step_attempt_failed", "pay")) < history.index(("step_completed", "pay"))


async def test_a_step_failing_past_its_attempts_fails_and_the_saga_compensates() -> None:
    clock = ManualClock()

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        raise ConnectionError("payment API down")

    async with SagaKit(*trip(pay, retry=Retry(max_attempts=3, initial=1, jitter=0)), clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        for count in (1, 2):
            await attempts_failed(kit, goal, count)
            clock.advance(10_000)
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="pay", compensated=["book"])
        [failed] = await kit.emitted(goal, kind="step_failed")
    assert (data(failed)["attempts"], data(failed)["error_type"]) == (3, "ConnectionError")


@pytest.mark.parametrize("raised", ["non_retryable", "declared"])
async def test_a_non_retryable_error_fails_the_step_at_once(raised: str) -> None:
    clock = ManualClock()

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        if raised == "declared":
            raise PermissionError("card declined")
        try:
            raise ValueError("card declined")
        except ValueError as exc:
            raise NonRetryable("card declined") from exc

    retry = Retry(max_attempts=5, initial=1, non_retryable=(PermissionError,))
    async with SagaKit(*trip(pay, retry=retry), clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="pay", compensated=["book"])
        [failed] = await kit.emitted(goal, kind="step_failed")
        assert not await kit.emitted(goal, kind="step_attempt_failed")
    assert data(failed)["attempts"] == 1
    assert data(failed)["error_type"] == ("ValueError" if raised == "non_retryable" else "PermissionError")


@pytest.mark.parametrize("committed", [False, True], ids=["before_commit", "after_commit"])
async def test_a_kill_between_attempts_neither_repeats_nor_skips_one(committed: bool) -> None:
    clock = ManualClock()
    runs: Counter[int] = Counter()

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        runs[ctx.attempt] += 1
        if ctx.attempt < 3:
            raise ConnectionError("payment API timed out")
        return Paid(n=booked.n)

    async with SagaKit(*trip(pay, retry=Retry(max_attempts=4, initial=5, jitter=0)), clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        await attempts_failed(kit, goal, 1)
        if committed:
            await agent_committed(kit, "pay")  # the retry pins nothing: the input is committed, read back by offset
        await kit.restart("pay")
        clock.advance(5_000)
        await attempts_failed(kit, goal, 2)
        await kit.restart("pay")
        clock.advance(10_000)
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        failures = [data(e)["attempt"] for e in await kit.emitted(goal, kind="step_attempt_failed")]
        assert kit.crashes("pay") == 2
    assert runs == {1: 1, 2: 1, 3: 1}
    assert failures == [1, 2]


async def test_a_long_backoff_holds_no_handler_slot_and_no_other_workflows_commit() -> None:
    clock = ManualClock()
    slots = 64  # AgentRuntime's default max_concurrency

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        if booked.n < slots + 6 and ctx.attempt == 1:
            raise ConnectionError("rate limited")
        return Paid(n=booked.n)

    async with SagaKit(*trip(pay, retry=Retry(max_attempts=2, initial=3600)), clock=clock) as kit:
        waiting = [await kit.given_goal("trip", {"n": n}) for n in range(slots + 6)]
        await kit.eventually(lambda: asyncio.sleep(0, len(logged(kit, "step_attempt_failed")) == slots + 6))
        later = await kit.given_goal("trip", {"n": 1000})
        await kit.expect_outcome(later, OutcomeStatus.COMPLETED)
        await agent_committed(kit, "pay")  # no pending retry pins its workflow's input
        clock.advance(3_960_000)
        for goal in waiting:
            await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)


async def test_a_compensation_that_fails_transiently_is_retried_before_it_fails() -> None:
    clock = ManualClock()
    undos: list[int] = []

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        raise NonRetryable("card declined")

    async def undo(ctx: StepContext) -> None:
        undos.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("booking API timed out")

    agents = trip(pay, retry=None, undo=undo, book_retry=Retry(max_attempts=2, initial=2, jitter=0))
    async with SagaKit(*agents, clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        [failed] = await attempts_failed(kit, goal, 1)
        assert failed.step == "book"
        assert data(failed)["compensation"] is True
        clock.advance(2_000)
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, compensated=["book"])
    assert undos == [1, 2]


async def test_an_outcome_ends_a_pending_retry() -> None:
    clock = ManualClock()
    runs: list[int] = []

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        runs.append(ctx.attempt)
        raise ConnectionError("payment API down")

    async with SagaKit(*trip(pay, retry=Retry(max_attempts=3, initial=5, jitter=0)), clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        await attempts_failed(kit, goal, 1)
        ended = WorkflowOutcome(workflow="trip", status=OutcomeStatus.TIMED_OUT, completed_steps=["book"],
                                compensated_steps=[])
        await kit.given_event(goal, ended, step="", kind=Kind.OUTCOME, source=COORDINATOR_SOURCE)
        await kit.outcome(goal)
        later = await kit.given_goal("trip", {"n": 2})  # the agent read past the outcome
        await attempts_failed(kit, later, 1)
        clock.advance(5_000)
        await attempts_failed(kit, later, 2)
    assert runs == [1, 1, 2]  # the ended workflow's attempt 2 never ran


async def test_a_rebalance_hands_a_pending_retry_to_the_partitions_next_owner() -> None:
    clock = ManualClock()
    runs: Counter[tuple[int, int]] = Counter()

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        runs[(booked.n, ctx.attempt)] += 1
        if ctx.attempt == 1:
            raise ConnectionError("payment API timed out")
        return Paid(n=booked.n)

    async with SagaKit(*trip(pay, retry=Retry(max_attempts=2, initial=5, jitter=0)), clock=clock) as kit:
        goals = [await kit.given_goal("trip", {"n": n}) for n in range(12)]
        assert {g.partition for g in goals} == {0, 1}  # each copy will own workflows with a pending retry
        for goal in goals:
            await attempts_failed(kit, goal, 1)
        await kit.start_service("pay#2")  # the group rebalances: each partition's timers go with it
        clock.advance(5_000)
        for goal in goals:
            await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        await kit.stop_service("pay#2")
        assert not kit.log.records(TopicPartition(kit.settings.deadletter_topic, 0))
    assert runs == {(n, attempt): 1 for n in range(12) for attempt in (1, 2)}
