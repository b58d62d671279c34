"""Step deadlines, workflow deadlines and late results, end to end on the memory log with a ManualClock.

The coordinator keeps the timers; an agent that never answers is a paused (or stopped) one, and a
late result is written as the step's agent would write it. Time moves only when a test advances
the clock: no test sleeps for a timer.
"""

from __future__ import annotations

import asyncio

import pytest

from choreograph import (
    Agent,
    CompensationRequested,
    HistoryEntry,
    OutcomeStatus,
    PublishedGoal,
    Retry,
    StepContext,
)
from choreograph.cli._input import duration
from choreograph.events import (
    COORDINATOR_SOURCE,
    Envelope,
    Kind,
    StepAttemptFailed,
    StepHeartbeat,
    StepTimedOut,
    derived_id,
)
from choreograph.examples.report._events import AnalysisCompleted, ReportGoal, ResearchCompleted
from choreograph.saga import catalog_for, check, fold
from choreograph.security import Identity
from choreograph.testing import COORDINATOR, SagaKit
from choreograph.transport import MemoryTransport, Record, TopicPartition
from choreograph.transport._clock import ManualClock

PAY = "choreo://agent/trip/pay"


def trip(*, timeout: float | None = 10, retry: Retry | None = None, heartbeat_timeout: float | None = None,
         undo_gate: asyncio.Event | None = None) -> tuple[Agent, Agent]:
    """A two-step workflow: `book` (from the goal), then `pay` (with the deadline under test); both undoable."""
    book = Agent("trip", "book")
    pay = Agent("trip", "pay", timeout=timeout, retry=retry, heartbeat_timeout=heartbeat_timeout)

    @book.handler
    async def do_book(ctx: StepContext, goal: ReportGoal) -> ResearchCompleted:
        return ResearchCompleted(topic=goal.topic, sources=["s"])

    @book.compensation
    async def undo_book(ctx: StepContext, request: CompensationRequested) -> None:
        if undo_gate is not None:
            await undo_gate.wait()

    @pay.handler
    async def do_pay(ctx: StepContext, booked: ResearchCompleted) -> AnalysisCompleted:
        return AnalysisCompleted(topic=booked.topic, findings=["paid"])

    @pay.compensation
    async def undo_pay(ctx: StepContext, request: CompensationRequested) -> None:
        return None

    return book, pay


async def booked(kit: SagaKit, goal: PublishedGoal) -> int:
    """When book's result (pay's input) was logged: pay's first deadline counts from there."""
    async def find() -> int | None:
        found = await kit.emitted(goal, kind="step_completed", step="book")
        return found[0].timestamp if found else None
    found = await kit.eventually(find)
    assert isinstance(found, int)
    return found


async def timeouts(kit: SagaKit, goal: PublishedGoal) -> list[HistoryEntry]:
    """The StepTimedOut events the coordinator published (not a forged one)."""
    return [e for e in await kit.emitted(goal, kind="step_timed_out") if e.source == COORDINATOR_SOURCE]


async def logged(kit: SagaKit, goal: PublishedGoal, kind: str, step: str | None = None, count: int = 1) -> None:
    async def enough() -> bool:
        return len(await kit.emitted(goal, kind=kind, step=step)) >= count
    await kit.eventually(enough)


async def late_result(kit: SagaKit, goal: PublishedGoal) -> None:
    """pay's result, written as pay's agent writes it (its source, its deterministic id)."""
    await kit.given_event(goal, AnalysisCompleted(topic="late", findings=["paid anyway"]), step="pay")


def dead_letters(kit: SagaKit) -> list[Record]:
    return list(kit.log.records(TopicPartition(kit.settings.deadletter_topic, 0)))


async def dead_lettered(kit: SagaKit) -> str:
    """The reason of the first dead letter, once there is one."""
    async def first() -> str | None:
        found = dead_letters(kit)
        return next((v.decode() for k, v in found[0].headers if k == "dlq_reason"), "?") if found else None
    return str(await kit.eventually(first))


async def committed_to_end(kit: SagaKit, goal: PublishedGoal) -> None:
    """Wait until the coordinator's committed position on the goal's partition is the partition's end."""
    tp = TopicPartition(kit.settings.events_topic, goal.partition)

    async def done() -> bool:
        return (kit.log.committed(kit.settings.coordinator_group, tp) or 0) >= kit.log.end_offset(tp)
    await kit.eventually(done)


