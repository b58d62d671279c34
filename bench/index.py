"""The workflow index on a large log: 5,000 workflows (half completed, half compensated, the records
signed by the parties they claim, as the services write them) indexed from the log's start, then
`choreo ls` as a command (a fresh process, imports included) over the index file.

Prints figures, asserts nothing but that the listing is complete: `python -m bench --only index`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from choreograph import Envelope, Event, Kind, Settings, WorkflowStarted
from choreograph.events import OutcomeStatus, WorkflowOutcome, derived_id, new_workflow_id
from choreograph.index import Indexer, index_path
from choreograph.runtime import load_agent
from choreograph.saga import Graph
from choreograph.security import Identity
from choreograph.transport import Kafka, RecordMetadata, Trust, announce

from .history import STEPS, _workflow

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from choreograph.examples.report._events import (  # noqa: E402
    AnalysisCompleted,
    ChartCompleted,
    DraftCompleted,
    ReportGoal,
    ResearchCompleted,
    ReviewCompleted,
)

Steps = list[tuple[Event, Kind, str, str | None]]
SIGNERS = {"choreo://coordinator": Identity.parse("coordinator"), "choreo://bench": Identity.parse("publisher:local"),
           **{f"choreo://agent/report/{s}": Identity.agent("report", s) for s in STEPS}}


@dataclass
class IndexFigures:
    workflows: int
    events: int
    build_s: float
    index_s: float
    index_events_per_s: float
    folded: int
    ls_limit50_p50_ms: float
    ls_limit50_max_ms: float
    ls_status_p50_ms: float
    ls_status_max_ms: float
    version_p50_ms: float  # `choreo --version` in the same runs: starting Python and importing the CLI
    file_mb: float


def _completed(topic: str, graph: Graph) -> Steps:
    """A report workflow that completes: goal, graph, five results, outcome (8 events)."""
    agent, coordinator = "choreo://agent/report/", "choreo://coordinator"
    return [(ReportGoal(topic=topic), Kind.GOAL, "choreo://bench", None),
            (WorkflowStarted(workflow="report", steps=[graph.nodes[n] for n in graph.order]), Kind.OTHER,
             coordinator, None),
            (ResearchCompleted(topic=topic, sources=["a"]), Kind.STEP_COMPLETED, agent + "research", "research"),
            (AnalysisCompleted(topic=topic, findings=["f"]), Kind.STEP_COMPLETED, agent + "analyze", "analyze"),
            (ChartCompleted(topic=topic, chart_uri="c"), Kind.STEP_COMPLETED, agent + "chart", "chart"),
            (DraftCompleted(topic=topic, text="d"), Kind.STEP_COMPLETED, agent + "draft", "draft"),
            (ReviewCompleted(topic=topic, approved=True, notes="ok"), Kind.STEP_COMPLETED, agent + "review", "review"),
            (WorkflowOutcome(workflow="report", status=OutcomeStatus.COMPLETED, completed_steps=sorted(STEPS),
                             compensated_steps=[]), Kind.OUTCOME, coordinator, None)]


async def build(settings: Settings, workflows: int, in_flight: int = 64) -> int:
    """Produce the log, `in_flight` workflows interleaved; returns how many events it holds."""
    kafka = Kafka(settings)
    await kafka.ensure_topics()
    producer = kafka.producer()
    await producer.start()
    signers = {source: Trust.from_env(identity).signer for source, identity in SIGNERS.items()}
    contracts = [load_agent(f"choreograph.examples.report.{s}:agent").contract() for s in STEPS]
    graph = Graph.from_contracts("report", contracts)
    for contract in contracts:
        await announce(producer, settings.registry_topic, settings.events_topic, settings.partitions, contract,
                       f"choreo://agent/report/{contract.step}")
    started, events = 0, 0
    running: list[tuple[str, Steps, int]] = []
    futures: list[asyncio.Future[RecordMetadata]] = []
    try:
        while started < workflows or running:
            while len(running) < in_flight and started < workflows:
                workflow_id = new_workflow_id()
                started += 1
                topic = f"t{started}"
                steps = _completed(topic, graph) if started % 2 else _workflow(workflow_id, graph, topic)
                running.append((workflow_id, steps, 0))
            next_round = []
            for workflow_id, steps, i in running:
                event, kind, source, step = steps[i]
                envelope = Envelope.new(type=event.type_name(), source=source, workflow="report", kind=kind,
                                        workflow_id=workflow_id, step=step, id=derived_id(workflow_id, str(i)))
                value = event.encode()
                signer = signers[source]
                headers = envelope.headers() if signer is None else signer.sign(envelope.key, value, envelope.headers())
                futures.append(await producer.send(settings.events_topic, value=value, key=envelope.key,
                                                   headers=headers))
                events += 1
                if i + 1 < len(steps):
                    next_round.append((workflow_id, steps, i + 1))
            running = next_round
            if len(futures) > 5000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return events


async def index(settings: Settings, path: Path) -> tuple[float, int]:
    """Index the whole log from its start; (seconds, events folded)."""
    began = time.perf_counter()
    indexer = Indexer(settings, path)
    await indexer.start()
    try:
        while not (await indexer.step(timeout_ms=100) == 0 and await indexer.caught_up()):
            pass
    finally:
        await indexer.stop()
    return time.perf_counter() - began, indexer.folded


def _ls(env: dict[str, str], *args: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "choreograph", *args], env=env, capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    took = (time.perf_counter() - t0) * 1000
    assert out.returncode == 0, out.stderr
    return took, len(out.stdout.splitlines())


def run(settings: Settings, workflows: int = 5000, runs: int = 5) -> IndexFigures:
    began = time.perf_counter()
    events = asyncio.run(build(settings, workflows))
    build_s = time.perf_counter() - began
    path = index_path(Path(os.environ.get("CHOREO_HOME") or tempfile.mkdtemp()), settings.namespace)
    index_s, folded = asyncio.run(index(settings, path))
    env = {**os.environ, **settings.env()}
    limit50: list[float] = []
    status: list[float] = []
    version: list[float] = []
    # As a user runs it: with the indexer running (`choreo up`'s), caught up, so no "may be behind" line.
    ready = path.parent / "bench.ready"
    indexer = subprocess.Popen([sys.executable, "-m", "choreograph", "index", "run"], cwd=ROOT,
                               env={**env, "CHOREO_READY_FILE": str(ready)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        _wait_for(ready, indexer)
        _measure(env, runs, limit50, status, version)
    finally:
        indexer.terminate()
        indexer.wait(timeout=30)
    whole = orjson.loads(subprocess.run([sys.executable, "-m", "choreograph", "ls", "--json", "--limit", "1"], env=env,
                                        capture_output=True, text=True, timeout=60, cwd=ROOT).stdout)
    assert whole["status"] in ("completed", "compensated"), whole
    return IndexFigures(workflows=workflows, events=events, build_s=round(build_s, 1), index_s=round(index_s, 1),
                        index_events_per_s=round(events / index_s), folded=folded,
                        ls_limit50_p50_ms=round(statistics.median(limit50), 1),
                        ls_limit50_max_ms=round(max(limit50), 1),
                        ls_status_p50_ms=round(statistics.median(status), 1), ls_status_max_ms=round(max(status), 1),
                        version_p50_ms=round(statistics.median(version), 1),
                        file_mb=round(sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6, 1))


def _wait_for(ready: Path, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        assert process.poll() is None, f"choreo index run exited with {process.returncode}"
        assert time.monotonic() < deadline, "choreo index run not ready"
        time.sleep(0.1)


def _measure(env: dict[str, str], runs: int, limit50: list[float], status: list[float], version: list[float]) -> None:
    """`choreo ls` twice and `choreo --version` (the start-up alone) per run, interleaved: the machine drifts."""
    for _ in range(runs):
        ms, rows = _ls(env, "ls", "--json", "--limit", "50")
        assert rows == 50, rows
        limit50.append(ms)
        ms, rows = _ls(env, "ls", "--json", "--status", "completed")
        assert rows == 50, rows
        status.append(ms)
        version.append(_ls(env, "--version")[0])
