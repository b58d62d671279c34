"""Reading whole topics from a moment on: the status topic and the dead-letter topic are read so."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ._port import Consumer, Record, TopicPartition, Transport


async def seek_time(consumer: Consumer, tps: list[TopicPartition], ends: dict[TopicPartition, int],
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


async def read_since(transport: Transport, topic: str, since_ms: int | None) -> AsyncIterator[Record]:
    """Every partition of `topic` from `since_ms` (log time; None: the start) to its end now.

    Args:
        transport: The broker port.
        topic: The topic.
        since_ms: Where to start, Unix ms.

    Yields:
        The records, in offset order within each partition.
    """
    tps = [TopicPartition(topic, p) for p in range(await transport.partition_count(topic))]
    async with transport.reader(tps) as consumer:
        ends = await transport.true_ends(consumer, tps)
        await seek_time(consumer, tps, ends, since_ms)
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