async def forged(kit: SagaKit, goal: PublishedGoal, event: StepTimedOut | StepAttemptFailed | StepHeartbeat,
                 kind: Kind, source: str) -> None:
    """An event about pay's attempts from `source`, written by a trusted party that may not say it: the
    booking agent, with its real key (an unsigned one is refused before any rule is reached)."""
    envelope = Envelope.new(type=event.type_name(), source=source, workflow="trip", workflow_id=goal.workflow_id,
                            kind=kind, step="pay")
    producer = MemoryTransport(kit.log, kit.settings).producer()
    await producer.start()
    try:
        value = event.encode()
        headers = kit.signed(envelope.key, value, envelope.headers(), signed_as=Identity.agent("trip", "book"))
        await producer.send_and_wait(kit.settings.events_topic, value=value, key=envelope.key, headers=headers,
                                     partition=goal.partition)
    finally:
        await producer.stop()


async def replays_identically(kit: SagaKit, goal: PublishedGoal) -> None:
    """What the live coordinator decided (timers included) is what the golden replayer decides."""
    entries = await kit.events(goal)
    assert [str(m) for m in check(entries, {}, catalog_for(entries), None)] == []


async def test_a_step_whose_agent_never_answers_times_out_after_its_timeout_and_the_saga_compensates() -> None:
    clock = ManualClock()
    async with SagaKit(*trip(timeout=10), clock=clock) as kit:
        await kit.stop_service("pay")  # gone for good; its contract stays announced
        goal = await kit.given_goal("trip", {"topic": "t"})
        inputs_at = await booked(kit, goal)
        clock.advance(inputs_at + 9_999 - clock.now_ms())
        # Not before: a heartbeat stamped 1 ms before the deadline is folded (and pay's deadline
        # checked against its time) before the forged timeout behind it is dead-lettered.
        await kit.given_event(goal, StepHeartbeat(step="pay", attempt=1), step="pay", kind=Kind.HEARTBEAT)
        await forged(kit, goal, StepTimedOut(step="pay", attempt=1, reason="forged", deadline=0), Kind.STEP_TIMED_OUT,
                     PAY)
        assert "agent:trip/book may publish only its own step's" in await dead_lettered(kit)
        assert await timeouts(kit, goal) == []
        clock.advance(1)
        outcome = await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="pay", compensated=["book"])
        assert outcome.reason == "step 'pay' attempt 1 timed out after 10.0 s"
        [timed_out] = await timeouts(kit, goal)
        assert timed_out.data == {"step": "pay", "attempt": 1, "reason": outcome.reason,
                                  "deadline": inputs_at + 10_000, "next_attempt_at": None}
        assert timed_out.timestamp >= inputs_at + 10_000
        await replays_identically(kit, goal)


async def test_a_timed_out_attempt_is_retried_per_the_steps_policy_and_the_last_one_fails_the_step() -> None:
    clock = ManualClock()
    async with SagaKit(*trip(timeout=10, retry=Retry(max_attempts=2, initial=1, jitter=0)), clock=clock) as kit:
        kit.pause_step("pay")
        goal = await kit.given_goal("trip", {"topic": "t"})
        inputs_at = await booked(kit, goal)
        clock.advance(inputs_at + 10_000 - clock.now_ms())
        await logged(kit, goal, "step_timed_out")
        [first] = await timeouts(kit, goal)
        assert first.data is not None
        assert first.data["next_attempt_at"] == inputs_at + 11_000  # the step's retry policy
        assert await kit.emitted(goal, kind="outcome") == []  # not failed: attempt 2 is due
        clock.advance(11_000)  # attempt 2 runs from 11 s to 21 s
        outcome = await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="pay", compensated=["book"])
        assert outcome.reason == "step 'pay' attempt 2 timed out after 10.0 s"
        second = (await timeouts(kit, goal))[1]
        assert second.data == {"step": "pay", "attempt": 2, "reason": outcome.reason, "deadline": inputs_at + 21_000,
                               "next_attempt_at": None}
        assert second.event_id != first.event_id
        state = fold(await kit.events(goal), catalog_for(await kit.events(goal))).json()
        assert state["attempts"]["pay"] == {"attempt": 2, "failed": [1, 2], "timed_out": [1, 2],
                                            "next_attempt_at": None, "heartbeat_at": None, "compensation_failed": 0}
        kit.resume_step("pay")
        await replays_identically(kit, goal)


