"""An agent instance on the status topic: who it is, that it is alive, and its breaker's transitions.

Each running agent has an instance id (`host-pid-xxxx`). Every `interval` it publishes an
AgentPresence (its breaker's state, handler runs in progress, consumer lag, its rate limit and
whether it was throttled), and a last one with
`stopping=True` when it stops; silence for three intervals means it is gone (killed). Breaker
transitions are BreakerChanged events. All are keyed by the instance id, with the usual envelope
headers (ce_type names the event), so a reader (`choreo agents`) decodes them as any event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable
from typing import NamedTuple

from ..events._envelope import Envelope, Kind
from ..events._faults import AgentPresence, BreakerChanged, BreakerState
from ..events._models import Event
from ..transport._clock import Clock
from ..transport._port import Producer
from ._agent import Agent

log = logging.getLogger("choreograph.agent")


def instance_id() -> str:
    """A new instance id: host, process id and four random hex digits (a restarted pid differs)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class Snapshot(NamedTuple):
    """What a presence record reports of the instance now."""

    breaker: BreakerState
    running: int
    lag: int
    throttled: bool = False


class Presence:
    """Publishes one agent instance's presence and breaker transitions on the status topic.

    Args:
        producer: A started producer.
        topic: The status topic.
        agent: The agent.
        clock: The time of the records and of the period.
        interval_ms: The period of presence records.
        snapshot: The instance's state now.
    """

    def __init__(self, producer: Producer, topic: str, agent: Agent, clock: Clock, interval_ms: int,
                 snapshot: Callable[[], Snapshot]) -> None:
        self.instance = instance_id()
        self._producer = producer
        self._topic = topic
        self._agent = agent
        self._clock = clock
        self._interval_ms = interval_ms
        self._snapshot = snapshot
        self._started_at = clock.now_ms()

    async def run(self) -> None:
        """Publish a presence record now and every interval after (until cancelled)."""
        due = self._clock.now_ms()
        while True:
            await self._send_presence(stopping=False)
            due = max(due + self._interval_ms, self._clock.now_ms())
            await self._clock.sleep_until(due)

    async def leaving(self) -> None:
        """Publish the last presence record (stopping) and wait until the log has it."""
        await (await self._send_presence(stopping=True))

    async def breaker_changed(self, state: BreakerState, cause: str) -> None:
        """Publish a breaker transition."""
        agent = self._agent
        await self._send(BreakerChanged(workflow=agent.workflow, step=agent.step, agent=agent.name,
                                        instance=self.instance, state=state, cause=cause))

    async def _send_presence(self, *, stopping: bool) -> asyncio.Future[object]:
        agent, now = self._agent, self._clock.now_ms()
        state = self._snapshot()
        limit = agent.rate_limit
        return await self._send(AgentPresence(
            workflow=agent.workflow, step=agent.step, agent=agent.name, instance=self.instance,
            host=socket.gethostname(), pid=os.getpid(), started_at=self._started_at, seen_at=now,
            interval_ms=self._interval_ms, breaker=state.breaker.value, lag=state.lag, running=state.running,
            stopping=stopping, rate_limit=None if limit is None else float(limit.per_second),
            rate_burst=None if limit is None else limit.capacity, throttled=state.throttled))

    async def _send(self, event: Event) -> asyncio.Future[object]:
        agent = self._agent
        envelope = Envelope.new(type=event.type_name(), source=agent.source, workflow=agent.workflow,
                                workflow_id=self.instance, kind=Kind.OTHER, step=agent.step)
        sent: asyncio.Future[object] = await self._producer.send(  # type: ignore[assignment]
            self._topic, value=event.encode(), key=envelope.key, headers=envelope.headers(),
            timestamp_ms=self._clock.now_ms())
        return sent
