"""Regenerates the golden recordings in this directory: `.venv/bin/python tests/golden/generate.py [NAME ...]`.

Every recording is a real run of the real coordinator (its own process) on an embedded broker:
`happy` and `compensated` with the example agents as processes; `failed_compensation`, `duplicated`
and `reordered` with the agents' events played by this script in a fixed order (the example
agents' contracts and event models), so the coordinator meets duplicates and unusual orders for
certain. `retry`, `timeout`, `late_result` and `deadline` play agents that fail attempts, fall
silent and answer late, against the example contracts given timeouts and retry policies, on the
coordinator's real clock: what it decided when a deadline passed is in the recording. `cancelled`
is cancelled by `Client.cancel` while draft runs: what completed is undone, and draft's result, after
the outcome, too.
The golden tests (tests/unit/test_replay.py) fold each through the current coordinator code.
Regenerate only when a change of decisions is intended, and say so in the commit; name the
recordings to regenerate (all by default), so the others stay as they were.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer, TopicPartition

from choreograph import Client, EmbeddedBroker, Envelope, Event, Kind, Settings
from choreograph.events import (
    CompensationCompleted,
    CompensationFailed,
    Retry,
    StepAttemptFailed,
    StepContract,
    StepFailed,
    StepHeartbeat,
    derived_id,
)
from choreograph.runtime import ServiceSpec, coordinator_spec, discover, load_agent, spawn, wait_ready
from choreograph.timetravel import record
from choreograph.transport import Kafka, announce, terminate

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from choreograph.examples.report._events import (  # noqa: E402
    AnalysisCompleted,
    ChartCompleted,
    DraftCompleted,
    ResearchCompleted,
    ReviewCompleted,
)

STEPS = ("research", "analyze", "chart", "draft", "review")


def start(settings: Settings, specs: list[ServiceSpec], workdir: Path) -> list[int]:
    started = {}
    for spec in specs:
        ready, log = workdir / f"{spec.name}.{uuid.uuid4().hex[:6]}.ready", workdir / f"{spec.name}.log"
        started[spec.name] = (spawn(spec, ROOT, settings, ready, log), ready, log)
    wait_ready(started, 60)
    return [p.pid for p, _, _ in started.values()]


class Player:
    """Plays the report agents' part for one workflow: publishes their events, waits for decisions."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer, workflow_id: str, partition: int) -> None:
        self.settings, self.producer, self.workflow_id = settings, producer, workflow_id
        self.tp = TopicPartition(settings.events_topic, partition)
        self.seen: list[Envelope] = []
        self.kafka = Kafka(settings)

    async def wait(self, kind: Kind, step: str | None = None, source: str | None = "choreo://coordinator",
                   nth: int = 1) -> Envelope:
        """The `nth` event of this kind (and step, and source: the coordinator's by default), once logged."""
        async with self.kafka.reader([self.tp]) as consumer:
            await consumer.seek_to_beginning(self.tp)
            seen = 0
            while True:
                batch = await consumer.getmany(self.tp, timeout_ms=500)
                for row in batch.get(self.tp, ()):
                    if row.key == self.workflow_id.encode():
                        envelope = Envelope.from_record(row.key, row.headers)
                        if (source is None or envelope.source == source) and envelope.kind is kind and \
                                (step is None or envelope.step == step):
                            seen += 1
                            if seen == nth:
                                return envelope

    async def emit(self, step: str, kind: Kind, event: Event, cause: Envelope, copies: int = 1,
                   id: str | None = None) -> Envelope:
        envelope = Envelope.new(type=event.type_name(), source=f"choreo://agent/report/{step}", workflow="report",
                                workflow_id=self.workflow_id, kind=kind, step=step, cause=cause,
                                id=id or derived_id(self.workflow_id, kind.value, step))
        for _ in range(copies):
            await self.producer.send_and_wait(self.settings.events_topic, value=event.encode(), key=envelope.key,
                                              headers=envelope.headers(), partition=self.tp.partition)
        return envelope

    async def forward(self, order: tuple[str, ...], copies: int = 1) -> dict[str, Envelope]:
        """Complete the given steps in this order, each caused by its input as a real agent's would be."""
        inputs = {"research": "goal", "analyze": "research", "chart": "analyze", "draft": "analyze",
                  "review": "draft"}
        done = {"goal": await self.wait(Kind.GOAL, source=None)}
        await self.wait(Kind.OTHER)  # the coordinator has fixed the graph
        for step in order:
            cause = done.get(inputs[step]) or self.result_of(inputs[step])  # an input arriving later
            done[step] = await self.emit(step, Kind.STEP_COMPLETED, completed(step, "t"), cause, copies)
        return done

    def result_of(self, step: str) -> Envelope:
        """What the cause of an event is known by before it is logged: its deterministic id."""
        return Envelope.new(type="", source="", workflow="report", workflow_id=self.workflow_id,
                            kind=Kind.STEP_COMPLETED, id=derived_id(self.workflow_id, "step_completed", step))


