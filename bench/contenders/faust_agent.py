"""faust-streaming's relay: one `@app.agent` that forwards each event's value and key.

Settings a competent user would choose here: value_serializer="raw" (no JSON/Record cost: the
best case for faust), web server off, in-memory store, and fetch_max_wait_ms patched from the
hard-coded 1500 ms to the broker profile's value, without which every hop on Tansu takes ~1.5 s.
"""

import os

import aiokafka
import faust

_wait = int(os.environ.get("RELAY_FETCH_WAIT_MS", "5"))


class _Consumer(aiokafka.AIOKafkaConsumer):  # type: ignore[misc]
    """faust builds its consumer as aiokafka.AIOKafkaConsumer(..., fetch_max_wait_ms=1500)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["fetch_max_wait_ms"] = _wait
        super().__init__(*args, **kwargs)


aiokafka.AIOKafkaConsumer = _Consumer  # type: ignore[misc]

app = faust.App(
    os.environ.get("RELAY_GROUP", "bench-faust"),
    broker="kafka://" + os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    value_serializer="raw", key_serializer="raw", web_enabled=False, store="memory://",
    topic_partitions=4, producer_linger_ms=0, consumer_auto_offset_reset="latest",
    broker_commit_every=1000, datadir=os.environ.get("RELAY_DATADIR", "faust-data"),
)
source = app.topic(os.environ.get("RELAY_SOURCE", "bench-a"), value_serializer="raw", key_serializer="raw")
target = app.topic(os.environ.get("RELAY_TARGET", "bench-b"), value_serializer="raw", key_serializer="raw")


@app.agent(source)
async def relay(stream: faust.Stream) -> None:
    async for event in stream.events():
        await target.send(key=event.key, value=event.value)


if __name__ == "__main__":
    app.main()
