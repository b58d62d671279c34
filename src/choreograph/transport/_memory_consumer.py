"""A consumer of the memory log (see `_memory` for the rules it keeps)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._port import CommitFailedError, OffsetAndTimestamp, RebalanceListener, Record, TopicPartition

if TYPE_CHECKING:
    from ._memory import MemoryLog

log = logging.getLogger("choreograph.transport.memory")


class MemoryConsumer:
    """A port `Consumer` on a MemoryLog: a group member (`subscribe`) or an assigned reader.

    Misuse that aiokafka refuses (an unassigned partition, a commit without a group or by a member
    that left, a call after stop) raises RuntimeError here.

    Args:
        log: The log.
        topics: Topics to subscribe to at start.
        group_id: Its group, or None.
        auto_offset_reset: "earliest" or "latest": where a partition without a committed offset
            (or with a position past its end) starts.
        max_poll_records: Records per getmany by default (None: no limit).
        **options: Other aiokafka options, ignored.
    """

    def __init__(self, log: MemoryLog, topics: Iterable[str], group_id: str | None, *,
                 auto_offset_reset: str = "earliest", max_poll_records: int | None = 500, **options: Any) -> None:
        if auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(f"auto_offset_reset={auto_offset_reset!r}: expected 'earliest' or 'latest'")
        self.log = log
        self.group_id = group_id
        self.member_id: str | None = None
        self._reset = auto_offset_reset
        self._max_poll = max_poll_records
        self._topics = frozenset(topics)
        self._listener: RebalanceListener | None = None
        self._manual = False
        self._assignment: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._highwater: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._reassigning = False
        self._callbacks = asyncio.Lock()
        self._state = "new"
        self._turn = 0

    # lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start, and join the group if subscribed."""
        await self.log.checkpoint("start")
        if self._state != "new":
            raise RuntimeError(f"consumer is {self._state}")
        self._state = "started"
        if self._topics and not self._manual:
            self._join()

    async def stop(self) -> None:
        """Leave the group (no revoke callback for this member) and stop; waits for a running callback."""
        await self.log.checkpoint("stop")
        if self._state != "started":
            self._state = self._state if self._state == "crashed" else "stopped"
            return
        async with self._callbacks:
            self._state = "stopped"
            self._leave()

    def crash(self) -> None:
        """Die at once, as kill -9 would: out of the group, no callback, no commit (memory only)."""
        if self._state in ("stopped", "crashed"):
            return
        self._state = "crashed"
        self._leave()

    def _join(self) -> None:
        if self.group_id is None:
            raise NotImplementedError("the memory log does not model group-less subscribe; use assign()")
        group = self.log.group(self.group_id)
        self._reassigning = True
        if self.member_id is not None and self.member_id in group.members:
            group.request_rebalance()
        else:
            self.member_id = group.join(self)

    def _leave(self) -> None:
        if self.group_id is not None and self.member_id is not None:
            self.log.group(self.group_id).leave(self.member_id)
        self._assignment, self._positions, self._highwater, self._paused = set(), {}, {}, set()
        self._reassigning = False
        self.log.wake()

    def _check_running(self) -> None:
        if self._state != "started":
            raise RuntimeError(f"consumer is {self._state}")

    def _check_assigned(self, tp: TopicPartition) -> TopicPartition:
        if tp not in self._assignment:
            raise RuntimeError(f"partition {tp} is not assigned")
        return TopicPartition(tp.topic, tp.partition)

    def _reset_position(self, tp: TopicPartition) -> int:
        return 0 if self._reset == "earliest" else self.log.end_offset(tp)

    # subscription ----------------------------------------------------------------------------------

    @property
    def subscription(self) -> frozenset[str]:
        """The subscribed topics (empty for an assigned reader)."""
        return frozenset() if self._manual else self._topics

    def subscribe(self, topics: Iterable[str], listener: RebalanceListener | None = None) -> None:
        """Join the group for `topics`. See `Consumer.subscribe`.

        Args:
            topics: The topics.
            listener: Rebalance callbacks.
        """
        if self._manual:
            raise RuntimeError("subscribe() after assign()")
        topics = frozenset(topics)
        if not topics:
            raise ValueError("no topics to subscribe to")
        self._topics, self._listener = topics, listener
        if self._state == "started":
            self._join()

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions, from the group's committed offsets (else the reset policy).

        Args:
            partitions: Existing partitions.
        """
        if self._topics and not self._manual:
            raise RuntimeError("assign() after subscribe()")
        tps = {TopicPartition(tp.topic, tp.partition) for tp in partitions}
        for tp in tps:
            self.log.partition(tp)  # raises for an unknown partition
        committed = {} if self.group_id is None else self.log.group(self.group_id).committed
        self._manual = True
        self._assignment = tps
        self._positions = {tp: committed[tp] if tp in committed else self._reset_position(tp) for tp in tps}
        self._highwater = {}
        self._paused &= tps
        self.log.wake()

    def assignment(self) -> set[TopicPartition]:
        """The partitions owned now (the old ones while a rebalance revokes them).

        Returns:
            A set of partitions.
        """
        return set(self._assignment)

    # called by the group ---------------------------------------------------------------------------

    def begin_reassignment(self) -> None:
        """A rebalance started: fetches wait until it assigns."""
        self._reassigning = True

    async def revoke(self) -> None:
        """Call `on_partitions_revoked` with the whole current assignment (after any running callback)."""
        async with self._callbacks:
            if self._state == "started" and self._listener is not None:
                try:
                    await self._listener.on_partitions_revoked(set(self._assignment))
                except Exception:
                    log.exception("%s: on_partitions_revoked failed", self.member_id)

    def take_assignment(self, tps: set[TopicPartition], committed: Mapping[TopicPartition, int]) -> None:
        """Own `tps` from now on, each positioned at its committed offset (else the reset policy).

        Args:
            tps: The new assignment.
            committed: The group's committed offsets.
        """
        self._assignment = set(tps)
        self._positions = {tp: committed[tp] if tp in committed else self._reset_position(tp) for tp in tps}
        self._highwater, self._paused = {}, set()
        self._reassigning = False

    async def assigned(self, tps: set[TopicPartition]) -> None:
        """Call `on_partitions_assigned` (after any running callback).

        Args:
            tps: The new assignment.
        """
        async with self._callbacks:
            if self._state == "started" and self._listener is not None:
                try:
                    await self._listener.on_partitions_assigned(set(tps))
                except Exception:
                    log.exception("%s: on_partitions_assigned failed", self.member_id)

    # fetching --------------------------------------------------------------------------------------

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        """Records from each position on. See `Consumer.getmany`.

        Args:
            *partitions: Only these assigned partitions (default: all assigned).
            timeout_ms: How long to wait for a record.
            max_records: At most this many in all (default: max_poll_records).

        Returns:
            Records by partition.
        """
        await self.log.checkpoint("getmany")
        if max_records is not None and max_records < 1:
            raise ValueError("max_records must be positive")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            self._check_running()
            if self._reassigning:  # as aiokafka: wait for the new assignment, however long it takes
                await self.log.wait_for_change(None)
                continue
            batch = self._fetch(partitions, max_records or self._max_poll)
            remaining = deadline - loop.time()
            if batch or remaining <= 0:
                return batch
            await self.log.wait_for_change(remaining)

    def _fetch(self, partitions: tuple[TopicPartition, ...], limit: int | None) -> dict[TopicPartition, list[Record]]:
        if partitions:
            tps = [self._check_assigned(tp) for tp in partitions]
        else:
            tps = sorted(self._assignment)
            if tps:  # start with another partition each time, as fetch sessions rotate
                self._turn = (self._turn + 1) % len(tps)
                tps = tps[self._turn:] + tps[:self._turn]
        batch: dict[TopicPartition, list[Record]] = {}
        for tp in tps:
            if tp in self._paused:
                continue
            stored = self.log.partition(tp)
            position = self._positions[tp]
            if position > stored.end:  # out of range: reset, as auto_offset_reset does
                position = self._reset_position(tp)
            self._highwater[tp] = stored.end
            if limit is not None and limit <= 0:
                self._positions[tp] = position
                continue
            records, self._positions[tp] = stored.fetch(position, limit)
            if records:
                batch[tp] = records
                if limit is not None:
                    limit -= len(records)
        return batch

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Set the next offset to read. See `Consumer.seek`.

        Args:
            partition: An assigned partition.
            offset: The offset.
        """
        if not isinstance(offset, int) or offset < 0:
            raise ValueError("offset must be a non-negative integer")
        self._positions[self._check_assigned(partition)] = offset
        self.log.wake()

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Move to offset 0 (nothing is deleted here but by compaction, which keeps offsets).

        Args:
            *partitions: Assigned partitions (default: all).
        """
        await self.log.checkpoint("seek_to_beginning")
        for tp in partitions or tuple(self._assignment):
            self._positions[self._check_assigned(tp)] = 0
        self.log.wake()

    async def position(self, partition: TopicPartition) -> int:
        """The next offset to read. See `Consumer.position`.

        Args:
            partition: An assigned partition.

        Returns:
            The offset.
        """
        await self.log.checkpoint("position")
        return self._positions[self._check_assigned(partition)]

    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset. See `Consumer.committed`.

        Args:
            partition: Any partition.

        Returns:
            The offset or None.
        """
        await self.log.checkpoint("committed")
        if self.group_id is None:
            raise RuntimeError("committed() requires a group_id")
        return self.log.group(self.group_id).committed.get(partition)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit for the group. See `Consumer.commit`.

        Args:
            offsets: Next offset to read by assigned partition.
        """
        await self.log.checkpoint("commit")
        if self.group_id is None:
            raise RuntimeError("commit() requires a group_id")
        if self._state == "crashed":
            raise CommitFailedError(f"{self.member_id} crashed: it is not a member of {self.group_id}")
        self._check_running()
        group = self.log.group(self.group_id)
        if not self._manual and group.members.get(self.member_id or "") is not self:
            raise CommitFailedError(f"{self.member_id} is not a member of {self.group_id}")
        if unassigned := [tp for tp in offsets if tp not in self._assignment]:
            # aiokafka refuses these too (IllegalStateError): a rebalance took them away meanwhile.
            raise CommitFailedError(f"{sorted(unassigned)} are not assigned to {self.member_id}")
        checked = [(self._check_assigned(tp), offset) for tp, offset in offsets.items()]
        if any(not isinstance(offset, int) or offset < 0 for _, offset in checked):
            raise ValueError(f"invalid offsets {dict(offsets)}")
        group.commit(checked)

    def pause(self, *partitions: TopicPartition) -> None:
        """Fetch nothing from these partitions until resumed.

        Args:
            *partitions: Assigned partitions.
        """
        self._paused.update(self._check_assigned(tp) for tp in partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch from these partitions again.

        Args:
            *partitions: Assigned partitions.
        """
        self._paused.difference_update(self._check_assigned(tp) for tp in partitions)
        self.log.wake()

    def highwater(self, partition: TopicPartition) -> int | None:
        """The end seen by the last fetch of the partition.

        Args:
            partition: An assigned partition.

        Returns:
            The offset, or None before the first fetch.
        """
        return self._highwater.get(self._check_assigned(partition))

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Exact ends (no Tansu shortfall here).

        Args:
            partitions: Any partitions.

        Returns:
            End offset by partition.
        """
        await self.log.checkpoint("end_offsets")
        return {TopicPartition(tp.topic, tp.partition): self.log.end_offset(tp) for tp in partitions}

    async def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                                ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """First offset at or after a time. See `Consumer.offsets_for_times`.

        Args:
            timestamps: Milliseconds by partition.

        Returns:
            Offset and timestamp, or None, by partition.
        """
        await self.log.checkpoint("offsets_for_times")
        if any(ms < 0 for ms in timestamps.values()):
            raise ValueError("timestamps cannot be negative")
        return {TopicPartition(tp.topic, tp.partition): self.log.offset_for_time(tp, ms)
                for tp, ms in timestamps.items()}
