"""Who serves each step now: agent instances' presence and breaker transitions on the status topic.

Each agent instance publishes an AgentPresence every `interval_ms` (a last one with `stopping` set
when it leaves) and a BreakerChanged on each transition of its breaker, keyed by its instance id, on
the namespace's status topic (one partition, so log order is the order they were sent in). An
instance is live while its last presence is not `stopping` and is younger than LIVE_PERIODS
intervals: a killed process says nothing, and its silence is what marks it gone.

`read_status` folds the recent status records once (`choreo agents`, `choreo state`);
`LivenessWatch` tails them for a service that asks again and again (the coordinator, to log once
per step that nobody serves it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import DecodeError
from ..events._avro import SchemaStore
from ..events._faults import AgentPresence, BreakerChanged
from ..saga._decide import SagaState
from ._clock import SYSTEM_CLOCK, Clock
from ._port import Consumer, TopicPartition, Transport
from ._reading import read_since, seek_time
from ._registry import framework_store

log = logging.getLogger("choreograph.presence")

LIVE_PERIODS = 3  # silence for this many presence intervals means the instance is gone
LOOKBACK_MS = 60 * 60 * 1000  # how far back `read_status` reads: "last seen" within the hour
_PRESENCE, _BREAKER = AgentPresence.type_name(), BreakerChanged.type_name()


@dataclass
class Instance:
    """The last word of one agent instance on the status topic.

    Attributes:
        presence: Its latest presence.
        breaker: Its breaker's state, from its latest presence or transition, whichever came last.
        breaker_cause: The cause of its latest transition, if one was seen.
    """

    presence: AgentPresence
    breaker: str
    breaker_cause: str | None = None

    def live(self, now_ms: int) -> bool:
        """Whether it is serving: not leaving, and heard from within LIVE_PERIODS intervals."""
        p = self.presence
        return not p.stopping and now_ms - p.seen_at <= LIVE_PERIODS * max(1, p.interval_ms)

    def json(self, now_ms: int) -> dict[str, Any]:
        """As `choreo agents --json` lists it."""
        p = self.presence
        return {"instance": p.instance, "host": p.host, "pid": p.pid, "started_at": p.started_at,
                "seen_at": p.seen_at, "seen_ago_s": round(max(0, now_ms - p.seen_at) / 1000, 1),
                "live": self.live(now_ms), "stopping": p.stopping, "breaker": self.breaker,
                "breaker_cause": self.breaker_cause, "lag": None if p.lag < 0 else p.lag, "running": p.running,
                "rate_limit": None if p.rate_limit is None else {"per_second": p.rate_limit, "burst": p.rate_burst},
                "throttled": p.throttled}


class Status:
    """What the status topic says about agent instances: feed it records in log order with apply().

    Args:
        store: Schemas to decode with; None for the framework's.

    Attributes:
        instances: Instance id -> its last word (only instances that sent a presence).
        breakers: (workflow, step) -> (state, cause) of the latest transition of any instance.
    """

    def __init__(self, store: SchemaStore | None = None) -> None:
        self._store = store or framework_store()
        self.instances: dict[str, Instance] = {}
        self.breakers: dict[tuple[str, str], tuple[str, str]] = {}
        self._pending_breaker: dict[str, tuple[str, str]] = {}  # a transition before the instance's presence

    def apply(self, value: bytes | None) -> None:
        """Fold one status record; one that is not a presence or a transition is skipped."""
        if not value:
            return
        try:
            name = self._store.writer_of(value).name
            if name == _PRESENCE:
                presence = AgentPresence.decode(value, self._store)
                known = self.instances.get(presence.instance)
                if known is None:
                    state, cause = self._pending_breaker.pop(presence.instance, (presence.breaker, None))
                    self.instances[presence.instance] = Instance(
                        presence, presence.breaker, cause if state == presence.breaker else None)
                    return
                known.presence = presence
                if known.breaker != presence.breaker:  # a transition we did not read (before our start)
                    known.breaker, known.breaker_cause = presence.breaker, None
            elif name == _BREAKER:
                change = BreakerChanged.decode(value, self._store)
                self.breakers[(change.workflow, change.step)] = (change.state.value, change.cause)
                if (instance := self.instances.get(change.instance)) is not None:
                    instance.breaker, instance.breaker_cause = change.state.value, change.cause
                else:
                    self._pending_breaker[change.instance] = (change.state.value, change.cause)
        except DecodeError:
            return  # someone else's record, or a newer format: not ours to judge

    def of(self, workflow: str, step: str) -> list[Instance]:
        """Every instance of the step's agent heard from, live or not, most recently seen first."""
        found = [i for i in self.instances.values() if i.presence.workflow == workflow and i.presence.step == step]
        return sorted(found, key=lambda i: -i.presence.seen_at)

    def live(self, workflow: str, step: str, now_ms: int) -> list[AgentPresence]:
        """The live instances of the step's agent (see Instance.live)."""
        return [i.presence for i in self.of(workflow, step) if i.live(now_ms)]


