"""Publishing a step's result: its side events, then the result, on the workflow's partition.

Every event is checked against the maximum event size before anything is sent. A result (or side
event) too large to send fails the step instead (StepFailed, or CompensationFailed for an undo)
with an EventTooLarge reason: a handler's oversized output can never kill its agent, and since a
failure is a result, the input is not re-run forever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..errors import EventTooLarge
from ..events._envelope import Envelope, Kind, derived_id, fixed_headers
from ..events._faults import StepAttemptFailed
from ..events._models import CompensationFailed, Event, StepFailed
from ..telemetry._tracing import Tracing
from ..transport._port import Producer
from ..transport._sizes import HEADERS_ROOM, record_size
from ._acks import Acks, Pending
from ._agent import StepContext
from ._joins import Input

if TYPE_CHECKING:
    from ._attempts import Attempt

log = logging.getLogger("choreograph.agent")

_UNDO_KINDS = (Kind.COMPENSATION_COMPLETED, Kind.COMPENSATION_FAILED)


class Results:
    """Sends one agent's results and hands their acknowledgements to `acks`.

    Args:
        producer: A started producer.
        topic: The events topic.
        source: The agent's CloudEvents source.
        max_bytes: The maximum event size (Settings.max_event_bytes).
        acks: Where each result's pending acknowledgement goes.
        tracing: A PRODUCER span per event (its context is the event's traceparent), or None: off.
    """

    def __init__(self, producer: Producer, topic: str, source: str, max_bytes: int, acks: Acks,
                 tracing: Tracing | None = None) -> None:
        self._producer = producer
        self._topic = topic
        self._source = source
        self._max_bytes = max_bytes
        self._room = max_bytes - HEADERS_ROOM  # a value this size or less fits with any headers we add
        self._acks = acks
        self._fixed: dict[Kind, list[tuple[str, bytes]]] = {}
        self._tracing = tracing

    async def publish(self, ctx: StepContext, result: Event, kind: Kind, key: str, partition: int,
                      release: tuple[Input, ...], retry: Attempt | None = None) -> None:
        """Publish `ctx`'s side events, then `result`; the step is done once the broker has the result.

        Args:
            ctx: The handler's context (its workflow, step, attempt, cause and emitted events).
            result: The step's result event (or a StepAttemptFailed).
            kind: The result's kind.
            key: The tracking key of the step run.
            partition: The workflow's partition (the inputs'): naming it skips the producer's
                pure-Python murmur2, about 5% of a relay's CPU.
            release: Inputs whose pins are released once the result is acknowledged.
            retry: After a StepAttemptFailed: the next attempt, armed once it is acknowledged.
        """
        events = [*((e, Kind.OTHER) for e in ctx.emitted), (result, kind)]
        records = []
        tracing = self._tracing
        spans: list[Any] = []  # with tracing on: each event's PRODUCER span, ended once it is sent
        for index, (event, event_kind) in enumerate(events):
            # Deterministic ids: a result re-published after a crash, or re-produced by a sandbox
            # re-run (`choreo replay`), carries the id of the original. Each failed attempt has its own.
            if event_kind is Kind.OTHER:
                parts: tuple[str, ...] = ("other", ctx.step, kind.value, str(index))
            elif event_kind is Kind.STEP_ATTEMPT_FAILED:
                parts = (event_kind.value, ctx.step, "undo" if key != ctx.workflow_id else "do", str(ctx.attempt))
            else:
                parts = (event_kind.value, ctx.step)
            envelope = Envelope.new(type=event.type_name(), source=self._source, workflow=ctx.workflow,
                                    workflow_id=ctx.workflow_id, kind=event_kind, step=ctx.step, cause=ctx.cause,
                                    id=derived_id(ctx.workflow_id, *parts))
            if tracing is not None:  # started before the envelope is signed: its context is the traceparent
                span, envelope = tracing.send(envelope, self._topic, partition)
                spans.append(span)
            fixed = self._fixed.get(event_kind) or self._fixed.setdefault(
                event_kind, fixed_headers(self._source, ctx.workflow, event_kind, ctx.step))
            value, headers = event.encode(), envelope.headers_with(fixed)
            if len(value) + len(envelope.key) > self._room and (
                    size := record_size(envelope.key, value, headers)) > self._max_bytes:
                what = "the result" if event is result else "an event emitted by"
                if tracing is not None:
                    self._unsent(tracing, spans)
                await self._too_large(ctx, result, kind, key, partition, release, retry, EventTooLarge(
                    f"{what} of step {ctx.step!r} ({event.type_name()})", size, self._max_bytes))
                return
            records.append((value, envelope.key, headers))
        ack: asyncio.Future[Any] | None = None
        for value, record_key, headers in records:
            ack = await self._producer.send(self._topic, value=value, key=record_key, headers=headers,
                                            partition=partition)
        if tracing is not None:
            for span in spans:
                span.end()
        if ack is not None:  # always: the result is the last of `events`
            self._acks.add(Pending(ack, key, release, retry))

    @staticmethod
    def _unsent(tracing: Tracing, spans: list[Any]) -> None:
        for span in spans:
            tracing.failed(span, "EventTooLarge")
            span.end()

    async def note(self, ctx: StepContext, event: Event, kind: Kind, partition: int) -> None:
        """Send one event that is not a result (a heartbeat): no ack is awaited, nothing is released."""
        envelope = Envelope.new(type=event.type_name(), source=self._source, workflow=ctx.workflow,
                                workflow_id=ctx.workflow_id, kind=kind, step=ctx.step, cause=ctx.cause)
        span = None
        if (tracing := self._tracing) is not None:
            span, envelope = tracing.send(envelope, self._topic, partition)
        try:
            await self._send_note(ctx, event, envelope, partition)
        finally:
            if span is not None:
                span.end()

    async def _send_note(self, ctx: StepContext, event: Event, envelope: Envelope, partition: int) -> None:
        value, headers = event.encode(), envelope.headers()
        if (size := record_size(envelope.key, value, headers)) > self._max_bytes:
            log.warning("%s of %s: %s not sent (%d bytes)", ctx.step, ctx.workflow_id, event.type_name(), size)
            return
        await self._producer.send(self._topic, value=value, key=envelope.key, headers=headers, partition=partition)

    async def _too_large(self, ctx: StepContext, result: Event, kind: Kind, key: str, partition: int,
                         release: tuple[Input, ...], retry: Attempt | None, error: EventTooLarge) -> None:
        log.warning("%s of %s: %s", ctx.step, ctx.workflow_id, error)
        ctx.emitted.clear()
        failure: Event
        if isinstance(result, StepAttemptFailed):  # still a failed attempt, with a reason that fits
            failure = result.model_copy(update={"reason": str(error)})
        elif kind in _UNDO_KINDS:
            failure, kind = CompensationFailed(step=ctx.step, reason=str(error), error_type="EventTooLarge"), \
                Kind.COMPENSATION_FAILED
        else:
            failure, kind = StepFailed(step=ctx.step, reason=str(error), error_type="EventTooLarge",
                                       attempts=ctx.attempt), Kind.STEP_FAILED
        await self.publish(ctx, failure, kind, key, partition, release, retry)