async def test_a_workflow_deadline_times_out_what_still_runs_compensates_and_ends_timed_out() -> None:
    clock = ManualClock()
    async with SagaKit(*trip(timeout=None), clock=clock) as kit:
        kit.pause_step("pay")
        goal = await kit.given_goal("trip", {"topic": "t"}, deadline=30)
        assert goal.deadline_ms == clock.now_ms() + 30_000
        await booked(kit, goal)
        clock.advance(29_999)
        await kit.given_event(goal, StepHeartbeat(step="pay", attempt=1), step="pay", kind=Kind.HEARTBEAT)
        await forged(kit, goal, StepAttemptFailed(step="pay", attempt=1, reason="x", error_type="X",
                                                  next_attempt_at=0), Kind.STEP_ATTEMPT_FAILED, "choreo://agent/trip/book")
        assert "agent:trip/book may publish only its own step's" in await dead_lettered(kit)
        assert await timeouts(kit, goal) == []
        clock.advance(1)
        outcome = await kit.expect_outcome(goal, OutcomeStatus.TIMED_OUT, failed_step="pay", compensated=["book"])
        assert outcome.reason is not None
        assert outcome.reason.startswith("workflow deadline ")
        assert "before step 'pay' attempt 1 finished" in outcome.reason
        [timed_out] = await timeouts(kit, goal)
        assert timed_out.data is not None
        assert timed_out.data["deadline"] == goal.deadline_ms
        assert fold(await kit.events(goal), catalog_for(await kit.events(goal))).json()["deadline"] == goal.deadline_ms
        kit.resume_step("pay")
        await replays_identically(kit, goal)


async def test_a_late_result_while_compensating_is_compensated_too() -> None:
    clock, gate = ManualClock(), asyncio.Event()
    async with SagaKit(*trip(timeout=10, undo_gate=gate), clock=clock) as kit:
        kit.pause_step("pay")
        goal = await kit.given_goal("trip", {"topic": "t"})
        clock.advance(await booked(kit, goal) + 10_000 - clock.now_ms())
        await logged(kit, goal, "compensation_requested", "book")
        await late_result(kit, goal)  # book's compensation is held: the saga is still compensating
        await logged(kit, goal, "compensation_requested", "pay")
        gate.set()
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="pay", compensated=["book", "pay"])
        kinds = [(e.kind, e.step) for e in await kit.events(goal)]
        assert kinds.index(("step_completed", "pay")) < kinds.index(("outcome", None))
        kit.resume_step("pay")
        await replays_identically(kit, goal)


@pytest.mark.parametrize("restart", [False, True], ids=["live", "after-a-coordinator-restart"])
async def test_a_late_result_after_the_outcome_gets_its_own_compensation_request(restart: bool) -> None:
    clock = ManualClock()
    async with SagaKit(*trip(timeout=10), clock=clock, partitions=1) as kit:
        kit.pause_step("pay")
        goal = await kit.given_goal("trip", {"topic": "t"})
        clock.advance(await booked(kit, goal) + 10_000 - clock.now_ms())
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, compensated=["book"])
        if restart:
            # Killed once its position passed the outcome: the look-back rebuilds the ended saga.
            await committed_to_end(kit, goal)
            await kit.restart(COORDINATOR)
        await late_result(kit, goal)
        await logged(kit, goal, "compensation_completed", "pay")  # pay's agent undid its late result
        events = await kit.events(goal)
        after = [(e.kind, e.step) for e in events[[e.kind for e in events].index("outcome") + 1:]]
        assert after == [("step_completed", "pay"), ("compensation_requested", "pay"),
                         ("compensation_completed", "pay")]
        request = next(e for e in events if e.kind == "compensation_requested" and e.step == "pay")
        assert request.event_id == derived_id(goal.workflow_id, "compensation_requested", "pay")
        assert request.data is not None
        assert request.data["failed_step"] == "pay"
        assert len(await kit.emitted(goal, kind="outcome")) == 1
        kit.resume_step("pay")
        await replays_identically(kit, goal)