def completed(step: str, topic: str) -> Event:
    return {"research": ResearchCompleted(topic=topic, sources=["s1"]),
            "analyze": AnalysisCompleted(topic=topic, findings=["f1"]),
            "chart": ChartCompleted(topic=topic, chart_uri="charts/c.svg"),
            "draft": DraftCompleted(topic=topic, text="draft"),
            "review": ReviewCompleted(topic=topic, approved=True, notes="ok")}[step]


def failed(step: str) -> StepFailed:
    return StepFailed(step=step, reason=f"{step} failed (scripted)", error_type="ScriptedFailure")


Script = Callable[[Player], Awaitable[None]]


async def failed_compensation(p: Player) -> None:
    done = await p.forward(("research", "analyze", "chart", "draft"))
    await p.emit("review", Kind.STEP_FAILED, failed("review"), done["draft"])
    await p.emit("chart", Kind.COMPENSATION_FAILED,
                 CompensationFailed(step="chart", reason="chart store unreachable", error_type="OSError"),
                 await p.wait(Kind.COMPENSATION_REQUESTED, "chart"))
    await p.emit("draft", Kind.COMPENSATION_COMPLETED, CompensationCompleted(step="draft"),
                 await p.wait(Kind.COMPENSATION_REQUESTED, "draft"))


async def duplicated(p: Player) -> None:
    done = await p.forward(("research", "analyze", "chart", "draft"), copies=2)
    await p.emit("review", Kind.STEP_FAILED, failed("review"), done["draft"], copies=2)
    for step in ("chart", "draft", "analyze", "research"):
        request = await p.wait(Kind.COMPENSATION_REQUESTED, step)
        await p.emit(step, Kind.COMPENSATION_COMPLETED, CompensationCompleted(step=step), request, copies=2)


async def reordered(p: Player) -> None:
    # draft's result arrives before analyze's (which it depends on), and chart fails after both:
    # the coordinator must undo draft before analyze, and analyze before research.
    done = await p.forward(("research", "draft", "analyze"))
    await p.emit("chart", Kind.STEP_FAILED, failed("chart"), done["analyze"])
    for step in ("draft", "analyze", "research"):
        request = await p.wait(Kind.COMPENSATION_REQUESTED, step)
        await p.emit(step, Kind.COMPENSATION_COMPLETED, CompensationCompleted(step=step), request)


async def undo(p: Player, *steps: str) -> None:
    """Answer the coordinator's compensation requests of `steps`, in this order."""
    for step in steps:
        request = await p.wait(Kind.COMPENSATION_REQUESTED, step)
        await p.emit(step, Kind.COMPENSATION_COMPLETED, CompensationCompleted(step=step), request)


async def cancelled(p: Player) -> None:
    # research, analyze and chart completed, draft still running: the cancellation undoes chart, then
    # analyze, then research, and ends the workflow cancelled without waiting for draft, whose result
    # comes after the outcome and is undone too.
    done = await p.forward(("research", "analyze", "chart"))
    async with Client(p.settings) as client:
        await client.cancel(p.workflow_id, "changed my mind")
    await undo(p, "chart", "analyze", "research")
    await p.wait(Kind.OUTCOME)
    await p.emit("draft", Kind.STEP_COMPLETED, completed("draft", "t"), done["analyze"])
    await undo(p, "draft")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def retry(p: Player) -> None:
    # chart fails twice (a rate limit), each failed attempt logged with when the next is due, then
    # completes within its timeout: the saga completes, the coordinator times nothing out.
    done = await p.forward(("research", "analyze"))
    for attempt in (1, 2):
        await p.emit("chart", Kind.STEP_ATTEMPT_FAILED,
                     StepAttemptFailed(step="chart", attempt=attempt, reason="429 Too Many Requests",
                                       error_type="HTTPError", next_attempt_at=now_ms() + 100),
                     done["analyze"], id=derived_id(p.workflow_id, "step_attempt_failed", "chart", str(attempt)))
        await asyncio.sleep(0.1)
    await p.emit("chart", Kind.STEP_COMPLETED, completed("chart", "t"), done["analyze"])
    drafted = await p.emit("draft", Kind.STEP_COMPLETED, completed("draft", "t"), done["analyze"])
    await p.emit("review", Kind.STEP_COMPLETED, completed("review", "t"), drafted)


async def timeout(p: Player) -> None:
    # draft beats once, then falls silent: attempt 1 times out, its retry (attempt 2) too, and the
    # saga compensates what completed.
    done = await p.forward(("research", "analyze", "chart"))
    await p.emit("draft", Kind.HEARTBEAT, StepHeartbeat(step="draft", attempt=1, details="outlining"),
                 done["analyze"], id=derived_id(p.workflow_id, "heartbeat", "draft", "1", "1"))
    await p.wait(Kind.STEP_TIMED_OUT, "draft", nth=2)
    await undo(p, "chart", "analyze", "research")


