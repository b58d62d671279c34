"""What `make chaos` checks once the faults stop: each workflow's history against its goal, the
example agents' effect log (one line per handler run) and every group's committed lag.

Counts, never assertions: a fault-injection run reports what went wrong, and how often.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import TopicPartition

from choreograph import HistoryEntry, OutcomeStatus, Settings
from choreograph.transport import Kafka

STEPS = ("research", "analyze", "chart", "draft", "review")
RESULT_KINDS = frozenset({"step_completed", "step_failed"})
EXAMPLES = 3  # workflow ids kept per kind of problem, to look at with `choreo history`


@dataclass(frozen=True)
class HandlerRun:
    """One run of a step's handler, as services/report/_events.py recorded it."""

    pid: int
    started_ns: int


Effects = dict[str, dict[str, list[HandlerRun]]]  # workflow id -> step -> runs


def read_effects(path: Path) -> Effects:
    """The effect log as runs per workflow and step; a torn or foreign line is skipped."""
    runs: Effects = defaultdict(lambda: defaultdict(list))
    if not path.exists():
        return runs
    for line in path.read_text(errors="replace").splitlines():
        fields = line.split()
        if len(fields) != 4 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        workflow_id, step, pid, started_ns = fields
        runs[workflow_id][step].append(HandlerRun(int(pid), int(started_ns)))
    return runs


@dataclass
class Audit:
    """Problems found over all workflows of a run; `examples` names a few workflows per problem."""

    goals: int = 0
    lost: int = 0
    duplicate_outcomes: int = 0
    wrong_compensations: int = 0
    wrong_status: int = 0
    failed_outcomes: int = 0
    duplicate_results: int = 0
    steps_rerun: int = 0
    handler_reruns_total: int = 0
    reruns_after_result: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    trails: dict[str, str] = field(default_factory=dict)  # a few lost sagas: how far they got
    lost_at: Counter[str] = field(default_factory=Counter)  # lost sagas by the steps that have a result

    def add(self, workflow_id: str, fail_at: str | None, entries: list[HistoryEntry],
            runs: dict[str, list[HandlerRun]]) -> None:
        """Check one workflow: its recorded history and the handler runs of its steps."""
        self.goals += 1
        outcomes = [e for e in entries if e.kind == "outcome"]
        if not outcomes:
            self._count("lost", workflow_id)
            if len(self.trails) < EXAMPLES:
                self.trails[workflow_id] = trail(entries)
            done = [s for s in STEPS if any(e.step == s and e.kind in RESULT_KINDS for e in entries)]
            self.lost_at[" ".join(done) or "no step result"] += 1
        elif len(outcomes) > 1:
            self._count("duplicate_outcomes", workflow_id)
        if outcomes:
            status = str((outcomes[0].data or {}).get("status"))
            self.statuses[status] += 1
            want = OutcomeStatus.COMPLETED if fail_at is None else OutcomeStatus.COMPENSATED
            if status != want.value:
                self._count("wrong_status", workflow_id)
            if status == OutcomeStatus.FAILED.value:
                self._count("failed_outcomes", workflow_id)
            if not compensated_exactly_completed(entries, fail_at):
                self._count("wrong_compensations", workflow_id)
        self._check_steps(workflow_id, entries, runs)

    def _check_steps(self, workflow_id: str, entries: list[HistoryEntry],
                     runs: dict[str, list[HandlerRun]]) -> None:
        results: dict[str, list[HistoryEntry]] = defaultdict(list)
        for entry in entries:
            if entry.kind in RESULT_KINDS and entry.step is not None:
                results[entry.step].append(entry)
        for step in results.keys() | runs.keys():
            logged, handled = results.get(step, []), runs.get(step, [])
            if len(logged) > 1:
                self._count("duplicate_results", workflow_id)
            if len(handled) > 1:
                self._count("steps_rerun", workflow_id)
                self.handler_reruns_total += len(handled) - 1
            if logged:
                # Broker timestamps are whole milliseconds: a run counts as "after" the result
                # when it started after the millisecond the first result was stamped with.
                after_ns = (logged[0].timestamp + 1) * 1_000_000
                late = sum(1 for run in handled if run.started_ns >= after_ns)
                if late:
                    self.reruns_after_result += late
                    self._remember("reruns_after_result", workflow_id)

    def _count(self, problem: str, workflow_id: str) -> None:
        setattr(self, problem, getattr(self, problem) + 1)
        self._remember(problem, workflow_id)

    def _remember(self, problem: str, workflow_id: str) -> None:
        seen = self.examples[problem]
        if len(seen) < EXAMPLES and workflow_id not in seen:
            seen.append(workflow_id)


def trail(entries: list[HistoryEntry]) -> str:
    """A workflow's history in one line: "goal step_completed:research ..."."""
    return " ".join(e.kind if e.step is None else f"{e.kind}:{e.step}" for e in entries)


def compensated_exactly_completed(entries: list[HistoryEntry], fail_at: str | None) -> bool:
    """tests/helpers/sagas.py's rule as a check: a failed saga asks each completed step to compensate once
    (and each does), a successful one asks none."""
    completed = {e.step for e in entries if e.kind == "step_completed" and e.step is not None}
    want: Counter[str] = Counter(completed) if fail_at is not None else Counter()
    requested = Counter(e.step for e in entries if e.kind == "compensation_requested" and e.step is not None)
    undone = Counter(e.step for e in entries if e.kind == "compensation_completed" and e.step is not None)
    return requested == want and undone == want


def groups(settings: Settings) -> list[str]:
    """Every consumer group of the run: the coordinators' and one per report step."""
    return [settings.coordinator_group, *(settings.agent_group("report", step) for step in STEPS)]


async def committed_lags(settings: Settings) -> dict[str, int]:
    """Per group, the records of the events topic after its committed offsets (all partitions)."""
    kafka = Kafka(settings)
    tps = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
    ends = await kafka.end_offsets(tps)
    lags = {}
    for group in groups(settings):
        # A consumer that names the group but subscribes to nothing reads its commits without joining.
        consumer = kafka.consumer(group_id=group)
        await consumer.start()
        try:
            committed = {tp: await consumer.committed(tp) for tp in tps}
        finally:
            await consumer.stop()
        lags[group] = sum(ends[tp] - (committed[tp] or 0) for tp in tps)
    return lags
