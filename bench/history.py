"""History lookups on a large log: 100,000 events across 5,000 workflows, then `choreo history` of
single workflows, as a library call and as the command (a fresh process, imports included)."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from choreograph import Envelope, Event, Kind, Settings, WorkflowStarted
from choreograph.events import (
    CompensationCompleted,
    CompensationRequested,
    OutcomeStatus,
    StepFailed,
    WorkflowOutcome,
    derived_id,
    new_workflow_id,
)
from choreograph.runtime import load_agent
from choreograph.saga import Graph
from choreograph.timetravel import History
from choreograph.transport import Kafka, RecordMetadata, announce

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from choreograph.examples.report._events import (  # noqa: E402
    AnalysisCompleted,
    ChartCompleted,
    DraftCompleted,
    ReportGoal,
    ResearchCompleted,
)

STEPS = ("research", "analyze", "chart", "draft", "review")


@dataclass
class HistoryFigures:
    events: int
    workflows: int
    build_s: float
    library_p50_ms: float
    library_max_ms: float
    cli_p50_ms: float
    cli_max_ms: float
    scanned_max: int
    full_scan_ms: float  # the same lookup reading the partition from its start, for comparison


def _workflow(workflow_id: str, graph: Graph, topic: str) -> list[tuple[Event, Kind, str, str | None]]:
    """20 events of a report workflow that fails at review and compensates (source, step)."""
    agent = "choreo://agent/report/"
    coordinator = "choreo://coordinator"
    out: list[tuple[Event, Kind, str, str | None]] = [
        (ReportGoal(topic=topic), Kind.GOAL, "choreo://bench", None),
        (WorkflowStarted(workflow="report", steps=[graph.nodes[n] for n in graph.order]), Kind.OTHER, coordinator,
         None),
        (ResearchCompleted(topic=topic, sources=["a", "b"]), Kind.STEP_COMPLETED, agent + "research", "research")]
    out += [(ResearchCompleted(topic=topic, sources=[f"p{i}"]), Kind.OTHER, agent + "research", "research")
            for i in range(4)]
    out += [(AnalysisCompleted(topic=topic, findings=["f"]), Kind.STEP_COMPLETED, agent + "analyze", "analyze"),
            (ChartCompleted(topic=topic, chart_uri="c"), Kind.STEP_COMPLETED, agent + "chart", "chart"),
            (DraftCompleted(topic=topic, text="d"), Kind.STEP_COMPLETED, agent + "draft", "draft"),
            (StepFailed(step="review", reason="no", error_type="X"), Kind.STEP_FAILED, agent + "review", "review")]
    for step in ("chart", "draft", "analyze", "research"):
        out += [(CompensationRequested(step=step, failed_step="review", reason="no"), Kind.COMPENSATION_REQUESTED,
                 coordinator, step),
                (CompensationCompleted(step=step), Kind.COMPENSATION_COMPLETED, agent + step, step)]
    out.append((WorkflowOutcome(workflow="report", status=OutcomeStatus.COMPENSATED, failed_step="review",
                                reason="no", completed_steps=sorted(STEPS[:4]), compensated_steps=sorted(STEPS[:4])),
                Kind.OUTCOME, coordinator, None))
    return out


async def build(settings: Settings, workflows: int, in_flight: int = 64) -> list[str]:
    """Produce the log: `in_flight` workflows interleaved at a time, as concurrent sagas would be."""
    kafka = Kafka(settings)
    await kafka.ensure_topics()
    producer = kafka.producer()
    await producer.start()
    contracts = [load_agent(f"choreograph.examples.report.{s}:agent").contract() for s in STEPS]
    graph = Graph.from_contracts("report", contracts)
    for contract in contracts:
        await announce(producer, settings.registry_topic, settings.events_topic, settings.partitions, contract,
                       f"choreo://agent/report/{contract.step}")
    ids: list[str] = []
    running: list[tuple[str, list[tuple[Event, Kind, str, str | None]], int]] = []
    futures: list[asyncio.Future[RecordMetadata]] = []
    try:
        while len(ids) < workflows or running:
            while len(running) < in_flight and len(ids) < workflows:
                workflow_id = new_workflow_id()
                ids.append(workflow_id)
                running.append((workflow_id, _workflow(workflow_id, graph, f"t{len(ids)}"), 0))
            next_round = []
            for workflow_id, events, index in running:
                event, kind, source, step = events[index]
                envelope = Envelope.new(type=event.type_name(), source=source, workflow="report",
                                        workflow_id=workflow_id, kind=kind, step=step,
                                        id=derived_id(workflow_id, str(index)))
                futures.append(await producer.send(settings.events_topic, value=event.encode(), key=envelope.key,
                                                   headers=envelope.headers()))
                if index + 1 < len(events):
                    next_round.append((workflow_id, events, index + 1))
            running = next_round
            if len(futures) > 5000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return ids


async def _lookup(settings: Settings, workflow_id: str, since_ms: int | None = None) -> tuple[float, int, int]:
    started = time.perf_counter()
    async with History(settings) as reader:
        found = [r async for r in reader.records(workflow_id, since_ms=since_ms)]
        scanned = reader.scanned
    return (time.perf_counter() - started) * 1000, scanned, len(found)


def run(settings: Settings, workflows: int = 5000) -> HistoryFigures:
    started = time.perf_counter()
    ids = asyncio.run(build(settings, workflows))
    build_s = time.perf_counter() - started
    picks = [ids[0], ids[len(ids) // 3], ids[len(ids) // 2], ids[-len(ids) // 4], ids[-1]]
    library, scanned = [], []
    for workflow_id in picks * 3:
        ms, seen, found = asyncio.run(_lookup(settings, workflow_id))
        assert found == 20, (workflow_id, found)
        library.append(ms)
        scanned.append(seen)
    full_ms, _, found = asyncio.run(_lookup(settings, ids[len(ids) // 2], since_ms=0))
    assert found == 20
    cli = []
    env = {**os.environ, **settings.env()}
    for workflow_id in picks * 2:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "choreograph", "history", workflow_id, "--json"], env=env,
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        cli.append((time.perf_counter() - t0) * 1000)
        assert out.returncode == 0, out.stderr
        assert len(out.stdout.splitlines()) == 20, out.stdout
    return HistoryFigures(events=len(ids) * 20, workflows=len(ids), build_s=round(build_s, 1),
                          library_p50_ms=round(statistics.median(library), 1), library_max_ms=round(max(library), 1),
                          cli_p50_ms=round(statistics.median(cli), 1), cli_max_ms=round(max(cli), 1),
                          scanned_max=max(scanned), full_scan_ms=round(full_ms, 1))
