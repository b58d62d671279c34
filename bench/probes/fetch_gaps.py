"""Does a fetch ever skip an offset while several producers append to one partition?

Kafka never does: the high watermark only covers offsets that are all readable, so a consumer's
position moves one offset at a time. Usage:

    python -m bench.probes.fetch_gaps [HOST:PORT] [--producers 8] [--records 2000] [--runs 5]

Without HOST:PORT an embedded Tansu is started. Each run uses a new one-partition topic (Tansu's
fetches slow down past a few thousand batches: see fetch_cost.py). Prints, per run, how many
offsets the live reader skipped (saw a later offset first), how many of those had been
acknowledged, and how many a second read from the start found.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Iterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def _produce(bootstrap: str, topic: str, count: int, acked: set[int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await producer.start()
    try:
        for i in range(count):
            acked.add((await producer.send_and_wait(topic, b"x" * 64, key=str(i).encode(), partition=0)).offset)
    finally:
        await producer.stop()


async def new_topic(bootstrap: str, probe: str) -> str:
    """A new one-partition topic's name."""
    topic = f"probe-{probe}-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    return topic


async def _probe(bootstrap: str, producers: int, records: int) -> tuple[int, int, int, int]:
    """(records acked, offsets skipped by the live read, of those acked ones, of those found on re-read)."""
    topic = await new_topic(bootstrap, "gaps")
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=5, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign([tp])
    acked: set[int] = set()
    seen: set[int] = set()
    skipped: set[int] = set()
    try:
        writers = asyncio.gather(*(_produce(bootstrap, topic, records // producers, acked)
                                   for _ in range(producers)))
        expected = 0
        deadline = time.monotonic() + 60
        while not (writers.done() and expected > max(acked)) and time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=200)
            for record in batch.get(tp, []):
                if record.offset > expected:
                    skipped.update(range(expected, record.offset))
                seen.add(record.offset)
                expected = record.offset + 1
        await writers
        # Were the skipped offsets in the log after all? Re-read everything from the start.
        consumer.seek(tp, 0)
        reread: set[int] = set()
        while not reread >= acked:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            if not batch:
                break
            reread.update(r.offset for r in batch.get(tp, []))
        return len(acked), len(skipped), len(skipped & acked), len(skipped & reread)
    finally:
        await consumer.stop()


@contextlib.contextmanager
def broker_at(address: str | None) -> Iterator[str]:
    """`address`, or an embedded Tansu's while the block runs."""
    if address:
        yield address
        return
    from choreograph.transport import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probes.fetch_gaps")
    parser.add_argument("bootstrap", nargs="?")
    parser.add_argument("--producers", type=int, default=8)
    parser.add_argument("--records", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with broker_at(args.bootstrap) as bootstrap:
        for run in range(args.runs):
            total, skipped, acked, found = asyncio.run(_probe(bootstrap, args.producers, args.records))
            print(f"run {run + 1}: {total} records acked from {args.producers} producers; offsets the live "
                  f"read skipped: {skipped}, of which acked: {acked}, found on re-read: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
