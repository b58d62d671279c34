"""FastStream's relay: `@broker.subscriber` + `@broker.publisher`, bytes in and out.

Settings: fetch_max_wait_ms from the broker profile, max_workers=64 (handlers run concurrently, as
choreograph's do by default; without it FastStream awaits each publish in turn: 256 events/s
against 490 here), linger_ms=0, acks=1, auto-commit; the body is taken as raw bytes (no pydantic
model: the best case for FastStream).
"""

import asyncio
import os

from faststream import FastStream
from faststream.kafka import KafkaBroker, KafkaMessage

broker = KafkaBroker(os.environ["KAFKA_BOOTSTRAP_SERVERS"], linger_ms=0, acks=1)
app = FastStream(broker)


@broker.subscriber(os.environ["RELAY_SOURCE"], group_id=os.environ["RELAY_GROUP"], auto_offset_reset="latest",
                   fetch_max_wait_ms=int(os.environ["RELAY_FETCH_WAIT_MS"]), max_workers=64)
@broker.publisher(os.environ["RELAY_TARGET"])
async def relay(body: bytes, message: KafkaMessage) -> bytes:
    return body


if __name__ == "__main__":
    asyncio.run(app.run())
