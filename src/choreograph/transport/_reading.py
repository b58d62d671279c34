"""Reading partitions from an offset or a moment to an end, written once against the port for every transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping

from ._port import Consumer, Record, TopicPartition, Transport


async def seek_time(consumer: Consumer, tps: list[TopicPartition], ends: Mapping[TopicPartition, int],
                    at_ms: int | None) -> None:
    """Seek each partition to its first record at or after `at_ms` (its end if none is; its start for None)."""
    if at_ms is None:
        await consumer.seek_to_beginning(*tps)
        return
    found = await consumer.offsets_for_times({tp: max(0, at_ms) for tp in tps})
    for tp in tps:
        hit = found.get(tp)
        # Nothing since then: Kafka answers None, Tansu offset 0 with timestamp -1.
        consumer.seek(tp, ends[tp] if hit is None or hit.timestamp < 0 else hit.offset)


async def read_records(transport: Transport, partitions: Iterable[TopicPartition], *,
                       start: Mapping[TopicPartition, int] | None = None,
                       until: Mapping[TopicPartition, int] | None = None,
                       since_ms: int | None = None) -> AsyncIterator[Record]:
    """Records of the given partitions from `start` (default: beginning) to `until` (default: their end now).

    Args:
        transport: Makes the reader and finds true ends.
        partitions: The partitions to read.
        start: First offset by partition.
        until: End offset (exclusive) by partition.
        since_ms: Instead of `start`: from each partition's first record logged at or after this time.

    Yields:
        The records, in offset order within each partition.
    """
    tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    async with transport.reader(tps) as consumer:
        ends = dict(until) if until is not None else await transport.true_ends(consumer, tps)
        if since_ms is not None:
            await seek_time(consumer, tps, ends, since_ms)
        else:
            for tp in tps:
                begin = (start or {}).get(tp)
                if begin is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, begin)
        remaining = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
            # Every partition, not only those with records: a fetch can move past a compacted gap.
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            await asyncio.sleep(0)


async def read_since(transport: Transport, topic: str, since_ms: int | None) -> AsyncIterator[Record]:
    """Every partition of `topic` from `since_ms` (log time; None: the start) to its end now.

    The status topic and the dead-letter topic are read so.
    """
    tps = [TopicPartition(topic, p) for p in range(await transport.partition_count(topic))]
    async for record in read_records(transport, tps, since_ms=since_ms):
        yield record
