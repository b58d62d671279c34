"""Circuit breakers (issue 11, item 5) and agent presence on the status topic.

The state machine alone, driven by outcomes and times; then an agent whose dependency is down for
30 (clock) seconds: its breaker opens, consumption pauses (the backlog waits in the log, due retries
wait), half-open probes fail until the dependency is back, and then every saga completes, none is
compensated, and each transition is a BreakerChanged on the status topic."""

from __future__ import annotations

import asyncio

from helpers.trip import Booked, Paid, logged, trip

from choreograph import Breaker, NonRetryable, OutcomeStatus, Retry, StepContext
from choreograph.events import AgentPresence, BreakerChanged, BreakerState
from choreograph.runtime._breaker import CircuitBreaker  # the state machine: not public, tested alone
from choreograph.testing import SagaKit
from choreograph.transport import TopicPartition, framework_store
from choreograph.transport._clock import ManualClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def test_it_opens_at_the_failure_ratio_once_enough_calls_were_counted() -> None:
    breaker = CircuitBreaker(Breaker(failure_ratio=0.5, window=4, min_calls=3, open_for=10))
    assert breaker.record(True, 0) is None  # one failure, one call: too few calls to judge
    assert breaker.record(False, 0) is None
    cause = breaker.record(True, 1_000)  # 2 of 3
    assert breaker.state is OPEN
    assert cause == "2 of the last 3 attempts failed"
    assert breaker.probe_at == 11_000
    assert not breaker.admit()
    assert breaker.record(False, 2_000) is None  # outcomes of attempts started before it opened: ignored
    assert breaker.state is OPEN


def test_the_window_forgets_old_failures() -> None:
    breaker = CircuitBreaker(Breaker(failure_ratio=0.5, window=4, min_calls=4))
    for failed in (True, False, False, False, True, False, False):
        assert breaker.record(failed, 0) is None
    assert breaker.state is CLOSED


def test_half_open_admits_its_probes_and_their_outcomes_decide() -> None:
    breaker = CircuitBreaker(Breaker(failure_ratio=1, window=1, min_calls=1, open_for=5, half_open_probes=2))
    breaker.record(True, 0)
    assert breaker.tick(4_999) is None
    assert breaker.tick(5_000) is not None
    assert breaker.state is HALF_OPEN
    assert [breaker.admit() for _ in range(3)] == [True, True, False]
    assert breaker.record(False, 5_100, probe=False) is None  # not a probe: says nothing
    assert breaker.record(False, 5_100, probe=True) is None
    assert breaker.record(False, 5_200, probe=True) == "2 half-open probe(s) succeeded"
    assert breaker.state is CLOSED
    assert breaker.admit()


def test_a_failed_probe_opens_it_again_for_the_full_period() -> None:
    breaker = CircuitBreaker(Breaker(failure_ratio=1, window=1, min_calls=1, open_for=5))
    breaker.record(True, 0)
    breaker.tick(5_000)
    assert breaker.admit()
    assert breaker.record(True, 6_000, probe=True) == "a half-open probe failed"
    assert breaker.state is OPEN
    assert breaker.probe_at == 11_000


def status(kit: SagaKit) -> list[BreakerChanged | AgentPresence]:
    """What the agents said on the status topic, in order."""
    store = framework_store()
    models = {m.type_name(): m for m in (BreakerChanged, AgentPresence)}
    found: list[BreakerChanged | AgentPresence] = []
    for record in kit.log.records(TopicPartition(kit.settings.status_topic, 0)):
        model = models[dict(record.headers)["ce_type"].decode()]
        found.append(model.decode(record.value or b"", store))
    return found


def transitions(kit: SagaKit) -> list[BreakerState]:
    return [e.state for e in status(kit) if isinstance(e, BreakerChanged)]


