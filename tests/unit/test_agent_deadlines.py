"""The agent's side of deadlines and heartbeats (issue 11, item 3), on the memory log with a ManualClock.

The coordinator keeps the deadlines and publishes StepTimedOut; here it is published by the test as
the coordinator would (same source), so the agent's part is tested alone: it cancels the timed-out
run, retries it when the StepTimedOut says (the StepTimedOut is the attempt's record, also after a
restart), or stops when it says the step failed; a StepTimedOut from anyone else changes nothing."""

from __future__ import annotations

import asyncio

from helpers.trip import Booked, Paid, data, logged, trip

from choreograph import OutcomeStatus, Retry, StepContext
from choreograph.events import COORDINATOR_SOURCE, Kind, StepTimedOut
from choreograph.runtime import PublishedGoal
from choreograph.testing import SagaKit
from choreograph.transport._clock import ManualClock


async def until(kit: SagaKit, check: object) -> None:
    """Wait until `check()` is true (a plain callable)."""
    assert callable(check)
    await kit.eventually(lambda: asyncio.sleep(0, check()))


async def time_out(kit: SagaKit, goal: PublishedGoal, attempt: int, next_attempt_at: int | None, *,
                   source: str = COORDINATOR_SOURCE) -> None:
    """Publish a StepTimedOut of `pay` as the coordinator (or `source`) would."""
    event = StepTimedOut(step="pay", attempt=attempt, reason="timeout of 10 s", deadline=0,
                         next_attempt_at=next_attempt_at)
    await kit.given_event(goal, event, step="pay", kind=Kind.STEP_TIMED_OUT, source=source)


async def test_a_timed_out_attempt_is_cancelled_and_the_next_runs_when_the_coordinator_says() -> None:
    clock = ManualClock()
    runs: list[int] = []
    cancelled: list[int] = []

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        runs.append(ctx.attempt)
        if ctx.attempt == 1:
            try:
                await asyncio.Event().wait()  # hangs
            except asyncio.CancelledError:
                cancelled.append(ctx.attempt)
                raise
        return Paid(n=booked.n)

    async with SagaKit(*trip(pay, retry=Retry(max_attempts=3, initial=1)), clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        await until(kit, lambda: runs == [1])
        start = clock.now_ms()
        await time_out(kit, goal, 1, start + 1, source="choreo://agent/trip/book")  # not the coordinator's
        await time_out(kit, goal, 1, start + 4_000)
        await until(kit, lambda: cancelled == [1])
        assert runs == [1]  # the forged one changed nothing; the next attempt waits for its time
        clock.advance(4_000)
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        assert len(await kit.emitted(goal, kind="step_completed", step="pay")) == 1
        assert not await kit.emitted(goal, kind="step_attempt_failed")  # the StepTimedOut was attempt 1's record
    assert runs == [1, 2]


async def test_a_step_the_coordinator_failed_by_timeout_is_not_attempted_again() -> None:
    clock = ManualClock()
    runs: list[int] = []

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        runs.append(booked.n)
        if booked.n == 1:
            await asyncio.Event().wait()
        return Paid(n=booked.n)

    async with SagaKit(*trip(pay, retry=Retry(max_attempts=2, initial=1)), clock=clock) as kit:
        hung = await kit.given_goal("trip", {"n": 1})
        await until(kit, lambda: runs == [1])
        await time_out(kit, hung, 2, None)  # not the running attempt: nothing happens
        await time_out(kit, hung, 1, None)
        clock.advance(60_000)
        later = await kit.given_goal("trip", {"n": 2})
        await kit.expect_outcome(later, OutcomeStatus.COMPLETED)
        assert not await kit.emitted(hung, kind="step_completed", step="pay")
        assert not await kit.emitted(hung, kind="step_failed", step="pay")  # the coordinator says it failed
    assert runs == [1, 2]


async def test_a_handler_that_ignores_its_cancellation_still_publishes_its_late_result() -> None:
    clock = ManualClock()
    runs: list[int] = []
    gate = asyncio.Event()

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        runs.append(ctx.attempt)
        try:
            await gate.wait()
        except asyncio.CancelledError:
            await gate.wait()  # ignores it, and finishes later
        return Paid(n=booked.n)

    async with SagaKit(*trip(pay, retry=Retry(max_attempts=3, initial=1)), clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        await until(kit, lambda: runs == [1])
        await time_out(kit, goal, 1, clock.now_ms() + 10_000)
        gate.set()
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)  # the coordinator compensates late results
        clock.advance(10_000)  # the retry armed by the StepTimedOut was ended by the late result
        later = await kit.given_goal("trip", {"n": 2})
        await kit.expect_outcome(later, OutcomeStatus.COMPLETED)
        assert len(await kit.emitted(goal, kind="step_completed", step="pay")) == 1
    assert runs == [1, 1]  # goal 1's attempt, goal 2's


async def test_a_restarted_agent_learns_a_timeout_from_the_log_and_runs_the_next_attempt_once() -> None:
    clock = ManualClock()
    runs: list[tuple[int, int]] = []

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        runs.append((booked.n, ctx.attempt))
        if ctx.attempt == 1:
            await asyncio.Event().wait()
        return Paid(n=booked.n)

    async with SagaKit(*trip(pay, retry=Retry(max_attempts=3, initial=1)), clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        await until(kit, lambda: runs == [(1, 1)])
        await kit.restart("pay")  # killed while attempt 1 hangs: nothing of it is in the log
        await until(kit, lambda: runs == [(1, 1), (1, 1)])  # redelivered: attempt 1 again (at least once)
        await time_out(kit, goal, 1, clock.now_ms() + 5_000)
        await kit.restart("pay")  # killed again, after the StepTimedOut
        clock.advance(5_000)
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
    assert runs == [(1, 1), (1, 1), (1, 2)]


async def test_a_retry_still_waiting_for_its_time_that_times_out_is_skipped_for_the_next() -> None:
    clock = ManualClock()
    runs: list[int] = []

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        runs.append(ctx.attempt)
        if booked.n == 1 and ctx.attempt == 1:
            raise ConnectionError("payment API timed out")
        return Paid(n=booked.n)

    async with SagaKit(*trip(pay, retry=Retry(max_attempts=3, initial=60, jitter=0)), clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        await until(kit, lambda: len(logged(kit, "step_attempt_failed")) == 1)
        await time_out(kit, goal, 2, clock.now_ms() + 1_000)  # the coordinator counts attempt 2 as failed
        clock.advance(1_000)
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        clock.advance(60_000)
        later = await kit.given_goal("trip", {"n": 2})
        await kit.expect_outcome(later, OutcomeStatus.COMPLETED)
    assert runs == [1, 3, 1]  # goal 1's attempt 2 never ran, its timer ended by the StepTimedOut; then goal 2


async def test_heartbeats_are_sent_in_the_background_at_most_one_per_third_of_the_timeout() -> None:
    clock = ManualClock()
    gate = asyncio.Event()

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        ctx.heartbeat("started")
        ctx.heartbeat("dropped: too soon")
        await gate.wait()
        ctx.heartbeat("half way")
        return Paid(n=booked.n)

    async with SagaKit(*trip(pay, retry=None, heartbeat_timeout=3), clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        await until(kit, lambda: len(logged(kit, "heartbeat")) == 1)
        clock.advance(1_000)
        gate.set()
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        beats = await kit.emitted(goal, kind="heartbeat")
    assert [(data(b)["attempt"], data(b)["details"]) for b in beats] == [(1, "started"), (1, "half way")]
    assert {b.step for b in beats} == {"pay"}
