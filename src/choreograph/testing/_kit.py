"""A saga test kit: real agents and the real coordinator on the in-memory log, in one process.

    async with SagaKit(research.agent, analyze.agent) as kit:
        goal = await kit.given_goal("report", {"topic": "rust"})
        outcome = await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)

Faults a user would want to see handled, injected at named points: a service that dies after a
handler's effect and before its result is published, or after it is published and before the
offset is committed (then restarts, as a supervisor would restart a killed process); a record
delivered twice; a record held back and delivered after the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ChoreographError
from ..events._envelope import (
    Envelope,
    Kind,
    derived_id,
)
from ..events._models import Event, OutcomeStatus, WorkflowOutcome
from ..runtime._agent import Agent, StepContext
from ..runtime._agent_runtime import AgentRuntime
from ..runtime._client import Client, PublishedGoal
from ..runtime._coordinator import Coordinator
from ..saga._entries import HistoryEntry
from ..security._identity import COORDINATOR as COORDINATOR_IDENTITY
from ..security._identity import Identity
from ..timetravel._history import history
from ..transport._clock import SYSTEM_CLOCK, Clock
from ..transport._memory import MemoryLog
from ..transport._memory_consumer import MemoryConsumer
from ..transport._port import TopicPartition
from ..transport._settings import Settings
from ..transport._trust import Trust
from ._keys import PUBLISHER, Keys, claimed
from ._plug import PluggedTransport, RecordRule

COORDINATOR = "coordinator"


class KitError(ChoreographError, AssertionError):
    """An expectation of the test kit did not hold (an AssertionError, so test runners show it as one)."""


class Crash(enum.Enum):
    """Where a service dies (and is restarted, as a supervisor restarts a killed process)."""

    AFTER_EFFECT = "after_effect"
    """An agent's handler ran (its effect happened) but its result was never published."""
    AFTER_PUBLISH = "after_publish"
    """The result (or a coordinator decision) is in the log, the consumed offset is not committed."""


@dataclass
class _Service:
    """One running service instance, and the crashes of its line of successors."""

    name: str
    transport: PluggedTransport
    service: AgentRuntime | Coordinator
    task: asyncio.Task[None] | None = None
    generation: int = 0
    crashes: list[str] = field(default_factory=list)


