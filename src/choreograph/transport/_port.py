"""The transport port: what choreograph's services need from a Kafka-like log, and nothing more.

Two implementations keep these rules: `KafkaTransport` (aiokafka against a real broker) and
`MemoryTransport` (an in-process log, for tests). The names and semantics follow aiokafka, so the
aiokafka producer is itself a `Producer` and aiokafka's records are `Record`s. This module must not
import aiokafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from ..errors import ChoreographError
from ..events._records import ConsumedRecord

if TYPE_CHECKING:
    from ._settings import Settings


class TopicPartition(NamedTuple):
    """One partition of one topic.

    Equal and hash-equal to aiokafka's `TopicPartition` with the same fields (both are plain
    tuples), so a dict keyed by either is looked up by both.
    """

    topic: str
    partition: int


class OffsetAndTimestamp(NamedTuple):
    """The answer of a lookup by time: an offset and the timestamp (ms) of its record."""

    offset: int
    timestamp: int


class RecordTooLargeError(ChoreographError):
    """A record (key, value and headers, with the log's framing) is larger than the log accepts."""


class CommitFailedError(ChoreographError):
    """The group did not take a commit: a rebalance was under way or this member is no longer in it.

    Nothing is lost: the partitions' next owner reads from the last commit that was taken, and
    tracking records make what it re-reads harmless.
    """


# One definition of a consumed record, in `events` (StoredRecord is made from one there): aiokafka's
# `ConsumerRecord` and the memory log's records are both one.
Record = ConsumedRecord


@runtime_checkable
class RecordMetadata(Protocol):
    """Where the log stored a sent record. aiokafka's `RecordMetadata` is one."""

    @property
    def topic(self) -> str:
        """The topic written to."""

    @property
    def partition(self) -> int:
        """The partition written to."""

    @property
    def offset(self) -> int:
        """The offset the record got."""

    @property
    def timestamp(self) -> int | None:
        """The record's timestamp in ms (None only from brokers too old to keep one)."""


class RebalanceListener(Protocol):
    """A group member's callbacks around each rebalance (eager, as aiokafka does it).

    Every member's `on_partitions_revoked` finishes before any member is given its new partitions,
    so committing there is how a member hands over its progress. A member's callbacks never
    overlap, and a member that stops does not have its own `on_partitions_revoked` called.
    """

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Called before a rebalance with every partition the member held (empty on its first join).

        Args:
            revoked: The partitions being taken away.
        """

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Called after a rebalance with the member's new partitions.

        The assignment is already active while this runs: a concurrent `getmany` may return records
        of these partitions, from the group's committed offset (else `auto_offset_reset`).

        Args:
            assigned: The partitions now owned by this member.
        """


class Producer(Protocol):
    """Writes records. `send` is on every hot path: implementations add no work per call."""

    async def start(self) -> None:
        """Connect; must be awaited before the first send."""

    async def stop(self) -> None:
        """Deliver what is queued, then close."""

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged (or failed)."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                   partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                   timestamp_ms: int | None = None) -> asyncio.Future[RecordMetadata]:
        """Queue one record; the returned future resolves once the log has it.

        Records for one partition are acknowledged in the order they were sent.

        Args:
            topic: The topic to write to.
            value: The payload; None (with a key) is a tombstone.
            key: Chooses the partition (murmur2, see `Transport.partition_for`) unless `partition`
                is given; at least one of key and value is required.
            partition: An explicit partition.
            headers: Name and value pairs.
            timestamp_ms: The record's timestamp; default: now.

        Returns:
            A future of the record's metadata (raises if the log refused it).

        Raises:
            RecordTooLargeError: (in memory; aiokafka's `MessageSizeTooLargeError` on Kafka) the
                record is larger than a request may be.
        """
        ...

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                            partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                            timestamp_ms: int | None = None) -> RecordMetadata:
        """`send`, then wait for the acknowledgement.

        Args:
            topic: As for `send`.
            value: As for `send`.
            key: As for `send`.
            partition: As for `send`.
            headers: As for `send`.
            timestamp_ms: As for `send`.

        Returns:
            The record's metadata.
        """
        ...

    async def partitions_for(self, topic: str) -> set[int]:
        """The partition numbers of a topic.

        Args:
            topic: The topic.

        Returns:
            Its partitions, e.g. {0, 1, 2, 3}.
        """
        ...