async def test_a_coordinator_killed_between_setting_a_deadline_and_its_expiry_still_times_it_out() -> None:
    clock = ManualClock()
    async with SagaKit(*trip(timeout=10), clock=clock) as kit:
        kit.pause_step("pay")
        goal = await kit.given_goal("trip", {"topic": "t"})
        inputs_at = await booked(kit, goal)
        await logged(kit, goal, "other")  # the coordinator fixed the graph: pay's deadline is set
        await kit.restart(COORDINATOR)  # kill -9: its timers were only in memory
        clock.advance(inputs_at + 10_000 - clock.now_ms())
        await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="pay", compensated=["book"])
        assert len(await timeouts(kit, goal)) == 1
        kit.resume_step("pay")


async def test_heartbeats_keep_an_attempt_alive_and_silence_times_it_out() -> None:
    clock = ManualClock()
    async with SagaKit(*trip(timeout=60, heartbeat_timeout=5), clock=clock) as kit:
        kit.pause_step("pay")
        goal = await kit.given_goal("trip", {"topic": "t"})
        inputs_at = await booked(kit, goal)
        for _ in range(3):  # a heartbeat every 4 s: 12 s alive, past three heartbeat timeouts
            clock.advance(4_000)
            await kit.given_event(goal, StepHeartbeat(step="pay", attempt=1, details="working"), step="pay",
                                  kind=Kind.HEARTBEAT)
            await logged(kit, goal, "heartbeat", "pay", count=_ + 1)
        clock.advance(5_000)
        outcome = await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED, failed_step="pay")
        assert outcome.reason == "step 'pay' attempt 1: no heartbeat for 5.0 s"
        [timed_out] = await timeouts(kit, goal)
        assert timed_out.data is not None
        assert timed_out.data["deadline"] == inputs_at + 17_000
        kit.resume_step("pay")
        await replays_identically(kit, goal)


async def test_a_failed_attempt_is_counted_and_does_not_fail_the_step() -> None:
    clock = ManualClock()
    async with SagaKit(*trip(timeout=None, retry=Retry(max_attempts=3)), clock=clock) as kit:
        kit.pause_step("pay")
        goal = await kit.given_goal("trip", {"topic": "t"})
        await booked(kit, goal)
        for attempt in (1, 2):
            await kit.given_event(goal, StepAttemptFailed(step="pay", attempt=attempt, reason="rate limited",
                                                          error_type="HTTPError", next_attempt_at=clock.now_ms() + 1),
                                  step="pay", kind=Kind.STEP_ATTEMPT_FAILED)
        await logged(kit, goal, "step_attempt_failed", "pay", count=2)
        state = fold(await kit.events(goal), catalog_for(await kit.events(goal))).json()
        assert (state["status"], state["failed"]) == ("running", {})
        assert (state["attempts"]["pay"]["attempt"], state["attempts"]["pay"]["failed"]) == (3, [1, 2])
        kit.resume_step("pay")  # attempt 3 succeeds
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        await replays_identically(kit, goal)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("10m", 600.0), ("1h30m", 5400.0), ("500ms", 0.5),
                                               ("2.5", 2.5), ("1d", 86400.0)])
def test_publish_deadline_durations(text: str, seconds: float) -> None:
    assert duration(text, "--deadline") == seconds


@pytest.mark.parametrize("text", ["", "soon", "10 minutes", "-5s", "0", "1h-30m"])
def test_a_deadline_that_is_no_duration_is_a_usage_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    with pytest.raises(typer.Exit) as exited:
        duration(text, "--deadline")
    assert exited.value.exit_code == 2
    assert "--deadline" in capsys.readouterr().err


async def test_the_coordinator_logs_once_a_step_that_sagas_wait_for_and_no_live_agent_serves(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    async with SagaKit(*trip(timeout=None), clock=clock) as kit:
        await kit.stop_service("pay")  # its last presence says it is stopping
        first = await kit.given_goal("trip", {"topic": "t"})
        await booked(kit, first)
        wanted = "step pay of workflow 'trip' has no live agent"

        def warned() -> int:
            return sum(wanted in r.getMessage() for r in caplog.records)

        async def logged_once() -> bool:
            return warned() == 1

        clock.advance(6_000)  # past the coordinator's liveness check period
        await kit.eventually(logged_once)
        second = await kit.given_goal("trip", {"topic": "u"})
        await booked(kit, second)
        clock.advance(6_000)
        await kit.start_service("pay")
        await kit.expect_outcome(first, OutcomeStatus.COMPLETED)
        await kit.expect_outcome(second, OutcomeStatus.COMPLETED)
        assert warned() == 1, "logged once per step, not once per saga or per check"
