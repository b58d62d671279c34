"""Saga scenarios: the example `report` workflow (5 steps, one parallel branch) with the coordinator
and every agent as separate processes, as in production. Goals go in through the public Client.

Signed by default, as in production: the client signs its goals as publisher:local and every
service verifies what it acts on and signs what it publishes. An unsigned run (`signed=False`)
turns both off, in the services (CHOREO_VERIFY=off) and in the client (Trust.off()).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import TopicPartition

from choreograph import Client
from choreograph.events import WorkflowOutcome, new_workflow_id
from choreograph.runtime import LIBRARY_SERVICES, ServiceSpec, discover
from choreograph.transport import Kafka, Settings, Trust, framework_store

from ._procs import ROOT, Processes, agent

STEPS = ("research", "analyze", "chart", "draft", "review")


# Goals in flight for the headline figures: enough that every service has work waiting when it
# fetches. Latency under load follows (Little's law: in flight = rate x latency); a saga's own
# latency is the one-at-a-time run.
IN_FLIGHT = 64


@dataclass(frozen=True)
class SagaRun:
    in_flight: int
    sagas: int
    seconds: float
    sagas_per_s: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]


class Outcomes:
    """Watches the events topic from its current end and resolves a future per workflow outcome."""

    def __init__(self, settings: Settings) -> None:
        self._kafka = Kafka(settings)
        self._settings = settings
        self._waiting: dict[bytes, asyncio.Future[tuple[float, str]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._store = framework_store()

    async def __aenter__(self) -> Outcomes:
        s = self._settings
        tps = [TopicPartition(s.events_topic, p) for p in range(s.partitions)]
        ends = await self._kafka.end_offsets(tps)
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._watch(ends, ready))
        await ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def expect(self, workflow_id: str) -> asyncio.Future[tuple[float, str]]:
        future = self._waiting[workflow_id.encode()] = asyncio.get_running_loop().create_future()
        return future

    async def _watch(self, ends: dict[TopicPartition, int], ready: asyncio.Event) -> None:
        async with self._kafka.reader(ends) as consumer:
            for tp, offset in ends.items():
                consumer.seek(tp, offset)
            ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        headers = dict(record.headers)
                        if headers.get("ce_kind") != b"outcome":
                            continue
                        future = self._waiting.pop(record.key, None)
                        if future is not None and not future.done():
                            outcome = WorkflowOutcome.decode(record.value, self._store)
                            future.set_result((now, outcome.status.value))


async def _one(client: Client, outcomes: Outcomes, topic: str, fail_at: str | None,
               latencies: list[float], statuses: dict[str, int], timeout_s: float) -> None:
    started = time.perf_counter()
    # Expected before it is published: an outcome read before publish() returns (its ack can come
    # after the whole saga on a busy machine) would find nobody waiting, and the run would time out.
    workflow_id = new_workflow_id()
    future = outcomes.expect(workflow_id)
    await client.publish("report", {"topic": topic, "fail_at": fail_at}, workflow_id=workflow_id)
    done_at, status = await asyncio.wait_for(future, timeout_s)
    latencies.append((done_at - started) * 1000)
    statuses[status] = statuses.get(status, 0) + 1


def _summary(in_flight: int, latencies: list[float], seconds: float, statuses: dict[str, int]) -> SagaRun:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return SagaRun(in_flight, len(latencies), seconds, len(latencies) / seconds, statistics.median(ordered), p99,
                   statuses)


async def closed_loop(settings: Settings, total: int, concurrency: int, fail_ratio: float = 0.0,
                      timeout_s: float = 60, signed: bool = True) -> SagaRun:
    """`concurrency` goals in flight at all times until `total` finished: sagas/s at saturation."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    failing = set(range(0, total, round(1 / fail_ratio))) if fail_ratio else set()
    next_goal = iter(range(total))
    # Signed: the environment's trust (publisher:local, in the run's CHOREO_HOME), as a user's
    # client would have. The client's signing is inside the measured time, as a user's would be.
    trust = None if signed else Trust.off()
    async with Client(settings, source="choreo://bench", trust=trust) as client, Outcomes(settings) as outcomes:
        await client.goal_schema("report")

        async def worker() -> None:
            for i in next_goal:
                fail_at = "review" if i in failing else None  # the last step: all four others compensate
                await _one(client, outcomes, f"bench {i}", fail_at, latencies, statuses, timeout_s)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return _summary(concurrency, latencies, elapsed, statuses)


def report_services(instances: int = 1) -> list[ServiceSpec]:
    """The coordinator once, and `instances` copies of each report agent.

    Not the workflow index `choreo up` also runs: these figures are the saga path's, comparable with
    runs from before the index existed (`python -m bench --only index` measures it).
    """
    specs = discover(ROOT)
    coordinator = [s for s in specs if s.name == "coordinator"]
    agents = [agent(f"{s.name}.{i}", s.argv[-1]) for s in specs if s.name not in LIBRARY_SERVICES
              for i in range(instances)]
    return coordinator + agents


def start_stack(settings: Settings, workdir: Path, instances: int = 1, signed: bool = True) -> Processes:
    env = {"REPORT_STEP_DELAY_MS": "0"} | ({} if signed else {"CHOREO_VERIFY": "off"})
    processes = Processes(settings, workdir, env)
    try:
        processes.start(*report_services(instances))
    except BaseException:
        processes.stop()
        raise
    return processes