def serving(status: Status, workflow: str, step: str, now_ms: int,
            members: int | None) -> tuple[int | None, str | None]:
    """How many instances serve a step now, and how that is known ("presence" or "group").

    Live instances count by their presence. For a step none of whose instances ever sent one
    (agents older than presence), the members of its consumer group count instead, if known; if
    no instance of any step sent presence either, nobody can tell: (None, None).

    Args:
        status: The status topic, read.
        workflow: The step's workflow.
        step: The step.
        now_ms: Now.
        members: Its consumer group's member count, if known.

    Returns:
        (count, how), (0, None) for a step nobody serves, (None, None) when unknown.
    """
    instances = status.of(workflow, step)
    live = sum(1 for i in instances if i.live(now_ms))
    if live:
        return live, "presence"
    if not instances and members is not None:
        return (members, "group") if members else (0, None)
    if not status.instances:
        return None, None
    return 0, None


async def read_status(transport: Transport, *, since_ms: int | None = None,
                      clock: Clock = SYSTEM_CLOCK) -> Status:
    """Fold the status topic's records from `since_ms` (default: LOOKBACK_MS ago) to its end.

    Args:
        transport: The broker port.
        since_ms: Where to start reading (log time, Unix ms).
        clock: Now, for the default start.

    Returns:
        The folded status.
    """
    status = Status()
    async for record in read_since(transport, transport.settings.status_topic,
                                   clock.now_ms() - LOOKBACK_MS if since_ms is None else since_ms):
        status.apply(record.value)
    return status


class LivenessWatch:
    """Tails the status topic for a long-running service: start(), then refresh() and live() as needed.

    Between refreshes its partition is paused (an idle fetching consumer slows Tansu's produce path;
    see transport.Registry). `missing` logs a step that nobody serves once, and again only after
    an instance of it was seen live in between.

    Args:
        transport: The broker port.
        clock: Now, for liveness; the wall clock unless given.
        lookback_ms: How far back to read at start (a few presence intervals is enough).
    """

    def __init__(self, transport: Transport, clock: Clock | None = None, lookback_ms: int = 5 * 60 * 1000) -> None:
        self._transport = transport
        self._clock: Clock = clock or SYSTEM_CLOCK
        self._lookback_ms = lookback_ms
        self.status = Status()
        self._consumer: Consumer | None = None
        self._tps: list[TopicPartition] = []
        self._warned: set[tuple[str, str]] = set()

    async def start(self) -> None:
        """Start its reader at `lookback_ms` ago and read to the end."""
        topic = self._transport.settings.status_topic
        self._tps = [TopicPartition(topic, p) for p in range(await self._transport.partition_count(topic))]
        self._consumer = self._transport.consumer(group_id=None)
        await self._consumer.start()
        self._consumer.assign(self._tps)
        ends = await self._consumer.end_offsets(self._tps)
        await seek_time(self._consumer, self._tps, ends, self._clock.now_ms() - self._lookback_ms)
        self._consumer.pause(*self._tps)
        await self.refresh()

    async def stop(self) -> None:
        """Stop its reader."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def refresh(self) -> None:
        """Read what the status topic received since the last refresh."""
        consumer = self._consumer
        if consumer is None:
            return
        ends = await consumer.end_offsets(self._tps)
        behind = [tp for tp in self._tps if await consumer.position(tp) < ends[tp]]
        if not behind:
            return
        consumer.resume(*behind)
        try:
            while behind:
                batch = await consumer.getmany(*behind, timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        self.status.apply(record.value)
                behind = [tp for tp in behind if await consumer.position(tp) < ends[tp]]
        finally:
            consumer.pause(*self._tps)

    def live(self, workflow: str, step: str) -> list[AgentPresence]:
        """The live instances of the step's agent, as of the last refresh and the clock's now."""
        return self.status.live(workflow, step, self._clock.now_ms())

    def missing(self, steps: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Of `steps` (workflow, step) that something waits for, those no live agent serves; each logged once.

        A step is logged again only after an instance of it was live in between. While no agent
        instance at all has sent presence since the watch's lookback, nothing is reported: agents
        that send none cannot be told from agents that are gone.

        Args:
            steps: Steps with work waiting for them.

        Returns:
            The steps with no live agent, newly logged or not.
        """
        if not self.status.instances:
            return []  # no agent sends presence (or none has in the lookback): nobody can tell
        now = self._clock.now_ms()
        found = []
        for workflow, step in steps:
            if self.status.live(workflow, step, now):
                self._warned.discard((workflow, step))
                continue
            found.append((workflow, step))
            if (workflow, step) not in self._warned:
                self._warned.add((workflow, step))
                seen = self.status.of(workflow, step)
                last = f"last seen {(now - seen[0].presence.seen_at) / 1000:.0f} s ago" if seen else "never seen"
                log.warning("step %s of workflow %r has no live agent (%s): its sagas wait for it; start its "
                            "agent, or retire the step (choreo agents retire %s %s)", step, workflow, last,
                            workflow, step)
        return found


def waiting_steps(states: Iterable[SagaState]) -> set[tuple[str, str]]:
    """(workflow, step) of every step that open sagas wait on now: its inputs are in the log, it is unfinished.

    Also each requested compensation not yet done. What a coordinator passes to LivenessWatch.missing.

    Args:
        states: Open sagas.

    Returns:
        The steps.
    """
    found: set[tuple[str, str]] = set()
    for state in states:
        graph = state.graph
        if graph is None or state.outcome is not None:
            continue
        completed = state.completed & graph.nodes.keys()
        for step in graph.live(completed, state.failed):
            if all(d in completed for d in graph.nodes[step].depends_on):
                found.add((state.workflow, step))
        undone = state.compensated | state.compensation_failed.keys()
        found.update((state.workflow, step) for step in state.compensation_requested - undone)
    return found
