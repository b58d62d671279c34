"""Guards on a step's result (issue 12, item 5), on the memory log with a ManualClock: a trip books
(compensable), then pays; guards on `pay` check its Paid result before anything is published."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from helpers.trip import Booked, Paid, attempts_failed, data, logged, trip

from choreograph import (
    Agent,
    AgentDefinitionError,
    Event,
    GuardRejected,
    OutcomeStatus,
    Retry,
    StepContext,
    forbid,
    max_bytes,
)
from choreograph.testing import SagaKit
from choreograph.transport._clock import ManualClock

RETRY = Retry(max_attempts=3, initial=1, jitter=0)


class Note(Event, schema={"type": "record", "name": "Note", "namespace": "guardtest",
                          "fields": [{"name": "text", "type": "string"}]}):
    text: str


async def pay(ctx: StepContext, booked: Booked) -> Paid:
    ctx.emit(Note(text=f"charged attempt {ctx.attempt}"))  # a side event: only a passed result sends it
    return Paid(n=booked.n)


Check = Callable[[Paid], object]  # a guard under test (some return what a guard must not)


def guarded(*guards: Check, retry: Retry | None = RETRY) -> tuple[Agent, Agent]:
    book, payer = trip(pay, retry=retry)
    for guard in guards:
        payer.guard(guard)  # type: ignore[type-var]  # a test's guard may return what a guard must not
    return book, payer


def pay_records(kit: SagaKit, kind: str) -> list[object]:
    return [r for r in logged(kit, kind) if ("ce_step", b"pay") in r.headers]


def notes(kit: SagaKit) -> list[object]:
    """The side events `pay` emitted that are in the log."""
    return [r for r in logged(kit, "other") if ("ce_type", Note.type_name().encode()) in r.headers]


async def test_a_rejected_result_is_retried_then_fails_the_step_and_the_saga_compensates() -> None:
    clock = ManualClock()
    seen: list[int] = []

    def too_cheap(paid: Paid) -> str | None:
        seen.append(paid.n)
        return "the amount is below the minimum charge"

    async with SagaKit(*guarded(too_cheap), clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 7})
        for count in (1, 2):
            await attempts_failed(kit, goal, count)
            clock.advance(10_000)
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="pay", compensated=["book"])
        [failed] = await kit.emitted(goal, kind="step_failed")
        attempts = await kit.emitted(goal, kind="step_attempt_failed")
        assert not pay_records(kit, "step_completed")  # nothing the guard rejected was published
        assert not notes(kit)  # nor the side events of the rejected attempts
    assert seen == [7, 7, 7]
    reason = "guard test_a_rejected_result_is_retried_then_fails_the_step_and_the_saga_compensates.<locals>." \
             "too_cheap rejected the result: the amount is below the minimum charge"
    assert (data(failed)["error_type"], data(failed)["reason"], data(failed)["attempts"]) == (
        "GuardRejected", reason, 3)
    assert [data(a)["error_type"] for a in attempts] == ["GuardRejected", "GuardRejected"]


async def test_a_result_every_guard_passes_completes_the_saga_with_its_side_events() -> None:
    calls: list[str] = []

    def first(paid: Paid) -> None:
        calls.append("first")

    def second(paid: Paid) -> str | None:
        calls.append("second")
        return None if paid.n < 100 else "too much"

    async with SagaKit(*guarded(first, second)) as kit:
        goal = await kit.given_goal("trip", {"n": 3})
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        assert len(pay_records(kit, "step_completed")) == 1
        assert len(notes(kit)) == 1
    assert calls == ["first", "second"]


async def test_the_first_rejection_wins_and_later_guards_do_not_run() -> None:
    calls: list[str] = []

    def no(paid: Paid) -> str:
        calls.append("no")
        return "first says no"

    def never(paid: Paid) -> None:
        calls.append("never")

    async with SagaKit(*guarded(no, never, retry=None)) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="pay", compensated=["book"])
        [failed] = await kit.emitted(goal, kind="step_failed")
    assert calls == ["no"]
    assert data(failed)["reason"].endswith("no rejected the result: first says no")


async def test_a_guard_that_raises_rejects_with_a_reason_naming_the_exception() -> None:
    def broken(paid: Paid) -> None:
        raise ValueError("cannot parse the amount")

    async def rude(paid: Paid) -> bool:  # async guards are awaited; a bool is not a verdict
        return True

    for guard, says in ((broken, "it raised ValueError('cannot parse the amount')"), (rude, "it returned True")):
        async with SagaKit(*guarded(guard, retry=None)) as kit:
            goal = await kit.given_goal("trip", {"n": 1})
            await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="pay", compensated=["book"])
            [failed] = await kit.emitted(goal, kind="step_failed")
        assert data(failed)["error_type"] == "GuardRejected"
        assert says in data(failed)["reason"]
        assert not pay_records(kit, "step_completed")


async def test_guard_rejected_listed_as_non_retryable_fails_the_step_at_once() -> None:
    retry = Retry(max_attempts=5, initial=1, non_retryable=(GuardRejected,))
    async with SagaKit(*guarded(lambda paid: "never good enough", retry=retry), clock=ManualClock()) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="pay", compensated=["book"])
        [failed] = await kit.emitted(goal, kind="step_failed")
        assert not await kit.emitted(goal, kind="step_attempt_failed")
    assert (data(failed)["attempts"], data(failed)["error_type"]) == (1, "GuardRejected")


async def test_a_result_rejected_once_passes_on_the_next_attempt() -> None:
    clock = ManualClock()
    verdicts = iter(["the model answered off-topic", None])

    async with SagaKit(*guarded(lambda paid: next(verdicts)), clock=clock) as kit:
        goal = await kit.given_goal("trip", {"n": 1})
        await attempts_failed(kit, goal, 1)
        clock.advance(10_000)
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        assert len(notes(kit)) == 1  # the passed attempt's side event only


async def test_a_slow_guard_holds_its_own_run_not_the_agent() -> None:
    release = asyncio.Event()

    async def slow(paid: Paid) -> None:  # e.g. a moderation API call
        if paid.n == 1:
            await release.wait()

    async with SagaKit(*guarded(slow)) as kit:
        held = await kit.given_goal("trip", {"n": 1})
        other = await kit.given_goal("trip", {"n": 2})
        await kit.expect_outcome(other, OutcomeStatus.COMPLETED)
        assert not await kit.emitted(held, kind="outcome")
        release.set()
        await kit.expect_outcome(held, OutcomeStatus.COMPLETED)


def test_the_ready_guards() -> None:
    small, big = Note(text="ok"), Note(text="x" * 100)
    limit = max_bytes(64)
    assert limit(small) is None
    assert limit(big) == f"the result is {len(big.encode())} bytes, over 64"
    assert limit.__qualname__ == "max_bytes(64)"
    banned = forbid(r"sk-[a-z0-9]{8}")
    assert banned(Note(text="nothing to see")) is None
    assert banned(Note(text="key sk-abcdef12 inside")) == "field text matches the banned pattern 'sk-[a-z0-9]{8}'"
    assert forbid("x", field="text")(Note(text="xx")) == "field text matches the banned pattern 'x'"
    with pytest.raises(KeyError):
        forbid("x", field="missing")(small)


def test_a_guard_that_cannot_take_the_result_is_a_definition_error() -> None:
    agent = Agent("trip", "pay")
    with pytest.raises(AgentDefinitionError, match="only argument"):
        agent.guard(lambda: None)  # type: ignore[type-var]
    with pytest.raises(AgentDefinitionError, match="function of the result"):
        agent.guard("not a function")  # type: ignore[type-var]
    with pytest.raises(AgentDefinitionError):
        max_bytes(0)
    with pytest.raises(AgentDefinitionError):
        forbid("(")
