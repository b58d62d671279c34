"""`choreo replay WORKFLOW_ID --sandbox NAME`: re-run chosen agents of a recorded workflow, the real
agent code in its own processes, against a copy of its events in a sandbox namespace.

The sandbox (`<namespace>.sandbox.<NAME>`) has its own topics, groups and coordinator; nothing in it
reaches production topics. The other agents' recorded outputs are fed back: each is published once
the event that caused it (by id) appears in the sandbox. Results and decisions have deterministic
ids, so a re-run that behaves as recorded reproduces the recorded events id for id, and the report
lists every event whose type, step, source, cause or payload differs, or that is missing or new.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from ..errors import AgentDefinitionError, ReplayError
from ..events._envelope import COORDINATOR_SOURCE, agent_source
from ..events._models import StepContract
from ..events._records import StoredRecord
from ..runtime._agent import load_agent
from ..runtime._processes import ServiceSpec, discover, project_root, spawn, wait_ready
from ..saga._entries import HistoryEntry, entries_of, entry_of, is_outcome
from ..saga._graph import Graph
from ..saga._replay import catalog_for
from ..timetravel._archive import refuse_unless_empty
from ..timetravel._history import History
from ..timetravel._recording import Recording
from ..transport._broker import terminate
from ..transport._kafka import Kafka
from ..transport._registry import announce
from ..transport._settings import Settings, run_dir

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Difference:
    """One event that the re-run did not reproduce as recorded."""

    what: str  # "differs", "missing" (recorded, not re-produced) or "new" (re-produced, not recorded)
    kind: str
    step: str | None
    event_id: str
    fields: dict[str, Any] = field(default_factory=dict)  # name -> {"recorded": ..., "rerun": ...}

    def json(self) -> dict[str, Any]:
        return {"what": self.what, "kind": self.kind, "step": self.step, "event_id": self.event_id,
                "fields": self.fields}


@dataclass
class ReplayReport:
    workflow_id: str
    sandbox: str
    agents: list[str]
    fed: int
    recorded: list[HistoryEntry]
    rerun: list[HistoryEntry]
    differences: list[Difference]

    @property
    def identical(self) -> bool:
        return not self.differences

    def json(self) -> dict[str, Any]:
        return {"workflow_id": self.workflow_id, "sandbox": self.sandbox, "agents": self.agents, "fed": self.fed,
                "recorded_events": len(self.recorded), "rerun_events": len(self.rerun),
                "identical": self.identical, "differences": [d.json() for d in self.differences]}


def compare(recorded: Iterable[HistoryEntry], rerun: Iterable[HistoryEntry]) -> list[Difference]:
    """Recorded against re-run events, matched by event id. Times, offsets and trace ids are
    expected to differ and are not compared; everything else is."""
    rerun_by_id: dict[str, HistoryEntry] = {}
    for entry in rerun:
        rerun_by_id.setdefault(entry.event_id, entry)
    differences: list[Difference] = []
    seen: set[str] = set()
    for want in recorded:
        if want.event_id in seen:
            continue
        seen.add(want.event_id)
        got = rerun_by_id.get(want.event_id)
        if got is None:
            differences.append(Difference("missing", want.kind, want.step, want.event_id))
            continue
        fields = {name: {"recorded": getattr(want, name), "rerun": getattr(got, name)}
                  for name in ("type", "kind", "step", "source", "causation_id", "data", "error")
                  if getattr(want, name) != getattr(got, name)}
        if fields:
            differences.append(Difference("differs", want.kind, want.step, want.event_id, fields))
    for event_id, got in rerun_by_id.items():
        if event_id not in seen:
            differences.append(Difference("new", got.kind, got.step, event_id))
    return differences


def rerun_steps(graph: Graph, agents: Mapping[str, str | None] | None, from_step: str | None) -> list[str]:
    """Steps to run live: those named (default every step), minus any before `from_step`."""
    chosen = set(graph.nodes) if agents is None else set(agents)
    unknown = sorted(chosen - graph.nodes.keys() | ({from_step} - graph.nodes.keys() if from_step else set()))
    if unknown:
        raise ReplayError(f"workflow {graph.workflow} has no step(s) {unknown}; its steps: {list(graph.order)}")
    if from_step is not None:
        after = {from_step}
        for name in graph.order:
            if any(d in after for d in graph.nodes[name].depends_on):
                after.add(name)
        chosen &= after
    return [name for name in graph.order if name in chosen]


def agent_target(root: Path, workflow: str, step: str) -> str:
    """The MODULE:ATTR under services/ whose agent runs `step` of `workflow`."""
    for spec in discover(root):
        if spec.name == "coordinator":
            continue
        target = spec.argv[-1]
        try:
            agent = load_agent(target)
        except AgentDefinitionError:
            continue
        if agent.workflow == workflow and agent.step == step:
            return target
    raise ReplayError(f"no agent of {workflow}.{step} under {root / 'services'}; name one as {step}=MODULE:ATTR")


async def _seed(settings: Settings, contracts: Iterable[StepContract]) -> None:
    """Announce the recorded contracts of the steps that are not re-run, so the sandbox coordinator
    builds the recorded graph."""
    kafka = Kafka(settings)
    producer = kafka.producer()
    await producer.start()
    try:
        partitions = len(await producer.partitions_for(settings.events_topic))
        for contract in contracts:
            await announce(producer, settings.registry_topic, settings.events_topic, partitions, contract,
                           agent_source(contract.workflow, contract.step))
    finally:
        await producer.stop()


class _Feeder:
    """Decides when a recorded event of an agent that is not re-run goes into the sandbox: once the
    event that caused it is there and every event recorded before it is too, so the re-run sees
    the recorded order; when the re-run has diverged (an event recorded earlier never comes), after
    `patience_s` without anything new."""

    def __init__(self, events: list[tuple[StoredRecord, HistoryEntry]], fed: set[str], patience_s: float) -> None:
        self.pending = [(r, e) for r, e in events if e.event_id in fed]
        self.before = {r.offset: [x.event_id for q, x in events if q.offset < r.offset] for r, _ in self.pending}
        self.present: set[str] = set()
        self.patience_s = patience_s
        self.quiet_since = time.monotonic()

    def saw(self, event_id: str) -> None:
        self.present.add(event_id)
        self.quiet_since = time.monotonic()

    def _ready(self) -> list[tuple[StoredRecord, HistoryEntry]]:
        return [(r, e) for r, e in self.pending if e.causation_id is None or e.causation_id in self.present]

    def done(self) -> bool:
        """Nothing can be fed any more: whatever waits has a cause the re-run never produced."""
        return not self._ready() and time.monotonic() - self.quiet_since >= self.patience_s

    def next(self) -> StoredRecord | None:
        """The next record to publish now, if any (taken off the pending list)."""
        ready = self._ready()
        if not ready:
            return None
        record, entry = ready[0]
        in_order = all(event_id in self.present for event_id in self.before[record.offset])
        if not in_order and time.monotonic() - self.quiet_since < self.patience_s:
            return None
        self.pending.remove((record, entry))
        self.quiet_since = time.monotonic()
        return record


async def _feed(settings: Settings, recording: Recording, events: list[tuple[StoredRecord, HistoryEntry]],
                fed: set[str], timeout_s: float, patience_s: float = 1.0) -> int:
    """Publish the fed events (ids in `fed`, see _Feeder); return when the sandbox workflow has its
    outcome and nothing more is waiting to be fed, or at the timeout."""
    feeder = _Feeder(events, fed, patience_s)
    tp = TopicPartition(settings.events_topic, events[0][0].partition if events else 0)
    key = recording.workflow_id.encode()
    sent = 0
    finished = False
    kafka = Kafka(settings)
    producer: AIOKafkaProducer = kafka.producer()
    await producer.start()
    try:
        async with kafka.reader([tp]) as consumer:
            await consumer.seek_to_beginning(tp)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not (finished and feeder.done()):
                while (record := feeder.next()) is not None:
                    await producer.send_and_wait(settings.events_topic, value=record.value, key=record.key,
                                                 headers=list(record.headers), partition=tp.partition)
                    sent += 1
                batch = await consumer.getmany(tp, timeout_ms=100)
                for row in batch.get(tp, ()):
                    if row.key == key:
                        stored = StoredRecord.of(row)
                        if (entry := entry_of(stored, recording.store)) is not None:
                            feeder.saw(entry.event_id)
                        finished = finished or is_outcome(stored)
    finally:
        await producer.stop()
    return sent


async def rerun(settings: Settings, recording: Recording, sandbox: str, *,
                 agents: Mapping[str, str | None] | None = None, from_step: str | None = None,
                 timeout_s: float = 60.0, root: Path | None = None) -> ReplayReport:
    """Re-run the chosen steps of a recorded workflow in the sandbox NAME; compare with the recording."""
    if not _NAME.match(sandbox):
        raise ReplayError(f"sandbox name {sandbox!r}: use letters, digits, - and _")
    events = recording.events()
    entries = [e for _, e in events]
    graph = recording.catalog().get(recording.workflow) or catalog_for(entries).get(recording.workflow)
    if graph is None:
        raise ReplayError(f"{recording.workflow_id}: no step graph recorded (did the coordinator start it?)")
    steps = rerun_steps(graph, agents, from_step)
    root = root or project_root()
    targets = {s: (agents or {}).get(s) or agent_target(root, recording.workflow, s) for s in steps}
    sources = {agent_source(recording.workflow, s) for s in steps} | {COORDINATOR_SOURCE}
    fed = {e.event_id for _, e in events if e.source not in sources}
    box = replace(settings, namespace=f"{settings.namespace}.sandbox.{sandbox}")
    kafka = Kafka(box)
    await kafka.ensure_topics()
    await refuse_unless_empty(kafka, box, f"sandbox {sandbox!r} is in use; choose another name")
    await _seed(box, [c for c in recording.contracts if c.step not in steps])
    processes = _start(box, root, sandbox, {"coordinator": None, **targets})
    try:
        sent = await _feed(box, recording, events, fed, timeout_s)
    finally:
        _stop(processes)
    async with History(box) as reader:
        rerun = entries_of([r async for r in reader.records(recording.workflow_id, to_end=True)], reader.store)
    return ReplayReport(recording.workflow_id, box.namespace, [f"{s}={t}" for s, t in targets.items()], sent,
                        entries, rerun, compare(entries, rerun))


def _start(settings: Settings, root: Path, sandbox: str, targets: Mapping[str, str | None]
           ) -> list[subprocess.Popen[bytes]]:
    """The sandbox coordinator and the re-run agents, each its own process; return once ready."""
    logs = run_dir() / "sandbox" / sandbox
    logs.mkdir(parents=True, exist_ok=True)
    started: dict[str, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    try:
        for name, target in targets.items():
            argv = ([sys.executable, "-m", "choreograph", "coordinator", "run"] if target is None
                    else [sys.executable, "-m", "choreograph", "agent", "run", target])
            ready = logs / f"{name}.{uuid.uuid4().hex[:8]}.ready"
            log = logs / f"{name}.log"
            started[name] = (spawn(ServiceSpec(name, argv), root, settings, ready, log), ready, log)
        wait_ready(started, 60)
    except BaseException:
        _stop([p for p, _, _ in started.values()])
        raise
    return [p for p, _, _ in started.values()]


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    terminate(*(p.pid for p in processes), grace_s=10)
    for process in processes:
        process.wait()
