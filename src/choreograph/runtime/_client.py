"""What users and the CLI call: publish a goal, wait for a workflow's outcome, cancel a workflow.

A goal is validated against the workflow's goal schema, as its entry agents announced it, and may
carry a deadline for the whole workflow (the coordinator times out what still runs then, compensates,
and ends the workflow `timed_out`). A cancellation is published only for a workflow whose goal is
in the log and that has no outcome yet (see Client.cancel).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastavro.validation import ValidationError, validate

from ..errors import DecodeError, EventTooLarge, GoalRejected, GoalValidationError, WorkflowError, WorkflowFinished
from ..events._avro import AvroSchema
from ..events._envelope import (
    CLIENT_SOURCE,
    DEADLINE_HEADER,
    GOAL_ID_HEADER,
    Envelope,
    Kind,
    new_workflow_id,
    text_of,
)
from ..events._models import CancellationRequested, WorkflowOutcome
from ..events._policy import millis
from ..saga._graph import goal_types
from ..security._identity import may_publish
from ..security._verify import Rejected, Verifier
from ..telemetry import _tracing as attributes
from ..telemetry._tracing import Tracing, message_attributes, span_name, tracing
from ..transport._clock import SYSTEM_CLOCK, Clock
from ..transport._deadletter import CONSUMER, OFFSET, PARTITION, REASON, TOPIC
from ..transport._kafka import Kafka
from ..transport._keyring import publisher_identity
from ..transport._port import Consumer, Producer, Record, TopicPartition, Transport
from ..transport._registry import Registry
from ..transport._settings import Settings
from ..transport._sizes import record_size
from ..transport._trust import Trust
from ._lookup import standing

log = logging.getLogger("choreograph.client")
CANCELLED_ON_REQUEST = "cancelled on request"  # a cancellation's reason when none is given


@dataclass(frozen=True)
class PublishedGoal:
    """Where a published goal (or a cancellation, see Client.cancel) landed: workflow, workflow id, partition, offset.

    `event_id` (the goal's ce_id) and `published_ms` (wall time just before it was sent) let a wait
    tell this goal's outcome from another goal's with the same workflow id, and find its dead letter.
    `deadline_ms` is the workflow's deadline (Unix ms) if the goal gave one. `read_from` is where a
    wait starts reading, if not at `offset`: a cancellation's wait reads from where its check of the
    workflow stopped, so an outcome logged just before the cancellation is not missed.
    """
    workflow: str
    workflow_id: str
    partition: int
    offset: int
    event_id: str = ""
    published_ms: int = 0
    deadline_ms: int | None = None
    read_from: int | None = None


class Client:
    """Publishes goals and follows workflows: `async with Client(settings) as c: await c.publish(...)`.

    Args:
        settings: Broker, namespace and topics.
        source: The CloudEvents source of the goals it publishes.
        transport: The broker port; Kafka (aiokafka) unless given, e.g. the memory log of the test kit.
        clock: The time a goal's deadline counts from; the wall clock unless given.
        trust: What it signs goals with and believes (see transport.Trust); when None, the
            environment's for `publisher:<CHOREO_PUBLISHER>` (see transport._keyring).
    """

    def __init__(self, settings: Settings, source: str = CLIENT_SOURCE, *, transport: Transport | None = None,
                 clock: Clock | None = None, trust: Trust | None = None) -> None:
        self.settings = settings
        self._clock: Clock = clock or SYSTEM_CLOCK
        self._kafka: Transport = transport if transport is not None else Kafka(settings)
        self._registry = Registry(self._kafka)
        self._trust = trust
        self._verifier: Verifier | None = None
        self._producer: Producer  # made on entry, inside the running loop
        self._source = source
        self._goal_schemas: dict[str, AvroSchema] = {}
        self._tracing: Tracing | None = None  # decided on entry

    async def __aenter__(self) -> Client:
        await self._kafka.ensure_topics()
        self._tracing = tracing()
        if self._trust is None:
            self._trust = Trust.from_env(publisher_identity())
        # Goals are validated against the registry's contracts: only those their own agents announced
        # (a forged contract or retirement would change the goal schema users must fill).
        self._verifier = self._registry.verifier = self._trust.verifier
        self._producer = self._trust.producer(self._kafka.producer())
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

    async def publish(self, workflow: str, data: dict[str, Any], workflow_id: str | None = None, *,
                      deadline: timedelta | float | None = None) -> PublishedGoal:
        """Publish a goal of `workflow` with `data`, validated against the announced goal schema.

        Args:
            workflow: The workflow's name.
            data: The goal's fields (defaults are filled in).
            workflow_id: The workflow id; a new UUIDv7 unless given.
            deadline: How long (seconds or a timedelta, from now) the whole workflow may take. When it
                passes, the coordinator times out every step still running, compensates what
                completed, and the outcome is `timed_out`. None: no deadline.

        Returns:
            Where the goal landed.

        Raises:
            WorkflowError: No agent announced the workflow, or it has several goal types.
            GoalValidationError: `data` does not fit the goal schema, `workflow_id` is empty, or the
                deadline is not positive.
            EventTooLarge: The goal is larger than the maximum event size.
        """
        if workflow_id is not None and not workflow_id:
            raise GoalValidationError("a workflow id cannot be empty")
        within = millis(deadline)
        if within is not None and within <= 0:
            raise GoalValidationError(f"a workflow deadline must be in the future, got {deadline!r}")
        schema = await self.goal_schema(workflow)
        record = conform(schema, data)
        envelope = Envelope.new(type=schema.name, source=self._source, workflow=workflow,
                                workflow_id=workflow_id or new_workflow_id(), kind=Kind.GOAL)
        value, headers, limit = schema.encode(record), envelope.headers(), self.settings.max_event_bytes
        deadline_ms = None if within is None else self._clock.now_ms() + within
        if deadline_ms is not None:
            headers.append((DEADLINE_HEADER, str(deadline_ms).encode()))
        if (size := record_size(envelope.key, value, headers)) > limit:
            raise EventTooLarge(f"the goal of workflow {workflow!r}", size, limit)
        published_ms = time.time_ns() // 1_000_000
        meta = await self._send(envelope, value, headers)
        return PublishedGoal(workflow, envelope.workflow_id, meta.partition, meta.offset, envelope.id, published_ms,
                             deadline_ms)

    async def cancel(self, workflow_id: str, reason: str = CANCELLED_ON_REQUEST) -> PublishedGoal:
        """Ask the coordinator to cancel a running workflow: publish a CancellationRequested keyed by its id.

        The workflow's partition is read first: nothing is published for an id with no goal in the log,
        or for a workflow with an outcome. The coordinator then compensates its completed steps in
        reverse dependency order (and the results of steps still running, when they come), and ends it
        `cancelled` with `reason`. It believes the request only from a publisher the policy lets
        publish the workflow's goals, or an operator (security.may_publish); this client checks that
        first against its own policy.

        Args:
            workflow_id: The workflow instance's id.
            reason: Why; the outcome's reason.

        Returns:
            Where the cancellation landed, as a goal to wait on (`wait`): its `event_id` is the
            workflow's goal's, its `offset` the cancellation's.

        Raises:
            WorkflowFinished: The workflow has an outcome already.
            WorkflowError: No goal of `workflow_id` is in the log, or this client's identity may not
                cancel the workflow.
            EventTooLarge: The cancellation (its reason) is larger than the maximum event size.
        """
        topic = self.settings.events_topic
        found = await standing(self._kafka, topic, workflow_id, self._registry.store, self._verifier)
        if found.goal_id is None and found.outcome is None:
            raise WorkflowError(f"no workflow {workflow_id!r}: no goal of it is in the log; nothing published")
        if found.outcome is not None:
            raise WorkflowFinished(workflow_id, found.outcome.status.value)
        event = CancellationRequested(reason=reason or CANCELLED_ON_REQUEST)
        envelope = Envelope.new(type=event.type_name(), source=self._source, workflow=found.workflow,
                                workflow_id=workflow_id, kind=Kind.CANCEL_REQUESTED)
        if (trust := self._trust) is not None and (me := trust.identity) is not None and trust.verifier is not None:
            refusal = may_publish(me, type=envelope.type, kind=envelope.kind, source=envelope.source,
                                  workflow=found.workflow, step=None, goals=trust.verifier.policy.goals(me))
            if refusal is not None:
                raise WorkflowError(f"{refusal}; nothing published")
        value, headers = event.encode(), envelope.headers()
        if (size := record_size(envelope.key, value, headers)) > (limit := self.settings.max_event_bytes):
            raise EventTooLarge(f"the cancellation of {workflow_id}", size, limit)
        published_ms = time.time_ns() // 1_000_000
        meta = await self._send(envelope, value, headers)
        return PublishedGoal(found.workflow, workflow_id, meta.partition, meta.offset, found.goal_id or "",
                             published_ms, read_from=found.end)

    async def _send(self, envelope: Envelope, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
        """Send one event and wait for it to be stored; when tracing, in a PRODUCER span.

        The span is a child of the caller's current span (a web request's, say), or the root of a
        new trace: one trace per goal. Its context is the event's traceparent, replaced here before
        the producer signs the headers.
        """
        topic = self.settings.events_topic
        if (traced := self._tracing) is None:
            return await self._producer.send_and_wait(topic, value=value, key=envelope.key, headers=headers)
        span = traced.producer(span_name("send", envelope, envelope.workflow),
                               message_attributes("send", topic, None, envelope))
        if (traceparent := traced.traceparent(span)) is not None:  # the headers are signed when sent
            headers = [("traceparent", traceparent.encode()) if name == "traceparent" else (name, data)
                       for name, data in headers]
        try:
            meta = await self._producer.send_and_wait(topic, value=value, key=envelope.key, headers=headers)
            span.set_attributes({attributes.PARTITION: str(meta.partition), attributes.OFFSET: meta.offset})
            return meta
        except Exception as exc:
            traced.failed(span, exc)
            raise
        finally:
            span.end()

    async def wait(self, goal: PublishedGoal, timeout_s: float) -> WorkflowOutcome | None:
        """The workflow's outcome, or None if it has none within `timeout_s`.

        Raises:
            GoalRejected: The coordinator dead-lettered the goal (e.g. a duplicate workflow id).
        """
        outcomes = await self.wait_many([goal], timeout_s)
        return outcomes.get(goal.workflow_id)

    async def wait_many(self, goals: list[PublishedGoal], timeout_s: float) -> dict[str, WorkflowOutcome]:
        """Outcomes of the given goals that arrive within `timeout_s`.

        Raises:
            GoalRejected: The coordinator dead-lettered one of the goals.
        """
        found: dict[str, WorkflowOutcome] = {}
        async for update in self.follow(goals, timeout_s):
            if update.outcome is not None:
                found[update.workflow_id] = update.outcome
        return found

    async def follow(self, goals: list[PublishedGoal], timeout_s: float) -> AsyncIterator[Progress]:
        """Each event of the given workflows as it is logged, until all have an outcome or time is up.

        An outcome counts for a goal only if the workflow it ends was started by that goal: a goal
        reusing the id of another workflow does not take that workflow's outcome for its own.

        Raises:
            GoalRejected: The coordinator dead-lettered one of the goals (its reason is given).
        """
        start: dict[TopicPartition, int] = {}
        for g in goals:
            tp = TopicPartition(self.settings.events_topic, g.partition)
            at = g.offset if g.read_from is None else g.read_from
            start[tp] = min(start.get(tp, at), at)
        by_id = {g.workflow_id: g for g in goals}
        watch = _Rejections(self.settings, goals)
        async with self._kafka.reader([*start, *watch.partitions]) as consumer:
            for tp, offset in start.items():
                consumer.seek(tp, offset)
            await watch.seek(consumer)
            deadline = time.monotonic() + timeout_s
            while by_id and (left := deadline - time.monotonic()) > 0:
                batch = await consumer.getmany(timeout_ms=max(1, int(min(left, 0.5) * 1000)))
                for tp, records in batch.items():
                    if tp.topic == watch.topic:
                        watch.check(records)
                        continue
                    for record in records:
                        if (progress := self._progress(record, by_id)) is not None:
                            if progress.outcome is not None:
                                del by_id[progress.workflow_id]
                            yield progress

    def _progress(self, record: Record, goals: dict[str, PublishedGoal]) -> Progress | None:
        """What one record tells about a followed goal, if anything."""
        if (key := text_of(record.key)) is None or (goal := goals.get(key)) is None:
            return None
        try:
            envelope = Envelope.from_record(record.key, record.headers)
            outcome = (WorkflowOutcome.decode(record.value or b"", self._registry.store)
                       if envelope.kind is Kind.OUTCOME else None)
        except DecodeError:
            return None
        if (verifier := self._verifier) is not None and isinstance(
                why := verifier.admit(envelope, record.key, record.value, record.headers, record.timestamp), Rejected):
            log.warning("not believing %s of %s at %s[%d]@%d: %s", envelope.kind.value, key, record.topic,
                        record.partition, record.offset, why)
            return None  # forged progress or a forged outcome: waiting goes on for the real one
        if outcome is not None and goal.event_id:
            runs_for = next((v for name, v in record.headers if name == GOAL_ID_HEADER), None)
            if runs_for is not None and runs_for != goal.event_id.encode():
                return None  # the outcome of an earlier goal with this id: ours is a duplicate
        return Progress(key, envelope.kind, envelope.step, outcome)


class _Rejections:
    """Watches the dead-letter topic for the coordinator's dead letter of a followed goal."""

    def __init__(self, settings: Settings, goals: list[PublishedGoal]) -> None:
        self.topic = settings.deadletter_topic
        self.partitions = [TopicPartition(self.topic, 0)]
        self._events = settings.events_topic.encode()
        self._coordinator = settings.coordinator_group.encode()
        self._goals = {(str(g.partition).encode(), str(g.offset).encode()): g for g in goals}
        # Dead letters carry the coordinator's clock (or the broker's append time): a minute's margin.
        self._since = max(0, min(g.published_ms for g in goals) - 60_000) if goals else 0

    async def seek(self, consumer: Consumer) -> None:
        found = await consumer.offsets_for_times({tp: self._since for tp in self.partitions})
        for tp in self.partitions:
            hit = found.get(tp)
            if hit is not None:
                consumer.seek(tp, hit.offset)
            else:
                consumer.seek(tp, (await consumer.end_offsets([tp]))[tp])

    def check(self, records: list[Record]) -> None:
        for record in records:
            headers = dict(record.headers)
            if headers.get(TOPIC) != self._events or headers.get(CONSUMER) != self._coordinator:
                continue
            goal = self._goals.get((headers.get(PARTITION) or b"", headers.get(OFFSET) or b""))
            if goal is not None:
                reason = (headers.get(REASON) or b"").decode(errors="replace")
                raise GoalRejected(f"goal of {goal.workflow_id} was dead-lettered by the coordinator: {reason}")


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
