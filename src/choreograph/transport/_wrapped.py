"""A producer that wraps another: everything but `send` is the wrapped producer's.

The signing producer (`_signed.py`) and the metrics' counting producer (`choreograph.telemetry`)
each override `send` only; `send_and_wait` goes through that `send`, so what a wrapper adds happens
once per record whichever way it is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ._port import Producer, RecordMetadata


class WrappedProducer:
    """Delegates to `producer`; a subclass overrides `send`.

    Args:
        producer: The producer to send with (started and stopped through this one).
    """

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    async def start(self) -> None:
        """Start the wrapped producer."""
        await self.producer.start()

    async def stop(self) -> None:
        """Stop the wrapped producer."""
        await self.producer.stop()

    async def flush(self) -> None:
        """Flush the wrapped producer."""
        await self.producer.flush()

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                   partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                   timestamp_ms: int | None = None) -> asyncio.Future[RecordMetadata]:
        """Send through the wrapped producer. See `Producer.send`."""
        return await self.producer.send(topic, value, key, partition=partition, headers=headers,
                                        timestamp_ms=timestamp_ms)

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                            partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                            timestamp_ms: int | None = None) -> RecordMetadata:
        """Send (this wrapper's `send`), then wait for the acknowledgement. See `Producer.send_and_wait`."""
        return await (await self.send(topic, value, key, partition=partition, headers=headers,
                                      timestamp_ms=timestamp_ms))

    async def partitions_for(self, topic: str) -> set[int]:
        """The wrapped producer's answer."""
        return await self.producer.partitions_for(topic)
