"""Rate limits (issue 12, item 4): at most so many handler starts per second per agent instance.

The bucket alone, driven by the times given; then agents on the memory log with a ManualClock: a
burst of goals against a limited step starts at most `per_second + burst` handlers in any simulated
second and every saga completes (nothing fails, nothing is dead-lettered); retries and compensation
runs take tokens too; the limit and the throttling are on the agent's presence and in `choreo agents`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from helpers.trip import Booked, Paid, logged, trip

from choreograph import AgentDefinitionError, NonRetryable, OutcomeStatus, RateLimit, Retry, StepContext
from choreograph.events import AgentPresence, load_schema, schema_root
from choreograph.runtime import PublishedGoal
from choreograph.runtime._ratelimit import TokenBucket  # the bucket: not public, tested alone
from choreograph.security import COORDINATOR
from choreograph.testing import SagaKit
from choreograph.timetravel._agents import agents_report
from choreograph.transport import MemoryTransport, TopicPartition, framework_store
from choreograph.transport._clock import ManualClock

# -- the bucket ----------------------------------------------------------------------------------


def starts(bucket: TokenBucket, times: list[int]) -> list[int]:
    """When each of a queue of attempts, ready at `times`, starts (each waits for the one before)."""
    started, free = [], 0
    for ready in times:
        at = max(ready, free)
        at = bucket.due(at)
        bucket.take(at)
        started.append(at)
        free = at
    return started


def test_a_full_bucket_lets_its_burst_through_then_one_start_per_interval() -> None:
    bucket = TokenBucket(RateLimit(per_second=5, burst=3))
    assert starts(bucket, [1_000] * 6) == [1_000, 1_000, 1_000, 1_200, 1_400, 1_600]
    assert bucket.due(1_700) == 1_800


def test_a_quiet_spell_refills_the_bucket_but_never_past_its_size() -> None:
    bucket = TokenBucket(RateLimit(per_second=10, burst=2))
    starts(bucket, [0] * 4)  # 0, 0, 100, 200
    assert starts(bucket, [10_000] * 3) == [10_000, 10_000, 10_100]


def test_a_fractional_rate_waits_seconds_between_starts() -> None:
    bucket = TokenBucket(RateLimit(per_second=0.5))
    assert starts(bucket, [0, 0, 0]) == [0, 2_000, 4_000]


def test_a_wall_clock_stepped_back_does_not_stall_the_bucket() -> None:
    bucket = TokenBucket(RateLimit(per_second=1, burst=1))
    starts(bucket, [1_000_000] * 3)  # the next token is due at 1_003_000
    assert bucket.due(500_000) == 501_000  # an hour earlier: one interval, not an hour and a bit


def test_the_burst_defaults_to_one_seconds_worth_and_at_least_one() -> None:
    assert RateLimit(per_second=20).capacity == 20
    assert RateLimit(per_second=2.5).capacity == 2
    assert RateLimit(per_second=0.1).capacity == 1
    assert RateLimit(per_second=20, burst=3).capacity == 3
    assert str(RateLimit(per_second=2.5)) == "2.5/s (burst 2)"


@pytest.mark.parametrize("bad", [{"per_second": 0}, {"per_second": -1}, {"per_second": float("inf")},
                                 {"per_second": 5, "burst": 0}, {"per_second": 5, "burst": 1.5}])
def test_a_limit_that_admits_nothing_is_refused_where_it_is_declared(bad: dict[str, float]) -> None:
    with pytest.raises(AgentDefinitionError, match="RateLimit"):
        RateLimit(**bad)  # type: ignore[arg-type]


# -- agents on the memory log --------------------------------------------------------------------


def over_limit(times: list[int], limit: RateLimit) -> list[tuple[int, int]]:
    """Each simulated second (from the first start) with more starts than per_second + burst: (second, starts)."""
    most = int(limit.per_second) + limit.capacity
    first = times[0]
    per_second: dict[int, int] = {}
    for at in times:
        per_second[(at - first) // 1000] = per_second.get((at - first) // 1000, 0) + 1
    return [(second, count) for second, count in sorted(per_second.items()) if count > most]


def at_least(count: Callable[[], int], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return count() >= n
    return check


async def drive(kit: SagaKit, clock: ManualClock, count: Callable[[], int], ideal: Callable[[int], int],
                total: int, step_ms: int = 100) -> None:
    """Advance the clock in steps; at each, wait until `count()` handlers started, at least `ideal(elapsed)`.

    `ideal` is the schedule of a bucket that is never idle: fewer starts mean the agent stalled, and
    more are caught afterwards, from the times the handlers recorded.
    """
    t0 = clock.now_ms()
    while True:
        await kit.eventually(at_least(count, min(total, ideal(clock.now_ms() - t0))))
        if count() >= total:
            return
        clock.advance(step_ms)
        assert clock.now_ms() - t0 < 60_000, f"only {count()} of {total} starts after a simulated minute"


def dead_letters(kit: SagaKit) -> int:
    topic = kit.settings.deadletter_topic
    return sum(len(kit.log.records(TopicPartition(topic, p))) for p in range(kit.log.partitions_of(topic)))


def presences(kit: SagaKit, step: str) -> list[AgentPresence]:
    store = framework_store()
    wanted = AgentPresence.type_name().encode()
    return [AgentPresence.decode(r.value or b"", store) for r in kit.log.records(
        TopicPartition(kit.settings.status_topic, 0)) if ("ce_type", wanted) in r.headers
        and AgentPresence.decode(r.value or b"", store).step == step]


async def completed(kit: SagaKit, goals: list[PublishedGoal]) -> None:
    for goal in goals:
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)


async def test_a_burst_of_goals_starts_no_more_than_the_limit_and_every_saga_completes() -> None:
    clock = ManualClock()
    limit = RateLimit(per_second=5)  # burst: one second's worth, 5
    started: list[int] = []

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        started.append(clock.now_ms())
        return Paid(n=booked.n)

    async with SagaKit(*trip(pay, retry=None, rate_limit=limit), clock=clock) as kit:
        t0 = clock.now_ms()
        goals = [await kit.given_goal("trip", {"n": n}) for n in range(30)]
        # The burst at once, then one start every 200 ms; the other inputs wait (none fails).
        await drive(kit, clock, lambda: len(started), lambda elapsed: 5 + elapsed // 200, total=30)
        await completed(kit, goals)
        assert not logged(kit, "step_failed")
        assert not logged(kit, "step_attempt_failed")
        assert dead_letters(kit) == 0
        rows = {r["step"]: r for r in await agents_report(
            kit.settings, transport=MemoryTransport(kit.log, kit.settings), clock=clock,
            verifier=kit.trust(COORDINATOR).verifier)}
    assert over_limit(started, limit) == []
    assert started[:5] == [t0] * 5
    assert started[-1] - t0 == 25 * 200, "the limit held: 25 starts after the burst, 200 ms apart"
    said = presences(kit, "pay")
    assert (said[0].rate_limit, said[0].rate_burst, said[0].throttled) == (5.0, 5, False)  # at start, no goal yet
    assert (said[1].seen_at, said[1].throttled) == (t0 + 5_000, True)  # inputs waited for tokens in between
    assert (rows["pay"]["rate_limit"], rows["pay"]["throttled"]) == ({"per_second": 5.0, "burst": 5}, True)
    assert (rows["book"]["rate_limit"], rows["book"]["throttled"]) == (None, None)
    assert all(p.rate_limit is None for p in presences(kit, "book"))


async def test_retries_take_tokens_too() -> None:
    clock = ManualClock()
    limit = RateLimit(per_second=2, burst=1)
    attempts: list[tuple[int, int]] = []  # (goal, attempt)
    started: list[int] = []

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        started.append(clock.now_ms())
        attempts.append((booked.n, ctx.attempt))
        if ctx.attempt == 1:
            raise ConnectionError("rate-limited upstream, try again")
        return Paid(n=booked.n)

    retry = Retry(max_attempts=2, initial=0.2, multiplier=1, jitter=0)
    async with SagaKit(*trip(pay, retry=retry, rate_limit=limit), clock=clock) as kit:
        goals = [await kit.given_goal("trip", {"n": n}) for n in range(8)]
        # One start every 500 ms, first attempts and retries alike (retries are due 200 ms after a failure).
        await drive(kit, clock, lambda: len(started), lambda elapsed: 1 + elapsed // 500, total=16)
        await completed(kit, goals)
        assert dead_letters(kit) == 0
    assert sorted(attempts) == [(n, a) for n in range(8) for a in (1, 2)]
    assert over_limit(started, limit) == []
    assert started[-1] - started[0] == 15 * 500


async def test_compensation_runs_take_tokens_too() -> None:
    clock = ManualClock()
    limit = RateLimit(per_second=4, burst=2)
    started: list[int] = []

    async def undo(ctx: StepContext) -> None:
        started.append(clock.now_ms())

    async def pay(ctx: StepContext, booked: Booked) -> Paid:
        raise NonRetryable("card declined")

    async with SagaKit(*trip(pay, retry=None, undo=undo, book_rate_limit=limit), clock=clock) as kit:
        def count() -> int:  # the booking's runs, then its compensations: 20 starts of one agent
            return sum(runs for (_, step), runs in kit.handler_runs.items() if step == "book") + len(started)

        t0 = clock.now_ms()
        goals = [await kit.given_goal("trip", {"n": n}) for n in range(10)]
        await drive(kit, clock, count, lambda elapsed: 2 + elapsed // 250, total=20)
        for goal in goals:
            await kit.expect_outcome(goal, OutcomeStatus.COMPENSATED)
        assert dead_letters(kit) == 0
    assert len(started) == 10
    assert over_limit(started, limit) == []
    assert started[-1] - t0 == 18 * 250, "20 starts of the agent: 2 at once, then 250 ms apart"


def test_a_presence_sent_before_rate_limits_existed_still_reads() -> None:
    previous = load_schema(schema_root() / "choreograph" / "past" / "agent_presence.1.avsc")
    payload = previous.encode({"workflow": "trip", "step": "pay", "agent": "trip.pay", "instance": "h-1-abcd",
                               "host": "h", "pid": 1, "started_at": 1, "seen_at": 2, "interval_ms": 5_000,
                               "breaker": "closed", "lag": 0, "running": 0, "stopping": False})
    presence = AgentPresence.decode(payload, framework_store())
    assert (presence.instance, presence.rate_limit, presence.rate_burst, presence.throttled) == (
        "h-1-abcd", None, None, False)
