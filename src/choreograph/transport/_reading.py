"""Reading partitions from a start to an end, written once against the port for every transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping

from ._port import Record, TopicPartition, Transport


async def read_records(transport: Transport, partitions: Iterable[TopicPartition], *,
                       start: Mapping[TopicPartition, int] | None = None,
                       until: Mapping[TopicPartition, int] | None = None) -> AsyncIterator[Record]:
    """Records of the given partitions from `start` (default: beginning) to `until` (default: their end now).

    Args:
        transport: Makes the reader and finds true ends.
        partitions: The partitions to read.
        start: First offset by partition.
        until: End offset (exclusive) by partition.

    Yields:
        The records, in offset order within each partition.
    """
    tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    async with transport.reader(tps) as consumer:
        ends = dict(until) if until is not None else await transport.true_ends(consumer, tps)
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
