"""Commit positions that never pass a record whose work is still pending.

Pending: in flight, or waiting for a join, or an unfinished saga; so a crash redelivers exactly
what was not done.
"""

from __future__ import annotations

import time


class PartitionProgress:
    """A partition's next offset, the pinned offsets a commit must not pass, its restore bracket.

    Args:
        next_offset: The next offset to read (also taken as committed).
        partition: The partition's number.
    """

    __slots__ = ("_pins", "bracket_at", "committed", "history_until", "next", "partition")

    def __init__(self, next_offset: int, partition: int = -1) -> None:
        self.partition = partition
        self.next = next_offset
        self.committed = next_offset
        self._pins: dict[int, int] = {}
        self.bracket_at: int | None = None  # offset of the open bracket's RestoreStarted
        self.history_until: int | None = None  # records stamped up to this (ms) are restored history

    def is_history(self, timestamp: int) -> bool:
        return self.history_until is not None and timestamp <= self.history_until

    def seen(self, offset: int) -> None:
        self.next = offset + 1

    def pin(self, offset: int) -> None:
        self._pins[offset] = self._pins.get(offset, 0) + 1

    def unpin(self, offset: int) -> None:
        count = self._pins.get(offset, 0) - 1
        if count > 0:
            self._pins[offset] = count
        else:
            self._pins.pop(offset, None)

    def committable(self) -> int:
        return min(self._pins, default=self.next)


class Cadence:
    """Called, true at most once per interval: when a periodic commit should happen."""

    __slots__ = ("_interval", "_next")

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._next = 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self._interval
        return True
