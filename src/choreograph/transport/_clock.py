"""Time as services see it: milliseconds since the epoch, and a way to wait for a moment.

Retry timers, deadlines, heartbeats and breakers read time only through a Clock, so the test kit
can run them on the memory log with a ManualClock it advances by hand (no test sleeps for a timer).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Milliseconds since the epoch, and waiting until one."""

    def now_ms(self) -> int:
        """The current time, Unix milliseconds."""
        ...

    async def sleep_until(self, when_ms: int) -> None:
        """Return once `now_ms()` has reached `when_ms` (at once if it has)."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        """The current time, Unix milliseconds."""
        return time.time_ns() // 1_000_000

    async def sleep_until(self, when_ms: int) -> None:
        """Sleep until the wall clock reaches `when_ms`."""
        delay = when_ms - self.now_ms()
        if delay > 0:
            await asyncio.sleep(delay / 1000)


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that moves only when told: `clock.advance(10_000)` wakes every sleeper now due.

    Args:
        start_ms: The time it starts at (default: the wall clock's now, so record timestamps look real).
    """

    def __init__(self, start_ms: int | None = None) -> None:
        self._now = SYSTEM_CLOCK.now_ms() if start_ms is None else start_ms
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now_ms(self) -> int:
        """The current time, Unix milliseconds."""
        return self._now

    async def sleep_until(self, when_ms: int) -> None:
        """Wait until the clock has been advanced to `when_ms`."""
        if when_ms <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when_ms, next(self._order), future))
        await future

    def advance(self, ms: int) -> None:
        """Move the clock `ms` forward and wake the sleepers now due (they run at the next await)."""
        self.set(self._now + ms)

    def set(self, now_ms: int) -> None:
        """Move the clock to `now_ms` (never backwards) and wake the sleepers now due."""
        self._now = max(self._now, now_ms)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        """How many waits are pending (a test can wait for a timer to be set before advancing)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())
