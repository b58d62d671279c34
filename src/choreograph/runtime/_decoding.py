"""An agent's reading of the events it acts on: typed, with their envelope, or dead-lettered.

A payload written with a schema the agent has not seen yet may be a newer version announced on
the registry since it started: the registry is read (once per miss) before giving up. The same
reader gives the agent the step contracts that say which step completes with which type (see
runtime._provenance).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import DecodeError, UnknownSchemaError
from ..events._avro import SchemaStore
from ..events._envelope import Envelope
from ..events._models import Event
from ..security._verify import Verifier
from ..telemetry._metrics import ServiceMetrics
from ..transport._deadletter import DeadLetters
from ..transport._port import Record, Transport
from ..transport._registry import Contracts, Registry

log = logging.getLogger("choreograph.agent")


class Decoding:
    """Decodes records for one agent and learns newer schemas from the registry on a miss.

    Args:
        name: The agent's name (for logs).
        kafka: Its transport (the registry is read through it).
        store: Its schema store (the registry adds to it).
        verifier: Where signatures are verified: the registry's contracts are believed only when
            signed by their own agent (None: all).
    """

    __slots__ = ("_kafka", "_name", "_registry", "_verifier", "dead", "metrics", "pending", "store")

    def __init__(self, name: str, kafka: Transport, store: SchemaStore, verifier: Verifier | None = None) -> None:
        self._name = name
        self._kafka = kafka
        self.store = store
        self._verifier = verifier
        self._registry: Registry | None = None
        self.dead: DeadLetters  # set by the agent once its producer exists
        self.pending: list[asyncio.Future[Any]] = []  # dead letters sent, not yet acknowledged
        self.metrics: ServiceMetrics | None = None  # counts dead letters when metrics are on

    async def decode(self, record: Record, model: type[Event]) -> tuple[Event, Envelope] | None:
        """The typed event and its envelope, or None after dead-lettering a record we cannot read."""
        try:
            if record.value is None:
                raise DecodeError("tombstone (null value): not an event")
            envelope = Envelope.from_record(record.key, record.headers)
            try:
                return model.decode(record.value, self.store), envelope
            except UnknownSchemaError:
                await self.learn_schemas()  # maybe a newer writer schema was announced since
                return model.decode(record.value, self.store), envelope
        except DecodeError as exc:
            log.warning("%s: dead-lettering %s[%d]@%d: %s", self._name, record.topic,
                        record.partition, record.offset, exc)
            self.pending.append(await self.dead.send(record, str(exc)))
            if self.metrics is not None:
                self.metrics.dead_letter("unreadable")
            return None

    @property
    def contracts(self) -> Contracts | None:
        """The step contracts read from the registry; None until it is first read."""
        return self._registry

    async def learn_schemas(self) -> None:
        """Read the registry to its end (started on first use): new schemas, and new contracts."""
        if self._registry is None:
            self._registry = Registry(self._kafka, self.store, self._verifier)
            await self._registry.start()
        await self._registry.catch_up()

    async def stop(self) -> None:
        """Stop the registry reader, if one was started."""
        if self._registry is not None:
            await self._registry.stop()
