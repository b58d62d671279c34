"""The shared state of a chaos run: the goals published (each with its fault plan and the outcome it
must reach), the records the harness injected, the fleet and its keeper, and what each scenario
returns for the audit."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError

from choreograph import ChoreographError, Client, Settings
from choreograph.events import DEADLINE_HEADER, Envelope, Kind, new_workflow_id
from choreograph.transport import Trust, publisher_identity

from ._chaos_fleet import Fleet
from ._chaos_watch import Watch

if TYPE_CHECKING:
    from ._chaos_audit import Audit, Log

MAX_ATTEMPTS = 3  # the report agents' retry policy in every chaos run (REPORT_MAX_ATTEMPTS)
SLOT_RELEASE_S = 60.0  # a goal without an outcome frees its in-flight slot after this long
Sizes = dict[str, dict[str, Any]]  # a scenario's sizes: "full" (`make chaos`) and "short" (`make test`)


@dataclass
class Goal:
    """One published goal: its scenario, fault plan and the outcome status it must end with."""

    workflow_id: str
    scenario: str
    expect: str = "completed"
    fail_at: str | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    published_ns: int = 0


@dataclass(frozen=True)
class Check:
    """A scenario's own expectation; `needs` names the issue 11 feature it depends on, if any."""

    name: str
    ok: bool
    detail: str = ""
    needs: str = ""


# (what the log holds, the scenario's audit) -> more checks
Verify = Callable[["Log", "Audit"], list[Check]]


@dataclass
class Scenario:
    """What one scenario did: its goals, the time its faults were on, and its own checks."""

    name: str
    goals: list[Goal] = field(default_factory=list)
    started_ns: int = 0
    ended_ns: int = 0
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    verify: Verify | None = None  # more checks, run on the histories once everything has drained


class Chaos:
    """The run: publish goals with plans, inject records, and keep the fleet (revive, random kills)."""

    def __init__(self, settings: Settings, fleet: Fleet, client: Client, watch: Watch, rng: random.Random,
                 faults_dir: Path) -> None:
        self.settings = settings
        self.fleet = fleet
        self.client = client
        self.watch = watch
        self.rng = rng
        self.faults_dir = faults_dir
        self.goals: list[Goal] = []
        self.scenario_of: dict[str, str] = {}  # workflow id -> scenario, set before its goal is published
        self.injected: set[tuple[int, int]] = set()
        self.publish_errors = 0
        self.victims: list[str] = []  # roles the keeper SIGKILLs at random, one every `kill_every` s
        self.kill_every = 2.0
        self.kills_left: int | None = None  # of those random SIGKILLs; None: no limit
        self._producer: Any = None

    async def __aenter__(self) -> Chaos:
        from choreograph.transport import Kafka

        self._producer = Kafka(self.settings).producer()
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    @property
    def producer(self) -> Any:
        """The harness's own producer (started): for injected records and announcements."""
        return self._producer

    async def keep(self) -> None:
        """Forever: restart services that died on their own; SIGKILL one of `victims` now and then."""
        next_kill = time.monotonic() + self.kill_every
        while True:
            self.fleet.revive_crashed()
            if not self.victims or self.kills_left == 0:
                next_kill = time.monotonic() + self.kill_every
            elif time.monotonic() >= next_kill:
                candidates = [role for role in self.victims if self.fleet.is_ready(role)]
                if candidates:
                    self.fleet.kill(self.rng.choice(candidates))
                    self.kills_left = None if self.kills_left is None else self.kills_left - 1
                next_kill += self.kill_every
            await asyncio.sleep(0.1)

    async def publish(self, scenario: str, *, expect: str = "completed", fail_at: str | None = None,
                      plan: dict[str, Any] | None = None, deadline_ms: int | None = None) -> Goal | None:
        """Write the goal's fault plan, then publish it (None if the broker refused it)."""
        goal = Goal(new_workflow_id(), scenario, expect, fail_at, plan or {})
        if goal.plan:
            (self.faults_dir / f"{goal.workflow_id}.json").write_text(json.dumps(goal.plan))
        self.scenario_of[goal.workflow_id] = scenario
        data = {"topic": f"{scenario} {len(self.goals)}", "fail_at": fail_at}
        goal.published_ns = time.time_ns()
        try:
            if deadline_ms is None:
                await self.client.publish("report", data, workflow_id=goal.workflow_id)
            else:
                await self._publish_with_deadline(goal.workflow_id, data, deadline_ms)
        except (ChoreographError, KafkaError) as exc:  # the broker's doing, not the services'
            self.publish_errors += 1
            print(f"publishing a goal of {scenario} failed: {exc}", file=sys.stderr)
            return None
        self.goals.append(goal)
        return goal

    async def _publish_with_deadline(self, workflow_id: str, data: dict[str, Any], deadline_ms: int) -> None:
        """A goal as Client.publish writes it, plus the workflow deadline header (absolute Unix ms)."""
        from choreograph.runtime._client import conform  # the client's own validation

        schema = await self.client.goal_schema("report")
        envelope = Envelope.new(type=schema.name, source="choreo://chaos", workflow="report",
                                workflow_id=workflow_id, kind=Kind.GOAL)
        headers = [*envelope.headers(), (DEADLINE_HEADER, str(deadline_ms).encode())]
        # Signed as the client signs its goals: the services believe goals only from a publisher.
        producer = Trust.from_env(publisher_identity()).producer(self._producer)
        await producer.send_and_wait(self.settings.events_topic, value=schema.encode(conform(schema, data)),
                                     key=envelope.key, headers=headers)

    async def publish_paced(self, scenario: str, plans: list[dict[str, Any]], seconds: float,
                            in_flight: int) -> list[Goal]:
        """Publish one goal per entry of `plans` (keyword arguments of `publish`), evenly over `seconds`,
        never more than `in_flight` without an outcome."""
        window = asyncio.Semaphore(in_flight)
        releases: list[asyncio.Task[None]] = []
        published: list[Goal] = []

        async def release_on_outcome(workflow_id: str) -> None:
            try:
                await self.watch.wait(workflow_id, SLOT_RELEASE_S)
            finally:
                window.release()

        loop = asyncio.get_running_loop()
        start, interval = loop.time(), seconds / max(1, len(plans))
        try:
            for i, kwargs in enumerate(plans):
                await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
                await window.acquire()
                goal = await self.publish(scenario, **kwargs)
                if goal is None:
                    window.release()
                    continue
                published.append(goal)
                releases.append(asyncio.create_task(release_on_outcome(goal.workflow_id)))
        finally:
            for task in releases:
                task.cancel()
            await asyncio.gather(*releases, return_exceptions=True)
        return published

    async def inject(self, value: bytes | None, key: bytes | None, headers: Iterable[tuple[str, bytes]],
                     partition: int | None = None) -> tuple[int, int]:
        """Write a record to the events topic behind the services' backs; it is left out of the audit."""
        meta = await self._producer.send_and_wait(self.settings.events_topic, value=value, key=key,
                                                  headers=list(headers), partition=partition)
        self.injected.add((meta.partition, meta.offset))
        return meta.partition, meta.offset

    async def drain(self, goals: list[Goal], timeout_s: float) -> bool:
        """Wait for the outcome of every goal (True), or until `timeout_s` is up (False)."""
        return await self.watch.wait_all([g.workflow_id for g in goals], timeout_s)

    def last_outcome_ns(self, goals: list[Goal]) -> int | None:
        times = [self.watch.outcome_ns[g.workflow_id] for g in goals if g.workflow_id in self.watch.outcome_ns]
        return max(times, default=None)
