"""Reading every offset in order from a broker that can show a later offset before an earlier one.

Kafka's high watermark only covers offsets that are all readable, so a consumer's position moves
one offset at a time (a compacted topic, or a transaction's markers, are the only holes). Tansu
does not keep that rule: with several producers appending to one partition, a fetch can return
offset N+1 while N is not readable yet, and the consumer's position then moves past N for good.
Measured (`python -m bench.probes.fetch_gaps`): 8 producers, 2,000 records on one partition, 0 to
3 offsets skipped per run by a live reader, every one of them in the log when read again, and
readable at the first re-fetch, 7 ms later. In a saga that lost a review agent's input and
stalled the workflow.

`Contiguity` holds such a record back: the records before the hole are passed on, the consumer
seeks back to the hole, and the next fetch reads it. A hole still there after `HOLD_S` is taken as
a real one (logged), so no partition is held forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

# How long a hole may stay open before it is read past. The measured holes closed at the first
# re-fetch (about 7 ms); a second is far past that and still short beside a step timeout.
HOLD_S = 1.0


class Contiguity:
    """Which offset each partition's next record should have, and what to do when it does not.

    Args:
        checked: Whether a topic's offsets must be contiguous (default: every topic's).
        clock: Monotonic seconds (tests pass their own).

    Attributes:
        refetched: How many times a hole sent the consumer back (for tests and diagnostics).
    """

    __slots__ = ("_checked", "_clock", "_expected", "_holes", "refetched")

    def __init__(self, checked: Callable[[str], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._checked = checked
        self._clock = clock
        self._expected: dict[Any, int] = {}
        self._holes: dict[Any, tuple[int, float]] = {}
        self.refetched = 0

    def expect(self, tp: Any, offset: int) -> None:
        """The partition's next record is at `offset` (after a seek, or a position read).

        Args:
            tp: The partition.
            offset: The offset.
        """
        self._expected[tp] = offset

    def expects(self, tp: Any) -> bool:
        """Whether the partition's next offset is known.

        Args:
            tp: The partition.

        Returns:
            True if it is.
        """
        return tp in self._expected

    def forget(self, tps: Iterable[Any] | None = None) -> None:
        """The next offset of these partitions (default: all) is no longer known.

        A rebalance, a new assignment or a reset moved them.

        Args:
            tps: The partitions.
        """
        if tps is None:
            self._expected.clear()
            self._holes.clear()
            return
        for tp in tps:
            self._expected.pop(tp, None)
            self._holes.pop(tp, None)

    def admit(self, tp: Any, records: list[Any]) -> tuple[list[Any], int | None]:
        """The records to pass on, and the offset to seek back to if a hole was found.

        Args:
            tp: The partition (its `topic` is checked).
            records: The fetched records, in offset order.

        Returns:
            The records before the first hole still held, and the hole's offset (None: no hole).
        """
        if not records or (self._checked is not None and not self._checked(tp.topic)):
            return records, None
        expected = self._expected.get(tp, records[0].offset)
        for index, record in enumerate(records):
            if record.offset > expected and self._hold(tp, expected, record.offset):
                self._expected[tp] = expected
                self.refetched += 1
                return records[:index], expected
            expected = record.offset + 1
        self._expected[tp] = expected
        self._holes.pop(tp, None)
        return records, None

    def _hold(self, tp: Any, hole: int, found: int) -> bool:
        """Whether to hold the partition at `hole` (False once it has been open for HOLD_S)."""
        now = self._clock()
        at, since = self._holes.get(tp, (hole, now))
        if at != hole:
            since = now
        if now - since < HOLD_S:
            self._holes[tp] = (hole, since)
            return True
        log.warning("%s[%d]: offsets %d..%d still unreadable after %.1f s while %d is; reading on",
                    tp.topic, tp.partition, hole, found - 1, now - since, found)
        self._holes.pop(tp, None)
        return False
