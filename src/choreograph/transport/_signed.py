"""A producer that signs every event it sends with its service's key (choreograph.security).

One Python frame and the signature (~34 us: the message, then Ed25519 in libsodium) on each send;
a service that does not sign uses the transport's producer as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ..security._signing import Signer
from ._port import Producer, RecordMetadata
from ._wrapped import WrappedProducer


class SigningProducer(WrappedProducer):
    """Wraps a Producer: what it sends carries the signer's `ce_keyid` and `ce_signature`.

    Records without a CloudEvents id (tombstones of the registry, plain records) are signed too:
    the signature covers a null value as well.

    Args:
        producer: The producer to send with (started and stopped through this one).
        signer: The service's signer.
    """

    def __init__(self, producer: Producer, signer: Signer) -> None:
        super().__init__(producer)
        self.signer = signer

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                   partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                   timestamp_ms: int | None = None) -> asyncio.Future[RecordMetadata]:
        """Sign, then send. See `Producer.send`."""
        signed = self.signer.sign(key, value, list(headers or ()))
        return await self.producer.send(topic, value, key, partition=partition, headers=signed,
                                        timestamp_ms=timestamp_ms)
