"""The limit: a plain aiokafka consume-produce loop (bytes in, bytes out, key kept).

Settings: getmany batches of up to 1000, send without awaiting each ack, linger_ms=0,
auto-commit (5 s), fetch_max_wait_ms from the broker profile.
"""

import asyncio
import os

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def main() -> None:
    servers, source, target = (os.environ[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "RELAY_SOURCE", "RELAY_TARGET"))
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=0, acks=1)
    consumer = AIOKafkaConsumer(source, bootstrap_servers=servers, group_id=os.environ["RELAY_GROUP"],
                                auto_offset_reset="latest", fetch_max_wait_ms=int(os.environ["RELAY_FETCH_WAIT_MS"]))
    await producer.start()
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=1000)
            for records in batch.values():
                for record in records:
                    await producer.send(target, record.value, key=record.key)
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
