"""Producers, consumers and the transport on a MemoryLog (see `_memory` for the rules it keeps)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._memory import MemoryLog, MemoryRecordMetadata
from ._memory_consumer import MemoryConsumer
from ._partitioner import partition_for
from ._port import Consumer, Record, RecordMetadata, RecordTooLargeError, TopicPartition
from ._reading import read_records
from ._sizes import DEFAULT_MAX_REQUEST_SIZE, record_size

if TYPE_CHECKING:
    from ._settings import Settings


class MemoryProducer:
    """A port `Producer` on a MemoryLog: a send appends at once and returns a resolved future.

    Args:
        log: The log.
        max_request_size: The largest record it sends (aiokafka's option of that name).
    """

    def __init__(self, log: MemoryLog, max_request_size: int = DEFAULT_MAX_REQUEST_SIZE) -> None:
        self.log = log
        self.max_request_size = max_request_size
        self._state = "new"

    async def start(self) -> None:
        """Start; sends are accepted from now on."""
        await self.log.checkpoint("start")
        self._state = "started"

    async def stop(self) -> None:
        """Stop; later sends raise."""
        await self.log.checkpoint("stop")
        self._state = "stopped"

    async def flush(self) -> None:
        """Nothing to wait for: every send is acknowledged when it returns."""
        await self.log.checkpoint("flush")

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                   partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                   timestamp_ms: int | None = None) -> asyncio.Future[RecordMetadata]:
        """Append one record. See `Producer.send`.

        Args:
            topic: The topic.
            value: The value.
            key: The key.
            partition: An explicit partition.
            headers: The headers.
            timestamp_ms: The timestamp.

        Returns:
            A resolved future of its metadata (failed if the log refused it).
        """
        await self.log.checkpoint("send")
        if self._state != "started":
            raise RuntimeError(f"producer is {self._state}, not started")
        if (size := record_size(key, value, headers or ())) > self.max_request_size:
            raise RecordTooLargeError(f"a record of {size} bytes is larger than the {self.max_request_size} allowed")
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        try:
            record = self.log.append(topic, value, key, partition, headers, timestamp_ms)
        except (RecordTooLargeError, TypeError):
            raise  # refused by the client before sending, as aiokafka does
        except ValueError as exc:
            future.set_exception(exc)  # refused by the broker: the acknowledgement fails
            return future
        future.set_result(MemoryRecordMetadata(record.topic, record.partition, record.offset, record.timestamp))
        return future

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                            partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                            timestamp_ms: int | None = None) -> RecordMetadata:
        """Append one record and return its metadata. See `Producer.send_and_wait`.

        Args:
            topic: The topic.
            value: The value.
            key: The key.
            partition: An explicit partition.
            headers: The headers.
            timestamp_ms: The timestamp.

        Returns:
            Its metadata.
        """
        future = await self.send(topic, value, key, partition=partition, headers=headers, timestamp_ms=timestamp_ms)
        return await future

    async def partitions_for(self, topic: str) -> set[int]:
        """A topic's partitions, creating it if new (as auto.create.topics does).

        Args:
            topic: The topic.

        Returns:
            Its partition numbers.
        """
        await self.log.checkpoint("partitions_for")
        if topic not in self.log.topics():
            self.log.create_topic(topic, self.log.default_partitions)
        return set(range(self.log.partitions_of(topic)))


class MemoryTransport:
    """The port on a MemoryLog.

    Args:
        log: The log (shared by every transport of one test).
        settings: Namespace, partition count and topic names; the broker address is not used.
    """

    def __init__(self, log: MemoryLog, settings: Settings) -> None:
        self.log = log
        self.settings = settings

    def producer(self, **overrides: Any) -> MemoryProducer:
        """A producer (aiokafka options are accepted; only max_request_size is kept). See `Transport.producer`.

        Args:
            **overrides: aiokafka producer options.

        Returns:
            The producer, not started.
        """
        return MemoryProducer(self.log, overrides.get("max_request_size", self.settings.max_event_bytes))

    def consumer(self, *topics: str, group_id: str | None = None, **overrides: Any) -> MemoryConsumer:
        """A consumer. See `Transport.consumer`.

        Args:
            *topics: Topics to subscribe to at start.
            group_id: Its group, or None.
            **overrides: `auto_offset_reset` and `max_poll_records` are kept; others are ignored.

        Returns:
            The consumer, not started.
        """
        options: dict[str, Any] = {"auto_offset_reset": "earliest", "max_poll_records": 500, **overrides}
        return MemoryConsumer(self.log, topics, group_id, **options)

    @contextlib.asynccontextmanager
    async def reader(self, partitions: Iterable[TopicPartition]) -> AsyncIterator[Consumer]:
        """A started group-less consumer assigned to `partitions`, stopped on exit.

        Args:
            partitions: The partitions.

        Yields:
            The consumer.
        """
        consumer = self.consumer(group_id=None)
        await consumer.start()
        try:
            consumer.assign(list(partitions))
            yield consumer
        finally:
            await consumer.stop()

    async def ensure_topics(self) -> None:
        """Create the namespace's topics if missing: events, registry (compacted), dead letters."""
        await self.log.checkpoint("ensure_topics")
        s = self.settings
        self.log.create_topic(s.events_topic, s.partitions)
        self.log.create_topic(s.registry_topic, 1, compacted=True)
        self.log.create_topic(s.deadletter_topic, 1)
        self.log.create_topic(s.status_topic, 1)

    async def partition_count(self, topic: str) -> int:
        """How many partitions `topic` has.

        Args:
            topic: An existing topic.

        Returns:
            The count.
        """
        await self.log.checkpoint("partition_count")
        if (count := self.log.partitions_of(topic)) == 0:
            raise ValueError(f"unknown topic {topic!r}")
        return count

    def partition_for(self, key: bytes, partitions: int) -> int:
        """The partition murmur2 gives a key.

        Args:
            key: The key.
            partitions: The partition count.

        Returns:
            The partition.
        """
        return partition_for(key, partitions)

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The exact end of each partition.

        Args:
            partitions: Any partitions.

        Returns:
            End offset by partition.
        """
        await self.log.checkpoint("end_offsets")
        return {TopicPartition(tp.topic, tp.partition): self.log.end_offset(tp) for tp in partitions}

    async def true_ends(self, consumer: Consumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """End offsets through a reader: listed ends are exact here.

        Args:
            consumer: A started reader.
            tps: The partitions.

        Returns:
            End offset by partition.
        """
        return await consumer.end_offsets(tps)

    async def read(self, partitions: Iterable[TopicPartition], *, start: Mapping[TopicPartition, int] | None = None,
                   until: Mapping[TopicPartition, int] | None = None) -> AsyncIterator[Record]:
        """Records from `start` (default: beginning) to `until` (default: the end now).

        Args:
            partitions: The partitions.
            start: First offset by partition.
            until: End offset (exclusive) by partition.

        Yields:
            The records, in offset order within each partition.
        """
        await self.log.checkpoint("read")
        async for record in read_records(self, partitions, start=start, until=until):
            yield record


if TYPE_CHECKING:  # mypy proves the memory classes implement the port
    from ._port import Producer, Transport

    def _conforms(log: MemoryLog, settings: Settings) -> tuple[Transport, Producer, Consumer, Record]:
        from ._memory import MemoryRecord  # deferred: never runs (TYPE_CHECKING), kept local to the proof
        return (MemoryTransport(log, settings), MemoryProducer(log), MemoryConsumer(log, (), None),
                MemoryRecord("t", 0, 0, 0, None, None, ()))
