"""The Kafka consumer behind the port: aiokafka's, wrapped thinly.

aiokafka's consumer methods insist on aiokafka's own `TopicPartition` class. The wrapper converts at the boundary (a few
tuples per batch, not per record) and adapts port rebalance listeners to aiokafka's abstract class. On a broker that can
show a later offset before an earlier one (Tansu), it also holds back records past such a hole (see `_contiguous`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import TopicPartition as _AioTopicPartition
from aiokafka.errors import CommitFailedError as _AioCommitFailedError
from aiokafka.errors import IllegalStateError

from ._contiguous import Contiguity
from ._port import CommitFailedError, OffsetAndTimestamp, RebalanceListener, Record, TopicPartition


def _aio(tp: TopicPartition) -> Any:
    return _AioTopicPartition(tp.topic, tp.partition)


def _ours(tp: Any) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """A port `RebalanceListener` as aiokafka wants it: an instance of its abstract class.

    A rebalance also makes the next offsets `contiguity` expects unknown (another member may have read on).
    """

    def __init__(self, listener: RebalanceListener | None, consumer: KafkaConsumer) -> None:
        self._listener = listener
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        self._consumer.moved(revoked)
        if self._listener is not None:
            await self._listener.on_partitions_revoked({_ours(tp) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        self._consumer.moved(assigned)
        if self._listener is not None:
            await self._listener.on_partitions_assigned({_ours(tp) for tp in assigned})


class KafkaConsumer:
    """A port `Consumer` over an `AIOKafkaConsumer` (reachable as `raw`).

    Args:
        raw: The aiokafka consumer, not started.
        group_id: Its group (None: a group-less reader).
        contiguity: Where the broker can skip offsets: what holds records back past a hole.
    """

    __slots__ = ("_group_less", "_unknown", "contiguity", "raw")

    def __init__(self, raw: AIOKafkaConsumer, group_id: str | None, contiguity: Contiguity | None = None) -> None:
        self.raw = raw
        self._group_less = group_id is None
        self.contiguity = contiguity
        # Some assigned partition's next offset is unknown to `contiguity` (after an assignment).
        self._unknown = contiguity is not None

    def moved(self, tps: Any = None) -> None:
        """These partitions (default: all) were (re)assigned or reset: their next offsets are unknown.

        Args:
            tps: aiokafka or port partitions.
        """
        if self.contiguity is not None:
            self.contiguity.forget(tps)
            self._unknown = True

    async def start(self) -> None:
        """Connect (and join the group if already subscribed); closed again if that fails.

        Left open, a consumer that could not bootstrap is reported by asyncio as "Unclosed
        AIOKafkaConsumer" when it is collected: noise after the one-line error of `choreo`.
        """
        try:
            await self.raw.start()
        except BaseException:
            await self.raw.stop()
            raise

    async def stop(self) -> None:
        """Leave the group (no revoke callback) and close."""
        if self._group_less:
            # aiokafka: stopping a group-less consumer before its background reset task first ran
            # raises CancelledError out of stop(); one turn of the loop lets that task start.
            await asyncio.sleep(0)
        await self.raw.stop()

    def subscribe(self, topics: Iterable[str], listener: RebalanceListener | None = None) -> None:
        """Join the group for `topics`. See `Consumer.subscribe`.

        Args:
            topics: The topics.
            listener: Rebalance callbacks.
        """
        self.raw.subscribe(list(topics), listener=_Listener(listener, self))

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions. See `Consumer.assign`.

        Args:
            partitions: The partitions.
        """
        self.raw.assign([_aio(tp) for tp in partitions])
        self.moved()

    def assignment(self) -> set[TopicPartition]:
        """The partitions owned now. See `Consumer.assignment`.

        Returns:
            A set of partitions.
        """
        return {_ours(tp) for tp in self.raw.assignment()}

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        """Fetch records. See `Consumer.getmany`.

        Args:
            *partitions: Only these partitions (default: all assigned).
            timeout_ms: How long to wait for records.
            max_records: At most this many.

        Returns:
            Records by partition.
        """
        if self._unknown:
            await self._positions(timeout_ms)
        batch = await self.raw.getmany(*[_aio(tp) for tp in partitions], timeout_ms=timeout_ms,
                                       max_records=max_records)
        if self.contiguity is None:
            return {_ours(tp): records for tp, records in batch.items()}
        admitted: dict[TopicPartition, list[Record]] = {}
        for tp, records in batch.items():
            kept, hole = self.contiguity.admit(tp, records)
            if hole is not None:
                self.raw.seek(tp, hole)  # drops what aiokafka prefetched past the hole
            if kept:
                admitted[_ours(tp)] = kept
        return admitted

    async def _positions(self, timeout_ms: int) -> None:
        """Tell `contiguity` where each newly assigned partition will be read from.

        So a hole at the very first offset is seen too. Once per assignment: later offsets follow from the records.
        """
        assert self.contiguity is not None
        unknown = [tp for tp in self.raw.assignment() if not self.contiguity.expects(tp)]
        paused = self.raw.paused()  # read when resumed (a breaker's pause, a registry reader between catch-ups)
        for tp in unknown:
            if tp in paused:
                continue
            try:
                # The committed offset may still be on its way; then so are this partition's records.
                position = await asyncio.wait_for(self.raw.position(tp), max(timeout_ms, 100) / 1000)
            except (TimeoutError, IllegalStateError):
                return
            self.contiguity.expect(tp, position)
        self._unknown = any(tp in paused for tp in unknown)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Set the next offset to read. See `Consumer.seek`.

        Args:
            partition: An assigned partition.
            offset: The offset.
        """
        self.raw.seek(_aio(partition), offset)
        if self.contiguity is not None:
            self.contiguity.expect(partition, offset)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Move to the log start. See `Consumer.seek_to_beginning`.

        Args:
            *partitions: Assigned partitions (default: all).
        """
        await self.raw.seek_to_beginning(*[_aio(tp) for tp in partitions])
        self.moved(partitions or None)

    async def position(self, partition: TopicPartition) -> int:
        """The next offset to read. See `Consumer.position`.

        Args:
            partition: An assigned partition.

        Returns:
            The offset.
        """
        position: int = await self.raw.position(_aio(partition))
        return position

    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset. See `Consumer.committed`.

        Args:
            partition: Any partition.

        Returns:
            The offset or None.
        """
        committed: int | None = await self.raw.committed(_aio(partition))
        return committed

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit offsets for the group. See `Consumer.commit`.

        Args:
            offsets: Offset by assigned partition.

        Raises:
            CommitFailedError: A rebalance took the group (or these partitions) away meanwhile.
        """
        try:
            await self.raw.commit({_aio(tp): offset for tp, offset in offsets.items()})
        except (_AioCommitFailedError, IllegalStateError) as exc:
            raise CommitFailedError(str(exc)) from exc

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching these partitions. See `Consumer.pause`.

        Args:
            *partitions: Assigned partitions.
        """
        self.raw.pause(*[_aio(tp) for tp in partitions])

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch paused partitions again. See `Consumer.resume`.

        Args:
            *partitions: Assigned partitions.
        """
        self.raw.resume(*[_aio(tp) for tp in partitions])

    def highwater(self, partition: TopicPartition) -> int | None:
        """The end seen by the last fetch. See `Consumer.highwater`.

        Args:
            partition: An assigned partition.

        Returns:
            The offset or None.
        """
        highwater: int | None = self.raw.highwater(_aio(partition))
        return highwater

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Listed ends (short on Tansu). See `Consumer.end_offsets`.

        Args:
            partitions: Any partitions.

        Returns:
            End offset by partition.
        """
        listed = await self.raw.end_offsets([_aio(tp) for tp in partitions])
        return {_ours(tp): offset for tp, offset in listed.items()}

    async def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                                ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """First offset at or after a time. See `Consumer.offsets_for_times`.

        Args:
            timestamps: Milliseconds by partition.

        Returns:
            Offset and timestamp (or None) by partition.
        """
        found = await self.raw.offsets_for_times({_aio(tp): ms for tp, ms in timestamps.items()})
        # Nothing logged since then: Kafka answers None, Tansu offset 0 with timestamp -1.
        return {_ours(tp): None if at is None or at.timestamp is None or at.timestamp < 0
                else OffsetAndTimestamp(at.offset, at.timestamp) for tp, at in found.items()}
