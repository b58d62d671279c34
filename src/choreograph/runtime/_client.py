"""What users and the CLI call: publish a goal, and wait for a workflow's outcome.

A goal is validated against the workflow's goal schema, as its entry agents announced it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastavro.validation import ValidationError, validate

from ..errors import DecodeError, GoalValidationError, WorkflowError
from ..events._avro import AvroSchema
from ..events._envelope import CLIENT_SOURCE, Envelope, Kind, new_workflow_id
from ..events._models import WorkflowOutcome
from ..saga._graph import goal_types
from ..transport._kafka import Kafka
from ..transport._port import Producer, TopicPartition, Transport
from ..transport._registry import Registry
from ..transport._settings import Settings


@dataclass(frozen=True)
class PublishedGoal:
    """Where a published goal landed: its workflow, workflow id, partition and offset."""
    workflow: str
    workflow_id: str
    partition: int
    offset: int


class Client:
    """Publishes goals and follows workflows: `async with Client(settings) as c: await c.publish(...)`.

    Args:
        settings: Broker, namespace and topics.
        source: The CloudEvents source of the goals it publishes.
        transport: The broker port; Kafka (aiokafka) unless given, e.g. the memory log of the test kit.
    """

    def __init__(self, settings: Settings, source: str = CLIENT_SOURCE, *, transport: Transport | None = None) -> None:
        self.settings = settings
        self._kafka: Transport = transport if transport is not None else Kafka(settings)
        self._registry = Registry(self._kafka)
        self._producer: Producer  # made on entry, inside the running loop
        self._source = source
        self._goal_schemas: dict[str, AvroSchema] = {}

    async def __aenter__(self) -> Client:
        await self._kafka.ensure_topics()
        self._producer = self._kafka.producer()
        await self._producer.start()
        await self._registry.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._registry.stop()
        await self._producer.stop()

    async def goal_schema(self, workflow: str) -> AvroSchema:
        """The one goal event type of `workflow`, from the registry; looked up once per client.

        Cached because a registry round trip per goal would cap publishing rates. A goal encoded
        with the schema this client first saw stays readable after the schema evolves (resolution).
        """
        if (cached := self._goal_schemas.get(workflow)) is not None:
            return cached
        await self._registry.catch_up()
        goals = goal_types(workflow, self._registry.contracts.values())
        if not goals:
            known = sorted({c.workflow for c in self._registry.contracts.values()})
            raise WorkflowError(f"no agent has announced workflow {workflow!r}; known workflows: {known}")
        if len(goals) > 1:
            raise WorkflowError(f"workflow {workflow!r} has several goal types: {sorted(goals)}")
        schema = self._goal_schemas[workflow] = AvroSchema.from_json(next(iter(goals.values())))
        return schema

    async def publish(self, workflow: str, data: dict[str, Any], workflow_id: str | None = None) -> PublishedGoal:
        """Publish a goal of `workflow` with `data`, validated against the announced goal schema.

        Args:
            workflow: The workflow's name.
            data: The goal's fields (defaults are filled in).
            workflow_id: The workflow id; a new UUIDv7 unless given.

        Returns:
            Where the goal landed.

        Raises:
            WorkflowError: No agent announced the workflow, or it has several goal types.
            GoalValidationError: `data` does not fit the goal schema.
        """
        schema = await self.goal_schema(workflow)
        record = conform(schema, data)
        envelope = Envelope.new(type=schema.name, source=self._source, workflow=workflow,
                                workflow_id=workflow_id or new_workflow_id(), kind=Kind.GOAL)
        meta = await self._producer.send_and_wait(self.settings.events_topic, value=schema.encode(record),
                                                  key=envelope.key, headers=envelope.headers())
        return PublishedGoal(workflow, envelope.workflow_id, meta.partition, meta.offset)

    async def wait(self, goal: PublishedGoal, timeout_s: float) -> WorkflowOutcome | None:
        """The workflow's outcome, or None if it has none within `timeout_s`."""
        outcomes = await self.wait_many([goal], timeout_s)
        return outcomes.get(goal.workflow_id)

    async def wait_many(self, goals: list[PublishedGoal], timeout_s: float) -> dict[str, WorkflowOutcome]:
        """Outcomes of the given goals that arrive within `timeout_s`."""
        found: dict[str, WorkflowOutcome] = {}
        async for update in self.follow(goals, timeout_s):
            if update.outcome is not None:
                found[update.workflow_id] = update.outcome
        return found

    async def follow(self, goals: list[PublishedGoal], timeout_s: float) -> AsyncIterator[Progress]:
        """Each event of the given workflows as it is logged, until all have an outcome or time is up."""
        start: dict[TopicPartition, int] = {}
        for g in goals:
            tp = TopicPartition(self.settings.events_topic, g.partition)
            start[tp] = min(start.get(tp, g.offset), g.offset)
        open_ids = {g.workflow_id for g in goals}
        async with self._kafka.reader(start) as consumer:
            for tp, offset in start.items():
                consumer.seek(tp, offset)
            deadline = time.monotonic() + timeout_s
            while open_ids and (left := deadline - time.monotonic()) > 0:
                batch = await consumer.getmany(timeout_ms=max(1, int(min(left, 0.5) * 1000)))
                for records in batch.values():
                    for record in records:
                        key = record.key.decode() if record.key else ""
                        if key not in open_ids:
                            continue
                        try:
                            envelope = Envelope.from_record(record.key, record.headers)
                            outcome = (WorkflowOutcome.decode(record.value or b"", self._registry.store)
                                       if envelope.kind is Kind.OUTCOME else None)
                        except DecodeError:
                            continue
                        if outcome is not None:
                            open_ids.discard(key)
                        yield Progress(key, envelope.kind, envelope.step, outcome)


@dataclass(frozen=True)
class Progress:
    """One event of a followed workflow."""

    workflow_id: str
    kind: Kind
    step: str | None
    outcome: WorkflowOutcome | None


def conform(schema: AvroSchema, data: Any) -> dict[str, Any]:
    """Goal data as a record of `schema` (defaults filled), or GoalValidationError saying why not."""
    if not isinstance(data, dict):
        raise GoalValidationError(f"goal data must be a JSON object, got {type(data).__name__}")
    fields = {f["name"]: f for f in schema.source["fields"]}
    unknown = sorted(data.keys() - fields.keys())
    if unknown:
        raise GoalValidationError(f"{schema.name}: unknown fields {unknown}; expected {sorted(fields)}")
    record = {name: data[name] if name in data else f.get("default") for name, f in fields.items()}
    missing = sorted(n for n, f in fields.items() if n not in data and "default" not in f)
    if missing:
        raise GoalValidationError(f"{schema.name}: missing required fields {missing}")
    try:
        validate(record, schema.parsed, raise_errors=True)
    except ValidationError as exc:
        raise GoalValidationError(f"{schema.name}: {exc}") from exc
    return record
