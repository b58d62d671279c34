"""What the coordinator writes: its decisions and dead letters, and the sends a commit waits for.

It stands alone because it is the coordinator's only way out to the log, and the part that carries
its telemetry: a PRODUCER span per decision (under the CONSUMER span of the event that decided it),
and the decided / dead-lettered counts. Folding (runtime._coordinator) says what to write; this says
how. Tracing off is one `is None` test per event and per decision, as before the split.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..events._envelope import COORDINATOR_SOURCE, GOAL_ID_HEADER, Envelope
from ..saga._decide import Decision, SagaState, decision_id
from ..telemetry._metrics import CoordinatorMetrics
from ..telemetry._tracing import Tracing, span_name
from ..transport._deadletter import DeadLetters
from ..transport._port import Producer, Record
from ._coordinator_state import Partition

log = logging.getLogger("choreograph.coordinator")


class Outbox:
    """Sends the coordinator's records and keeps their futures until a commit gathers them.

    Args:
        producer: The signing producer decisions go through (started by the coordinator).
        dead: Where refused and unreadable records go (unsigned: a dead letter keeps its record's signature).
        topic: The events topic.
        group: The coordinator's consumer group (named by its CONSUMER spans).
        tracing: Spans of each decision, or None when tracing is off.
        metrics: The coordinator's counters, or None when metrics are off.
    """

    def __init__(self, producer: Producer, dead: DeadLetters, topic: str, group: str, tracing: Tracing | None,
                 metrics: CoordinatorMetrics | None) -> None:
        self._producer = producer
        self._dead = dead
        self._topic = topic
        self._group = group
        self._tracing = tracing
        self._metrics = metrics
        self._pending: list[asyncio.Future[Any]] = []

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged (before a commit)."""
        while self._pending:
            pending, self._pending = self._pending, []
            await asyncio.gather(*pending)

    async def decide(self, part: Partition, state: SagaState, envelope: Envelope, record: Record,
                     decisions: list[Decision], started_ns: int) -> None:
        """Publish what an event decided; when tracing, under a CONSUMER span of that event."""
        if (tracing := self._tracing) is None:
            for decision in decisions:
                await self.publish(part, state, decision, envelope)
            return
        span = tracing.received(span_name("coordinate", envelope), envelope, record.topic, record.partition,
                                record.offset, self._group, start_ns=started_ns)
        try:
            for decision in decisions:
                await self.publish(part, state, decision, envelope, tracing.inside(span))
        finally:
            span.end()

    async def dead_letter(self, record: Record, reason: str, kind: str) -> None:
        """Dead-letter `record`; `kind` classes the reason for metrics: unreadable, untrusted, contract, refused."""
        log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
        self._pending.append(await self._dead.send(record, reason))
        if self._metrics is not None:
            self._metrics.dead_letter(kind)

    async def publish(self, part: Partition, state: SagaState, decision: Decision, cause: Envelope | None,
                      parent: Any = None) -> None:
        """Publish one decision (its id is deterministic: a re-publish is a no-op), caused by `cause`."""
        event_id = decision_id(state.workflow_id, decision)
        envelope = Envelope.new(
            type=decision.event.type_name(), source=COORDINATOR_SOURCE, workflow=state.workflow,
            workflow_id=state.workflow_id, kind=decision.kind, step=decision.step, cause=cause,
        ).with_id(event_id)
        if (tracing := self._tracing) is not None:
            # A decision's PRODUCER span: under its event's CONSUMER span, or (a timer's, a settling's)
            # under its cause's context. Started before the envelope is signed: it is the traceparent.
            if parent is None and cause is not None:
                parent = tracing.remote(cause.traceparent)
            span, envelope = tracing.send(envelope, self._topic, part.progress.partition, parent)
            try:
                return await self._send(part, state, envelope, decision)
            finally:
                span.end()
        await self._send(part, state, envelope, decision)

    async def _send(self, part: Partition, state: SagaState, envelope: Envelope, decision: Decision) -> None:
        headers = envelope.headers()
        if (goal_id := part.goal_ids.get(state.workflow_id)) is not None:
            # Which goal the workflow runs for: a client that published a second goal with this id
            # (dead-lettered) must not take this workflow's outcome for its own.
            headers.append((GOAL_ID_HEADER, goal_id.encode()))
        future = await self._producer.send(self._topic, value=decision.encoded(), key=envelope.key, headers=headers)
        self._pending.append(future)
        if self._metrics is not None:
            self._metrics.decided(state.workflow, decision)