class Consumer(Protocol):
    """Reads records: a member of a consumer group (`subscribe`) or an assigned reader (`assign`)."""

    async def start(self) -> None:
        """Connect (and join the group if already subscribed)."""

    async def stop(self) -> None:
        """Leave the group (no revoke callback for this member) and close. Commits nothing."""

    def subscribe(self, topics: Iterable[str], listener: RebalanceListener | None = None) -> None:
        """Join the consumer group for these topics; partitions come by rebalance.

        Args:
            topics: The topics to consume.
            listener: Called around each rebalance.
        """

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions, with no group management.

        Args:
            partitions: The partitions to read.
        """

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer owns now (the old ones while a rebalance revokes them).

        Returns:
            A set of partitions.
        """
        ...

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        """Records from each position on, waiting up to `timeout_ms` for any; positions advance.

        During a rebalance this waits for the new assignment first (as aiokafka does).

        Args:
            *partitions: Only these (assigned) partitions; default: all assigned, unpaused ones.
            timeout_ms: How long to wait when no record is available; 0 returns at once.
            max_records: At most this many records in all (default: the consumer's
                `max_poll_records`).

        Returns:
            Records by partition, in offset order; only partitions with records appear.
        """
        ...

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make `offset` the next offset read from an assigned partition.

        Args:
            partition: An assigned partition.
            offset: The next offset to read.
        """

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Move to the first offset the log still has.

        Args:
            *partitions: Assigned partitions; default: all assigned.
        """

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record a fetch will return.

        Args:
            partition: An assigned partition.

        Returns:
            The offset.
        """
        ...

    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset (the next one to read), whoever committed it.

        Args:
            partition: Any partition.

        Returns:
            The offset, or None if the group never committed one there.
        """
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit, for the group, the next offset to read of assigned partitions.

        Args:
            offsets: Offset by partition.
        """

    def pause(self, *partitions: TopicPartition) -> None:
        """Fetch nothing from these partitions until resumed (no rebalance happens).

        Args:
            *partitions: Assigned partitions.
        """

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch from paused partitions again.

        Args:
            *partitions: Assigned partitions.
        """

    def highwater(self, partition: TopicPartition) -> int | None:
        """The log end as the last fetch of this partition saw it.

        Args:
            partition: An assigned partition.

        Returns:
            The offset the next record will get, or None before the first fetch.
        """
        ...

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The listed end of each partition (ListOffsets; short on Tansu, see `Transport.true_ends`).

        Args:
            partitions: Any partitions.

        Returns:
            End offset by partition.
        """
        ...

    async def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                                ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """The first record at or after a time, per partition.

        Args:
            timestamps: Milliseconds since the epoch, by partition.

        Returns:
            By partition: the first offset whose timestamp is at or after the time, with that
            timestamp; None where no record is.
        """
        ...


class Transport(Protocol):
    """Makes producers and consumers under one Settings, and answers questions about the log."""

    settings: Settings

    def producer(self, **overrides: Any) -> Producer:
        """A new, unstarted producer.

        Args:
            **overrides: aiokafka producer options replacing the profile's.

        Returns:
            The producer.
        """
        ...

    def consumer(self, *topics: str, group_id: str | None = None, **overrides: Any) -> Consumer:
        """A new, unstarted consumer (manual commits, `auto_offset_reset="earliest"`, 500 records per poll).

        Args:
            *topics: Topics to subscribe to at start, without a listener.
            group_id: Its consumer group; None for a group-less reader.
            **overrides: aiokafka consumer options, e.g. `auto_offset_reset`, `max_poll_records`.

        Returns:
            The consumer.
        """
        ...

    def reader(self, partitions: Iterable[TopicPartition]) -> AbstractAsyncContextManager[Consumer]:
        """A started, group-less consumer assigned to `partitions`, stopped safely on exit.

        Args:
            partitions: The partitions to assign.

        Returns:
            An async context manager yielding the consumer.
        """
        ...

    async def ensure_topics(self) -> None:
        """Create the namespace's topics if missing: events, registry (compacted), dead letters."""

    async def partition_count(self, topic: str) -> int:
        """How many partitions a topic has.

        Args:
            topic: An existing topic.

        Returns:
            The count.
        """
        ...

    def partition_for(self, key: bytes, partitions: int) -> int:
        """The partition the default (murmur2) partitioner gives a key, as Java clients do.

        Args:
            key: The record key.
            partitions: The topic's partition count.

        Returns:
            The partition number.
        """
        ...

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The true log end of each partition: the offset the next record will get.

        Args:
            partitions: Any partitions.

        Returns:
            End offset by partition.
        """
        ...

    async def true_ends(self, consumer: Consumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """True end offsets through a reader assigned to `tps`; may move its positions.

        Args:
            consumer: A started consumer assigned to `tps`.
            tps: The partitions.

        Returns:
            End offset by partition.
        """
        ...

    def read(self, partitions: Iterable[TopicPartition], *, start: Mapping[TopicPartition, int] | None = None,
             until: Mapping[TopicPartition, int] | None = None) -> AsyncIterator[Record]:
        """Records of the partitions, in offset order within each partition.

        Each partition is read from `start` (default: its beginning) to `until` (default: its true
        end when called).

        Args:
            partitions: The partitions to read.
            start: First offset by partition.
            until: End offset (exclusive) by partition.

        Returns:
            An async iterator of the records.
        """
        ...
