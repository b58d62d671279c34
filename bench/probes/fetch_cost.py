"""How a fetch's time grows with the number of batches in a partition.

Usage:

    python -m bench.probes.fetch_cost [HOST:PORT]

Without HOST:PORT an embedded Tansu is started. Appends one-record batches (each send acknowledged
before the next) and, at several sizes, times reading the last 10 records and the whole partition;
then the same with batches of 100 records.
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from .fetch_gaps import broker_at, new_topic


async def _read(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int) -> str:
    consumer.seek(tp, start)
    got, began = 0, time.perf_counter()
    while got < end - start and time.perf_counter() - began < 30:
        got += len((await consumer.getmany(tp, timeout_ms=1000)).get(tp, []))
    return f"{got} records from offset {start} in {(time.perf_counter() - began) * 1000:.0f} ms"


async def _probe(bootstrap: str, batch: int, sizes: tuple[int, ...]) -> None:
    topic = await new_topic(bootstrap, "cost")
    tp = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=5, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    consumer.assign([tp])
    try:
        written = 0
        for size in sizes:
            while written < size:
                await asyncio.gather(*[await producer.send(topic, b"x" * 64) for _ in range(batch)])
                written += batch
            print(f"{size} records in batches of {batch}: tail {await _read(consumer, tp, size - 10, size)}; "
                  f"all {await _read(consumer, tp, 0, size)}")
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> int:
    with broker_at(sys.argv[1] if len(sys.argv) > 1 else None) as bootstrap:
        asyncio.run(_probe(bootstrap, 1, (1000, 2000, 4000, 8000)))
        asyncio.run(_probe(bootstrap, 100, (8000, 32000)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