class SagaKit:
    """Agents and the coordinator on one in-memory log; publish goals, inject faults, check outcomes.

    Args:
        *agents: The agents under test (each runs as its own service, as in production).
        partitions: Partitions of the events topic.
        namespace: Topic and group prefix (a fresh one per kit unless given).
        clock: The time of every service and of the log's timestamps: a ManualClock (advanced by the
            test) for timers, retries and deadlines; the wall clock unless given.

    Attributes:
        log: The in-memory log every service uses (inspect it, or set `log.on_await`).
        settings: The kit's settings (namespace, partitions).
    """

    def __init__(self, *agents: Agent, partitions: int = 2, namespace: str | None = None,
                 clock: Clock | None = None, signed: bool = True) -> None:
        self.clock: Clock = clock or SYSTEM_CLOCK
        """The time every service and the log's timestamps read (a ManualClock moves only when advanced)."""
        self.log = MemoryLog(clock=self.clock.now_ms)
        self.settings = Settings(bootstrap_servers="memory", namespace=namespace or f"kit{uuid.uuid4().hex[:8]}",
                                 partitions=partitions)
        self._agents = {agent.step: agent for agent in agents}
        self._services: dict[str, _Service] = {}
        self._dead: list[_Service] = []  # crashed instances: their lingering tasks are cancelled at exit
        self._background: set[asyncio.Task[None]] = set()
        self._client: Client | None = None
        self._rules: list[RecordRule] = []
        self._armed: dict[tuple[str, Crash], int] = {}
        self.handler_runs: dict[tuple[str, str], int] = {}
        """How many times each (workflow id, step) handler ran: effects, at least once."""
        self.reruns_after_result: dict[tuple[str, str], int] = {}
        """Handler runs of a (workflow id, step) that started when its result was already in the log."""
        self._logged: set[tuple[str, str]] = set()
        self._gates: dict[str, asyncio.Event] = {}
        self.keys = Keys(agents) if signed else None
        """Every party's key and the policy the services believe (None: nothing signed or verified)."""

    async def __aenter__(self) -> SagaKit:
        await asyncio.gather(*(self.start_service(name) for name in [COORDINATOR, *self._agents]))
        self._client = Client(self.settings, source="choreo://testing", transport=self._transport(None),
                              clock=self.clock, trust=self.trust(PUBLISHER))
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.__aexit__()
        try:
            if exc[0] is None:
                self.check_alive()
        finally:
            await asyncio.gather(*(self.stop_service(name) for name in list(self._services)),
                                 return_exceptions=True)
            await self._bury()
            if self.keys is not None:
                self.keys.close()

    async def _bury(self) -> None:
        """Cancel and await what crashed instances left running (a killed handler waits forever)."""
        tasks = {*self._background}
        for entry in self._dead:
            tasks.update(getattr(entry.service, "_tasks", ()))
            if entry.task is not None:
                tasks.add(entry.task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # services ------------------------------------------------------------------------------------------

    def _transport(self, name: str | None) -> PluggedTransport:
        return PluggedTransport(self.log, self.settings, self._rules, on_sent=self._sent, owner=name)

    def _instrumented(self, agent: Agent) -> Agent:
        """A copy of `agent` whose handler counts runs and dies where a crash is armed."""
        copy = Agent(agent.workflow, agent.step, name=agent.name)
        copy.__dict__.update({k: v for k, v in agent.__dict__.items() if k not in ("handler_fn",)})
        handler = agent.handler_fn
        if handler is None:
            return agent

        async def run(ctx: StepContext, *events: Event) -> Event:
            key = (ctx.workflow_id, ctx.step)
            if key in self._logged:
                self.reruns_after_result[key] = self.reruns_after_result.get(key, 0) + 1
            if (gate := self._gates.get(ctx.step)) is not None:
                await gate.wait()
            result = await handler(ctx, *events)  # the effect
            self.handler_runs[key] = self.handler_runs.get(key, 0) + 1
            if self._take((ctx.step, Crash.AFTER_EFFECT)):
                await self._crash(ctx.step)
                await asyncio.Event().wait()  # a dead process publishes nothing; cancelled by the crash
            return result

        copy.handler_fn = run
        return copy

    def trust(self, identity: Identity | None) -> Trust:
        """What a party of `identity` signs with and believes here (off: an unsigned kit, or None)."""
        keys = self.keys
        return Trust.off() if keys is None or identity is None else keys.trust(identity)

    async def start_service(self, name: str) -> None:
        """Start the coordinator (`"coordinator"`) or the agent of step `name`; wait until it is ready.

        A name with a suffix after "#" (`"coordinator#2"`, `"chart#2"`) starts one more copy of that
        service in the same consumer group: the group rebalances, as when a second process starts.
        """
        role = name.split("#")[0]
        if role == COORDINATOR:
            def make(transport: PluggedTransport) -> AgentRuntime | Coordinator:
                return Coordinator(self.settings, transport=transport, commit_interval_s=0.05, clock=self.clock,
                                   trust=self.trust(COORDINATOR_IDENTITY))
        else:
            agent = self._instrumented(self._agents[role])

            def make(transport: PluggedTransport) -> AgentRuntime | Coordinator:
                return AgentRuntime(agent, self.settings, transport=transport, commit_interval_s=0.05,
                                    clock=self.clock, trust=self.trust(Identity.agent(agent.workflow, agent.step)))
        previous = self._services.get(name)
        transport = self._transport(name)
        entry = _Service(name, transport, make(transport), generation=previous.generation + 1 if previous else 0,
                         crashes=previous.crashes if previous else [])
        self._services[name] = entry
        await entry.service.start()
        entry.task = asyncio.create_task(entry.service.run(), name=f"kit:{name}")

    async def stop_service(self, name: str) -> None:
        """Stop a service cleanly (it finishes its work, commits and leaves its group)."""
        entry = self._services.pop(name, None)
        if entry is None:
            return
        entry.service.request_stop()
        if entry.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await entry.task
        await entry.service.stop()

    async def restart(self, name: str) -> None:
        """Kill a service as kill -9 would (no commit, nothing more published) and start a fresh one."""
        await self._crash(name)

    async def _crash(self, name: str) -> None:
        entry = self._services[name]
        entry.crashes.append(name)
        self._dead.append(entry)
        entry.transport.pull()  # nothing it sends from now on reaches the log; its member leaves now
        for consumer in entry.transport.consumers:
            if isinstance(consumer, MemoryConsumer):
                consumer.crash()
        if entry.task is not None and entry.task is not asyncio.current_task():
            entry.task.cancel()
        for task in getattr(entry.service, "_tasks", ()):
            if task is not asyncio.current_task():
                task.cancel()
        # The successor starts in a task of its own: the crash may be called from the dead service.
        self._in_background(self.start_service(name))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """A task the kit holds (the loop keeps only weak references) and cancels at exit."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _take(self, armed: tuple[str, Crash]) -> bool:
        left = self._armed.get(armed, 0)
        if left <= 0:
            return False
        self._armed[armed] = left - 1
        return True

    def _sent(self, owner: str | None, envelope: Envelope) -> None:
        """Called when a service's record is in the log: the AFTER_PUBLISH crash point."""
        if envelope.kind in (Kind.STEP_COMPLETED, Kind.STEP_FAILED):
            self._logged.add((envelope.workflow_id, envelope.step or ""))
        if owner is None:
            return
        decisive = envelope.kind in (Kind.STEP_COMPLETED, Kind.STEP_FAILED, Kind.COMPENSATION_COMPLETED,
                                     Kind.COMPENSATION_FAILED) or owner.split("#")[0] == COORDINATOR
        if decisive and self._take((owner, Crash.AFTER_PUBLISH)):
            self._in_background(self._crash(owner))
            self._services[owner].transport.pull()  # at once: not even its commit gets through

    # faults --------------------------------------------------------------------------------------------

    def crash(self, service: str, at: Crash, *, times: int = 1) -> None:
        """Arm a crash of `service` (a step's agent, or "coordinator") at `at`, for its next `times` runs.

        Args:
            service: The step name of an agent, or "coordinator" (only `Crash.AFTER_PUBLISH`).
            at: The crash point.
            times: How many times to crash there.
        """
        if service == COORDINATOR and at is not Crash.AFTER_PUBLISH:
            raise KitError("the coordinator runs no handler: crash it AFTER_PUBLISH")
        self._armed[(service, at)] = self._armed.get((service, at), 0) + times

    def pause_step(self, step: str) -> None:
        """Hold every run of `step`'s handler (started, not finished) until `resume_step`."""
        self._gates.setdefault(step, asyncio.Event())

    def resume_step(self, step: str) -> None:
        """Let the held runs of `step` go on, and later ones run at once."""
        if (gate := self._gates.pop(step, None)) is not None:
            gate.set()

    def duplicate(self, *, kind: Kind | None = None, step: str | None = None, times: int = 1) -> None:
        """Deliver the next `times` matching records twice (as a producer retry or a user's re-publish would)."""
        self._rules.append(RecordRule("duplicate", kind, step, times))

    def hold_back(self, *, kind: Kind | None = None, step: str | None = None, times: int = 1) -> None:
        """Deliver the next `times` matching records after the record that follows them on their partition."""
        self._rules.append(RecordRule("reorder", kind, step, times))

    # given ---------------------------------------------------------------------------------------------

    async def given_goal(self, workflow: str, data: Mapping[str, Any], workflow_id: str | None = None, *,
                         deadline: float | None = None) -> PublishedGoal:
        """Publish a goal, validated against the goal schema its entry agent announced.

        `deadline` is the workflow's deadline in seconds from now on the kit's clock (see Client.publish).
        """
        if self._client is None:
            raise KitError("use the kit inside `async with`")
        return await self._client.publish(workflow, dict(data), workflow_id, deadline=deadline)

    async def given_event(self, goal: PublishedGoal, event: Event, *, step: str, kind: Kind = Kind.STEP_COMPLETED,
                          source: str | None = None,
                          signed_as: Identity | Literal["claimed"] | None = "claimed") -> None:
        """Publish an event into a workflow as if `step`'s agent had (a duplicate, a late or forged one).

        Signed with the key of the party its source claims (the step's agent, the coordinator, ...)
        unless `signed_as` names another (a forger with a real key) or is None (unsigned).
        """
        envelope = Envelope.new(type=event.type_name(), source=source or f"choreo://agent/{goal.workflow}/{step}",
                                workflow=goal.workflow, workflow_id=goal.workflow_id, kind=kind, step=step,
                                id=derived_id(goal.workflow_id, kind.value, step))
        signer = claimed(envelope.source) if signed_as == "claimed" else signed_as
        producer = self.trust(signer).producer(self._transport(None).producer())
        await producer.start()
        try:
            await producer.send_and_wait(self.settings.events_topic, value=event.encode(), key=envelope.key,
                                         headers=envelope.headers(), partition=goal.partition)
        finally:
            await producer.stop()

    def signed(self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]], *,
               signed_as: Identity | Literal["claimed"] | None = "claimed") -> list[tuple[str, bytes]]:
        """`headers` as a producer with a real key would send them, for records a test writes itself.

        Signed by the party the `ce_source` header claims (the kit's publisher when there is none or
        it names nobody), or by `signed_as`; unchanged when `signed_as` is None or the kit is unsigned.
        """
        out = list(headers)
        if self.keys is None or signed_as is None:
            return out
        if signed_as == "claimed":
            source = next((v for n, v in out if n == "ce_source"), b"").decode(errors="replace")
            signed_as = claimed(source)
        signer = self.trust(signed_as).signer
        return out if signer is None else signer.sign(key, value, out)

    # expect --------------------------------------------------------------------------------------------

    def check_alive(self) -> None:
        """Raise if a service died on its own (not by an injected crash): that is a bug to see."""
        for entry in self._services.values():
            task = entry.task
            if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
                raise KitError(f"service {entry.name} died: {task.exception()!r}") from task.exception()

    async def outcome(self, goal: PublishedGoal, timeout_s: float = 10.0) -> WorkflowOutcome:
        """The workflow's outcome, waiting up to `timeout_s` for it."""
        if self._client is None:
            raise KitError("use the kit inside `async with`")
        self.check_alive()
        found = await self._client.wait(goal, timeout_s)
        self.check_alive()
        if found is None:
            raise KitError(f"workflow {goal.workflow_id} has no outcome after {timeout_s} s")
        return found

    async def expect_outcome(self, goal: PublishedGoal, status: OutcomeStatus, *,
                             compensated: Sequence[str] | None = None, failed_step: str | None = None,
                             timeout_s: float = 10.0) -> WorkflowOutcome:
        """Wait for the outcome and check its status (and compensated steps, failed step, if given)."""
        found = await self.outcome(goal, timeout_s)
        if found.status is not status:
            raise KitError(f"{goal.workflow_id}: outcome {found.status.value}, expected {status.value} ({found})")
        if compensated is not None and sorted(found.compensated_steps) != sorted(compensated):
            raise KitError(f"compensated {sorted(found.compensated_steps)}, expected {sorted(compensated)}")
        if failed_step is not None and found.failed_step != failed_step:
            raise KitError(f"failed step {found.failed_step}, expected {failed_step}")
        return found

    async def events(self, goal: PublishedGoal) -> list[HistoryEntry]:
        """Every event of the workflow in log order, including any after its outcome."""
        return await history(self.settings, goal.workflow_id, to_end=True, transport=self._transport(None),
                             verifier=self.trust(PUBLISHER).verifier)  # the kit's policy, not the environment's

    async def emitted(self, goal: PublishedGoal, *, kind: str | None = None,
                      step: str | None = None) -> list[HistoryEntry]:
        """The workflow's events of a kind (e.g. "step_completed") and/or step."""
        return [e for e in await self.events(goal)
                if (kind is None or e.kind == kind) and (step is None or e.step == step)]

    async def eventually(self, check: Callable[[], Awaitable[object]], timeout_s: float = 10.0) -> object:
        """Await `check()` until it returns something truthy; KitError after `timeout_s`."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not (result := await check()):
            self.check_alive()
            if asyncio.get_running_loop().time() > deadline:
                raise KitError(f"still false after {timeout_s} s: {check}")
            await asyncio.sleep(0.01)
        return result

    async def idle(self, timeout_s: float = 10.0) -> None:
        """Wait until every service's group has committed everything on the events topic."""
        groups = [self.settings.coordinator_group,
                  *(self.settings.agent_group(a.workflow, a.step) for a in self._agents.values())]
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            self.check_alive()
            lag = self.lag(groups)
            if not any(lag.values()):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise KitError(f"not idle after {timeout_s} s: committed lag {lag}")
            await asyncio.sleep(0.02)

    def lag(self, groups: Sequence[str]) -> dict[str, int]:
        """Per group, records of the events topic after its committed offsets."""
        topic = self.settings.events_topic
        tps = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
        return {g: sum(self.log.end_offset(tp) - (self.log.committed(g, tp) or 0) for tp in tps) for g in groups}

    def crashes(self, service: str) -> int:
        """How many times `service` was crashed by the kit."""
        entry = self._services.get(service)
        return len(entry.crashes) if entry else 0
