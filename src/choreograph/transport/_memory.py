"""An in-process log that keeps Kafka's rules (for tests); see `MemoryTransport` for its clients.

`MemoryLog` is the "broker": topics of partitions of records, consumer groups and their committed
offsets. `MemoryTransport(log, settings)` makes producers and consumers on it; everything runs on
one asyncio loop. What it keeps, as Kafka (and aiokafka) do:

- Offsets per partition start at 0 and grow by 1. A keyed record goes to the partition murmur2
  gives its key (as Java clients and aiokafka do), so one key's records keep their order. Keyless
  records go round robin. A timestamp is the producer's `timestamp_ms`, else the send time (ms).
- `send` appends before it returns; its future is already resolved, so acknowledgements are in
  order. A record larger than a request may be raises `RecordTooLargeError` from `send`.
- `getmany` returns records from the position of each assigned, unpaused partition, at most
  `max_records` (or `max_poll_records`) in all, waiting up to `timeout_ms` for an append. A
  position past the end is reset by `auto_offset_reset`, as an out-of-range fetch is.
- Groups rebalance eagerly, as aiokafka does: every member's `on_partitions_revoked` is awaited
  before the new assignment is computed (round robin over partitions sorted by topic and number,
  to members sorted by member id); each member then gets its assignment, positioned at the
  group's committed offsets (else `auto_offset_reset`), and it is active (fetchable) while its
  `on_partitions_assigned` runs. A member's callbacks never overlap, rebalances of a group happen
  one at a time, and getmany waits while its member's assignment is being rebalanced.
- A member that stops leaves without its own revoke callback; `MemoryConsumer.crash()` removes a
  member at once, with no callback and no commit, so its uncommitted records go to the next owner.
- Compacted topics (`MemoryLog.compact`) keep the last record per key at its offset; a tombstone
  (None value) is removed by compaction too. A keyless record on a compacted topic is refused.

Fault injection: `MemoryLog.on_await`, if set, is awaited with the operation's name at the start of
every awaited client call (see `MemoryLog.checkpoint`), so a test can make a member join, leave or
crash, or time pass, at exactly that await point.

Not modelled: transactions and read_committed isolation; idempotent producers and retries;
replication, leaders, acks and unclean elections; retention and log start offsets other than 0
(nothing is ever deleted but by compaction, which only runs when `compact()` is called, covers the
whole log including its head, and keeps no tombstone for delete.retention.ms); session timeouts and
heartbeats (a crash is seen at once, a slow member is never expelled); rebalance timeouts (a
callback may take forever); incremental cooperative and static membership; group-less subscribe;
topic patterns; adding partitions; quotas, throttling, batching, compression and linger; network
errors, broker restarts and metadata delays; consumer prefetching (a fetch reads the log directly);
Tansu's quirks (short ListOffsets, lookups by append time): the log behaves as Apache Kafka does;
aiokafka's error classes (misuse raises RuntimeError or ValueError, a refused record's future fails
with ValueError).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from ._memory_group import MemoryGroup
from ._memory_records import (
    MemoryRecord,
    MemoryRecordMetadata,
    StoredPartition,
    StoredTopic,
    record_size,
)
from ._partitioner import partition_for
from ._port import OffsetAndTimestamp, TopicPartition

__all__ = ["MemoryLog", "MemoryRecord", "MemoryRecordMetadata", "record_size"]

_IN_HOOK: contextvars.ContextVar[bool] = contextvars.ContextVar("choreograph_memory_in_hook", default=False)


class MemoryLog:
    """The in-process broker: topics, partitions, records, consumer groups, committed offsets.

    Args:
        default_partitions: Partitions of a topic created by its first use (auto.create.topics).
        clock: Milliseconds since the epoch, for record timestamps; default: the wall clock.
    """

    def __init__(self, *, default_partitions: int = 1, clock: Callable[[], int] | None = None) -> None:
        self.on_await: Callable[[str], Awaitable[None]] | None = None
        self.default_partitions = default_partitions
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._topics: dict[str, StoredTopic] = {}
        self._groups: dict[str, MemoryGroup] = {}
        self._waiters: set[asyncio.Future[None]] = set()

    # topics and records --------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, *, compacted: bool = False) -> bool:
        """Create a topic unless it exists; groups subscribed to it rebalance.

        Args:
            name: The topic.
            partitions: Its partition count.
            compacted: cleanup.policy=compact.

        Returns:
            Whether it was created.
        """
        if name in self._topics:
            return False
        if partitions < 1:
            raise ValueError("a topic needs at least one partition")
        self._topics[name] = StoredTopic(partitions, compacted)
        for group in self._groups.values():
            group.topic_created(name)
        return True

    def topics(self) -> dict[str, int]:
        """Every topic and its partition count.

        Returns:
            Partition count by topic.
        """
        return {name: len(topic.partitions) for name, topic in self._topics.items()}

    def is_compacted(self, topic: str) -> bool:
        """Whether a topic is compacted.

        Args:
            topic: An existing topic.

        Returns:
            Its cleanup policy is compact.
        """
        return self._topic(topic).compacted

    def partitions_of(self, topic: str) -> int:
        """A topic's partition count, 0 if it does not exist.

        Args:
            topic: The topic.

        Returns:
            The count.
        """
        found = self._topics.get(topic)
        return 0 if found is None else len(found.partitions)

    def records(self, tp: TopicPartition) -> list[MemoryRecord]:
        """The records a partition holds now (a copy, for inspection).

        Args:
            tp: The partition.

        Returns:
            Its records in offset order.
        """
        return list(self.partition(tp).records)

    def end_offset(self, tp: TopicPartition) -> int:
        """The offset the next record of a partition will get.

        Args:
            tp: The partition.

        Returns:
            The end offset.
        """
        return self.partition(tp).end

    def partition(self, tp: TopicPartition) -> StoredPartition:
        """The storage of one partition.

        Args:
            tp: An existing partition.

        Returns:
            Its storage.

        Raises:
            ValueError: No such topic or partition.
        """
        partitions = self._topic(tp.topic).partitions
        if not 0 <= tp.partition < len(partitions):
            raise ValueError(f"{tp.topic} has no partition {tp.partition}")
        return partitions[tp.partition]

    def _topic(self, name: str) -> StoredTopic:
        found = self._topics.get(name)
        if found is None:
            raise ValueError(f"unknown topic {name!r}")
        return found

    def append(self, topic: str, value: bytes | None, key: bytes | None, partition: int | None,
               headers: Sequence[tuple[str, bytes]] | None, timestamp_ms: int | None) -> MemoryRecord:
        """Store one record (creating the topic if new) and wake waiting consumers.

        Args:
            topic: The topic.
            value: The value.
            key: The key.
            partition: An explicit partition, else by key (murmur2), else round robin.
            headers: The headers.
            timestamp_ms: The timestamp, else now.

        Returns:
            The stored record.

        Raises:
            ValueError: An unknown partition, or no key on a compacted topic.
            TypeError: Key, value or a header value is not bytes.
        """
        headers = tuple(headers or ())
        for field in (key, value, *(v for _, v in headers)):
            if field is not None and not isinstance(field, bytes):
                raise TypeError(f"record fields must be bytes, got {type(field).__name__}")
        if topic not in self._topics:
            self.create_topic(topic, self.default_partitions)
        found = self._topics[topic]
        if found.compacted and key is None:
            raise ValueError(f"compacted topic {topic} cannot accept a record without a key")
        if partition is None:
            if key is not None:
                partition = partition_for(key, len(found.partitions))
            else:
                partition = found.next_keyless % len(found.partitions)
                found.next_keyless += 1
        stored = self.partition(TopicPartition(topic, partition))
        record = MemoryRecord(topic, partition, stored.end, self.clock() if timestamp_ms is None else timestamp_ms,
                              key, value, headers)
        stored.records.append(record)
        stored.end += 1
        self.wake()
        return record

    def offset_for_time(self, tp: TopicPartition, timestamp: int) -> OffsetAndTimestamp | None:
        """The first record, in log order, whose timestamp is at or after `timestamp`.

        Args:
            tp: The partition.
            timestamp: Milliseconds since the epoch.

        Returns:
            Its offset and timestamp, or None.
        """
        for record in self.partition(tp).records:
            if record.timestamp >= timestamp:
                return OffsetAndTimestamp(record.offset, record.timestamp)
        return None

    def compact(self, topic: str) -> int:
        """Compact a compacted topic now: keep each key's last record, at its offset; drop tombstones.

        Args:
            topic: A compacted topic.

        Returns:
            How many records were removed.
        """
        found = self._topic(topic)
        if not found.compacted:
            raise ValueError(f"{topic} is not a compacted topic")
        removed = 0
        for stored in found.partitions:
            last = {record.key: record.offset for record in stored.records}
            kept = [r for r in stored.records if last[r.key] == r.offset and r.value is not None]
            removed += len(stored.records) - len(kept)
            stored.records = kept
        return removed

    # groups ----------------------------------------------------------------------------------------

    def group(self, group_id: str) -> MemoryGroup:
        """A consumer group, created on first use.

        Args:
            group_id: Its id.

        Returns:
            The group.
        """
        if (found := self._groups.get(group_id)) is None:
            found = self._groups[group_id] = MemoryGroup(self, group_id)
        return found

    def committed(self, group_id: str, tp: TopicPartition) -> int | None:
        """A group's committed offset of a partition (for inspection).

        Args:
            group_id: The group.
            tp: The partition.

        Returns:
            The offset, or None.
        """
        return self.group(group_id).committed.get(tp)

    async def idle(self) -> None:
        """Wait until no group has a rebalance under way."""
        while busy := [g for g in self._groups.values() if g.rebalancing]:
            await busy[0].wait_idle()

    # waiting and fault injection -------------------------------------------------------------------

    async def checkpoint(self, operation: str) -> None:
        """Await `on_await(operation)`, if set; clients call this at the start of each awaited call.

        Operations: consumer "start", "stop", "getmany", "seek_to_beginning", "position",
        "committed", "commit", "end_offsets", "offsets_for_times"; producer "start", "stop",
        "flush", "send", "partitions_for"; transport "ensure_topics", "partition_count",
        "end_offsets", "read". Calls made by the hook itself do not re-enter it; the callbacks of a
        rebalance it causes run in the log's own task, and do.

        Args:
            operation: The name of the call.
        """
        hook = self.on_await
        if hook is None or _IN_HOOK.get():
            return
        token = _IN_HOOK.set(True)
        try:
            await hook(operation)
        finally:
            _IN_HOOK.reset(token)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run the log's own work (a rebalance) as a task outside any hook.

        So the callbacks it runs meet `on_await` even when a hook caused it.

        Args:
            work: The coroutine.
            name: The task's name.

        Returns:
            The task.
        """
        context = contextvars.copy_context()
        context.run(_IN_HOOK.set, False)
        return asyncio.get_running_loop().create_task(work, name=name, context=context)

    def wake(self) -> None:
        """Wake every waiting fetch (something was appended, assigned, sought or resumed)."""
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for_change(self, timeout_s: float | None) -> None:
        """Wait until `wake()` or the timeout, whichever is first.

        Args:
            timeout_s: Seconds, or None for no limit.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait({waiter}, timeout=timeout_s)
        finally:
            self._waiters.discard(waiter)
            waiter.cancel()
