"""A two-step trip for the fault tests: `book` (compensable) then `pay`, each test saying how `pay` fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from choreograph import Agent, Breaker, CompensationRequested, Event, RateLimit, Retry, StepContext
from choreograph.runtime import PublishedGoal
from choreograph.saga import HistoryEntry
from choreograph.testing import SagaKit
from choreograph.transport import MemoryRecord, TopicPartition


def _schema(name: str) -> dict[str, object]:
    return {"type": "record", "name": name, "namespace": "triptest", "fields": [{"name": "n", "type": "long"}]}


class Goal(Event, schema=_schema("Goal")):
    n: int


class Booked(Event, schema=_schema("Booked")):
    n: int


class Paid(Event, schema=_schema("Paid")):
    n: int


Pay = Callable[[StepContext, Booked], Awaitable[Paid]]


def trip(pay: Pay, *, retry: Retry | None, undo: Callable[[StepContext], Awaitable[None]] | None = None,
         book_retry: Retry | None = None, breaker: Breaker | None = None,
         heartbeat_timeout: float | None = None, rate_limit: RateLimit | None = None,
         book_rate_limit: RateLimit | None = None) -> tuple[Agent, Agent]:
    """The two agents of a trip; `pay` is the step under test, `undo` the booking's compensation."""
    book = Agent("trip", "book", retry=book_retry, rate_limit=book_rate_limit)

    @book.handler
    async def book_it(ctx: StepContext, goal: Goal) -> Booked:
        return Booked(n=goal.n)

    @book.compensation
    async def cancel(ctx: StepContext, request: CompensationRequested) -> None:
        if undo is not None:
            await undo(ctx)

    payer = Agent("trip", "pay", retry=retry, breaker=breaker, heartbeat_timeout=heartbeat_timeout,
                  rate_limit=rate_limit)
    payer.handler(pay)
    return book, payer


async def agent_committed(kit: SagaKit, step: str) -> None:
    """Wait until the agent of `step` has committed every record of the events topic (nothing pinned)."""
    group = kit.settings.agent_group("trip", step)
    await kit.eventually(lambda: asyncio.sleep(0, kit.lag([group])[group] == 0))


def logged(kit: SagaKit, kind: str, topic: str | None = None) -> list[MemoryRecord]:
    """The records of a kind (ce_kind) on the kit's events topic (or `topic`), straight from the memory log."""
    name = topic or kit.settings.events_topic
    wanted = ("ce_kind", kind.encode())
    return [r for p in range(kit.log.partitions_of(name)) for r in kit.log.records(TopicPartition(name, p))
            if wanted in r.headers]


async def attempts_failed(kit: SagaKit, goal: PublishedGoal, count: int) -> list[HistoryEntry]:
    """Wait until `count` StepAttemptFailed of the workflow are in the log; return them."""
    async def enough() -> list[HistoryEntry] | None:
        found = await kit.emitted(goal, kind="step_attempt_failed")
        return found if len(found) >= count else None

    found = await kit.eventually(enough)
    assert isinstance(found, list)
    return found


def data(entry: HistoryEntry) -> dict[str, Any]:
    """An entry's decoded payload (it must have one)."""
    assert entry.data is not None, entry.error
    return entry.data