async def late_result(p: Player) -> None:
    # chart and draft both time out; draft answers while the saga compensates, chart after the
    # outcome: each late result is compensated too.
    done = await p.forward(("research", "analyze"))
    await p.wait(Kind.STEP_TIMED_OUT, "draft")
    request = await p.wait(Kind.COMPENSATION_REQUESTED, "analyze")
    await p.emit("draft", Kind.STEP_COMPLETED, completed("draft", "t"), done["analyze"])
    await undo(p, "draft")
    await p.emit("analyze", Kind.COMPENSATION_COMPLETED, CompensationCompleted(step="analyze"), request)
    await undo(p, "research")
    await p.wait(Kind.OUTCOME)
    await p.emit("chart", Kind.STEP_COMPLETED, completed("chart", "t"), done["analyze"])
    await undo(p, "chart")


async def deadline(p: Player) -> None:
    # The goal gave the workflow 2 s; draft never answers: at the deadline it is timed out for good,
    # what completed is compensated, and the outcome is timed_out.
    await p.forward(("research", "analyze", "chart"))
    await undo(p, "chart", "analyze", "research")


def timed(contract: StepContract) -> StepContract:
    """The example step's contract with the timeouts and retries the timed recordings run with."""
    timeouts = {"chart": (2_000, Retry(max_attempts=3, initial=0.1, jitter=0)),
                "draft": (1_500, Retry(max_attempts=2, initial=0.5, jitter=0))}
    if contract.step not in timeouts:
        return contract
    ms, policy = timeouts[contract.step]
    return contract.model_copy(update={"timeout_ms": ms, "retry": policy.policy()})


def no_retry(contract: StepContract) -> StepContract:
    """The example step's contract with a 1.5 s timeout for chart and draft, and no retry."""
    return contract.model_copy(update={"timeout_ms": 1_500}) if contract.step in ("chart", "draft") else contract


async def real_agents(broker: EmbeddedBroker, workdir: Path) -> None:
    settings = broker.settings(namespace=f"golden-{uuid.uuid4().hex[:6]}")
    pids = start(settings, [s for s in discover(ROOT) if s.name != "index"], workdir)
    try:
        async with Client(settings) as client:
            for name, fail_at in (("happy", None), ("compensated", "review")):
                goal = await client.publish("report", {"topic": name, "fail_at": fail_at})
                assert await client.wait(goal, 60) is not None, name
                (HERE / f"{name}.jsonl").write_bytes((await record(settings, goal.workflow_id)).dumps())
    finally:
        terminate(*pids, grace_s=10)


Contracts = Callable[[StepContract], StepContract]


async def scripted(broker: EmbeddedBroker, workdir: Path, scripts: dict[str, Script],
                   contracts: Contracts = lambda c: c, deadline_s: float | None = None) -> None:
    settings = broker.settings(namespace=f"golden-{uuid.uuid4().hex[:6]}")
    kafka = Kafka(settings)
    await kafka.ensure_topics()
    producer = kafka.producer()
    await producer.start()
    pids = start(settings, [coordinator_spec()], workdir)
    try:
        for step in STEPS:
            contract = contracts(load_agent(f"choreograph.examples.report.{step}:agent").contract())
            await announce(producer, settings.registry_topic, settings.events_topic, settings.partitions, contract,
                           f"choreo://agent/report/{step}")
        async with Client(settings) as client:
            for name, script in scripts.items():
                goal = await client.publish("report", {"topic": name}, deadline=deadline_s)
                await script(Player(settings, producer, goal.workflow_id, goal.partition))
                assert await client.wait(goal, 60) is not None, name
                (HERE / f"{name}.jsonl").write_bytes((await record(settings, goal.workflow_id)).dumps())
    finally:
        terminate(*pids, grace_s=10)
        await producer.stop()


async def main(names: set[str]) -> None:
    runs: list[tuple[dict[str, Script], Contracts, float | None]] = [
        ({"failed_compensation": failed_compensation, "duplicated": duplicated, "reordered": reordered,
          "cancelled": cancelled}, lambda c: c, None),
        ({"retry": retry, "timeout": timeout}, timed, None),
        ({"late_result": late_result}, no_retry, None),
        ({"deadline": deadline}, lambda c: c, 2.0),
    ]
    broker = EmbeddedBroker().start()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            if not names or names & {"happy", "compensated"}:
                await real_agents(broker, Path(workdir))
            for scripts, contracts, deadline_s in runs:
                chosen = {n: s for n, s in scripts.items() if not names or n in names}
                if chosen:
                    await scripted(broker, Path(workdir), chosen, contracts, deadline_s)
    finally:
        broker.stop()
    for path in sorted(HERE.glob("*.jsonl")):
        print(path.name, sum(1 for _ in path.open()) - 1, "records")


if __name__ == "__main__":
    # Unsigned recordings: this script plays agents without their keys, and the golden tests fold
    # decisions (signatures are checked by services, and tested by tests/unit/test_forged_state.py
    # and tests/e2e/test_forgeries.py). Signed ones would differ at every run (new keys each time).
    os.environ["CHOREO_VERIFY"] = "off"
    asyncio.run(main(set(sys.argv[1:])))