async def test_a_dependency_down_for_a_while_opens_the_breaker_and_no_saga_is_compensated() -> None:
    clock = ManualClock()
    start = clock.now_ms()
    healthy_at = start + 30_000
    calls: list[tuple[int, int, bool]] = []  # (goal, seconds since start, failed)

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        down = clock.now_ms() < healthy_at
        calls.append((booked.n, (clock.now_ms() - start) // 1000, down))
        if down:
            raise ConnectionError("rental API unavailable")
        return Paid(n=booked.n)

    breaker = Breaker(failure_ratio=0.5, window=4, min_calls=2, open_for=10, half_open_probes=1)
    agents = trip(pay, retry=Retry(max_attempts=10, initial=2, multiplier=1, jitter=0), breaker=breaker)

    async def wait_for(states: list[BreakerState]) -> None:
        await kit.eventually(lambda: asyncio.sleep(0, transitions(kit) == states))

    async with SagaKit(*agents, clock=clock) as kit:
        first = [await kit.given_goal("trip", {"n": n}) for n in range(5)]
        await wait_for([OPEN])  # after 2 failures; the first attempts started before that fail too
        # While open: consumption is paused, so later goals' inputs wait in the log.
        backlog = [await kit.given_goal("trip", {"n": n}) for n in range(5, 8)]
        await kit.eventually(lambda: asyncio.sleep(0, len(logged(kit, "step_completed")) == 8))  # book's
        clock.advance(2_000)  # retries are due, and wait for the breaker
        clock.advance(8_000)  # open for 10 s: one probe, still failing
        await wait_for([OPEN, HALF_OPEN, OPEN])
        clock.advance(10_000)
        await wait_for([OPEN, HALF_OPEN, OPEN, HALF_OPEN, OPEN])
        clock.advance(10_000)  # healthy now: the probe succeeds and it closes
        await wait_for([OPEN, HALF_OPEN, OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED])
        for goal in first + backlog:
            await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        changes = [e for e in status(kit) if isinstance(e, BreakerChanged)]
    failed = [(n, at) for n, at, down in calls if down]
    assert [at for _, at in failed if at > 0] == [10, 20]  # while open, only one probe per half-open period
    assert all(n < 5 for n, _ in failed)  # the backlog ran only once it was healthy again
    assert sorted(n for n, _, failed in calls if not failed) == list(range(8))
    assert {(e.workflow, e.step, e.agent) for e in changes} == {("trip", "pay", "trip.pay")}
    assert changes[0].cause == "2 of the last 2 attempts failed"


async def test_each_agent_instance_says_it_is_alive_and_when_it_leaves() -> None:
    clock = ManualClock()

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        return Paid(n=booked.n)

    async with SagaKit(*trip(pay, retry=None), clock=clock) as kit:
        await kit.expect_outcome(await kit.given_goal("trip", {"n": 1}), OutcomeStatus.COMPLETED)
        await kit.eventually(lambda: asyncio.sleep(0, len(status(kit)) == 2))  # one per agent, at start
        clock.advance(5_000)
        await kit.eventually(lambda: asyncio.sleep(0, len(status(kit)) == 4))
    said = [e for e in status(kit) if isinstance(e, AgentPresence)]
    pay_said = [e for e in said if e.step == "pay"]
    assert [e.stopping for e in pay_said] == [False, False, True]
    assert len({e.instance for e in pay_said}) == 1
    instance = pay_said[0].instance
    assert instance.startswith(f"{pay_said[0].host}-{pay_said[0].pid}-")
    assert pay_said[1].seen_at - pay_said[0].seen_at == 5_000
    assert pay_said[0].interval_ms == 5_000
    assert pay_said[0].breaker == "closed"
    assert pay_said[-1].running == 0
    assert pay_said[-1].lag >= -1


async def test_a_probe_refused_for_good_still_answers_the_breaker() -> None:
    # A half-open probe whose call came back with a business refusal (NonRetryable: the dependency
    # answered) was recorded nowhere: the breaker stayed half-open with no probe left, and the
    # agent never started another attempt.
    clock = ManualClock()
    healthy_at = clock.now_ms() + 10_000
    refused: list[int] = []

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        if clock.now_ms() < healthy_at:
            raise ConnectionError("rental API unavailable")
        if not refused:
            refused.append(booked.n)
            raise NonRetryable("card declined")
        return Paid(n=booked.n)

    breaker = Breaker(failure_ratio=0.5, window=2, min_calls=2, open_for=10, half_open_probes=1)
    async with SagaKit(*trip(pay, retry=Retry(max_attempts=10, initial=2, multiplier=1, jitter=0),
                             breaker=breaker), clock=clock) as kit:
        goals = [await kit.given_goal("trip", {"n": n}) for n in range(3)]
        await kit.eventually(lambda: asyncio.sleep(0, transitions(kit) == [OPEN]))
        clock.advance(10_000)  # half-open: the probe is refused for good
        await kit.eventually(lambda: asyncio.sleep(0, bool(refused)))
        clock.advance(2_000)  # the other retries are due
        for n, goal in enumerate(goals):
            want = OutcomeStatus.COMPENSATED if n in refused else OutcomeStatus.COMPLETED
            await kit.expect_outcome(goal, want)
    assert transitions(kit) == [OPEN, HALF_OPEN, CLOSED]


def test_a_probe_never_run_is_given_back() -> None:
    breaker = CircuitBreaker(Breaker(failure_ratio=1, window=1, min_calls=1, open_for=5, half_open_probes=1))
    breaker.record(True, 0)
    breaker.tick(5_000)
    assert breaker.admit()
    assert not breaker.admit()
    breaker.give_back()  # the probe's attempt was dropped before it started (timed out, its workflow ended)
    assert breaker.admit()
