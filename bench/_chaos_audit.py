"""What `make chaos` checks once the faults stop: each workflow's history against its goal's plan,
the example agents' effect log (one line per handler run) matched with the deaths the harness
caused, the dead-letter topic, and every group's committed lag.

A handler run again is allowed only when the process of the run before it died (SIGKILL or a
planned crash point) after that run's effect and before the step's result was in the log: its
crash window. Every other re-run is "unexplained", and fails the run.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from choreograph import History, HistoryEntry, Settings
from choreograph.events import StoredRecord
from choreograph.saga import entry_of
from choreograph.transport import Kafka, TopicPartition

from ._chaos_fleet import Kill
from ._chaos_plan import Goal

STEPS = ("research", "analyze", "chart", "draft", "review")
RESULT_KINDS = frozenset({"step_completed", "step_failed"})
UNDO_KINDS = frozenset({"compensation_completed", "compensation_failed"})
EXAMPLES = 3  # workflow ids kept per kind of problem, to look at with `choreo history`
INVARIANTS = ("lost", "duplicate_outcomes", "duplicate_results", "wrong_compensations", "reruns_unexplained")


@dataclass(frozen=True)
class HandlerRun:
    """One run of a step's handler (or of a compensation, step "undo:<step>"), as recorded."""

    pid: int
    started_ns: int
    done_ns: int


Effects = dict[str, dict[str, list[HandlerRun]]]  # workflow id -> step -> runs


def read_effects(path: Path) -> Effects:
    """The effect log as runs per workflow and step; a torn or foreign line is skipped."""
    runs: Effects = defaultdict(lambda: defaultdict(list))
    if not path.exists():
        return runs
    for line in path.read_text(errors="replace").splitlines():
        fields = line.split()
        if len(fields) not in (4, 5) or not all(f.isdigit() for f in fields[2:]):
            continue
        started = int(fields[3])
        runs[fields[0]][fields[1]].append(HandlerRun(int(fields[2]), started, int(fields[-1])))
    return runs


@dataclass
class Log:
    """What the log holds after a run: each published workflow's entries, and the dead letters."""

    entries: dict[str, list[HistoryEntry]]
    dead_letters: Counter[tuple[int, int]]  # (partition, offset) of the events topic -> dead letters of it


async def read_log(settings: Settings, workflow_ids: set[str], starts: dict[int, int]) -> Log:
    """Read the events topic from `starts` (offset per partition) to its end, and all dead letters."""
    kafka = Kafka(settings)
    entries: dict[str, list[HistoryEntry]] = defaultdict(list)
    keys = {w.encode(): w for w in workflow_ids}
    async with History(settings) as reader:  # its registry knows every announced schema
        tps = [TopicPartition(settings.events_topic, p) for p in starts]
        async for record in kafka.read(tps, start={tp: starts[tp.partition] for tp in tps}):
            if (workflow_id := keys.get(record.key or b"")) is not None and \
                    (entry := entry_of(StoredRecord.of(record), reader.store)) is not None:
                entries[workflow_id].append(entry)
    dead: Counter[tuple[int, int]] = Counter()
    count = await kafka.partition_count(settings.deadletter_topic)
    async for record in kafka.read([TopicPartition(settings.deadletter_topic, p) for p in range(count)]):
        headers = dict(record.headers)
        if headers.get("dlq_topic") == settings.events_topic.encode():
            dead[(int(headers.get("dlq_partition", b"-1")), int(headers.get("dlq_offset", b"-1")))] += 1
    return Log(entries, dead)


@dataclass
class Audit:
    """The problems and figures of one scenario's goals; `examples` names a few workflows per problem."""

    kills: list[Kill]
    injected: set[tuple[int, int]]  # records the harness wrote (copies, malformed): not the system's
    goals: int = 0
    terminal: int = 0
    lost: int = 0
    duplicate_outcomes: int = 0
    duplicate_results: int = 0
    wrong_compensations: int = 0
    wrong_status: int = 0
    effects_rerun: int = 0
    reruns_explained: Counter[str] = field(default_factory=Counter)  # by the cause of the death
    reruns_unexplained: int = 0
    reruns_after_result: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    trails: dict[str, str] = field(default_factory=dict)  # a few lost sagas: how far they got
    runs: dict[tuple[str, str], list[HandlerRun]] = field(default_factory=dict)  # (workflow id, step) -> runs
    reruns: list[dict[str, Any]] = field(default_factory=list)  # each re-run, with the death that explains it

    def add(self, goal: Goal, entries: list[HistoryEntry], runs: dict[str, list[HandlerRun]]) -> None:
        """Check one workflow: its history (less what the harness injected) and its handler runs."""
        entries = [e for e in entries if (e.partition, e.offset) not in self.injected]
        self.goals += 1
        outcomes = [e for e in entries if e.kind == "outcome"]
        if not outcomes:
            self.count("lost", goal.workflow_id)
            if len(self.trails) < EXAMPLES:
                self.trails[goal.workflow_id] = trail(entries)
        else:
            self.terminal += 1
            if len(outcomes) > 1:
                self.count("duplicate_outcomes", goal.workflow_id)
            status = str((outcomes[0].data or {}).get("status"))
            self.statuses[status] += 1
            if status != goal.expect:
                self.count("wrong_status", goal.workflow_id)
            # Against what happened (a wrong status is counted above): a saga that did not complete
            # undoes each completed step exactly once, one that completed undoes none.
            if not compensated_exactly_completed(entries, status != "completed"):
                self.count("wrong_compensations", goal.workflow_id)
        self._check_runs(goal.workflow_id, entries, runs)

    def _check_runs(self, workflow_id: str, entries: list[HistoryEntry], runs: dict[str, list[HandlerRun]]) -> None:
        logged: dict[str, list[HistoryEntry]] = defaultdict(list)
        for entry in entries:
            if entry.step is not None and entry.kind in RESULT_KINDS:
                logged[entry.step].append(entry)
            elif entry.step is not None and entry.kind in UNDO_KINDS:
                logged[f"undo:{entry.step}"].append(entry)
        for step in logged.keys() | runs.keys():
            results, handled = logged.get(step, []), sorted(runs.get(step, []), key=lambda r: r.started_ns)
            self.runs[(workflow_id, step)] = handled
            if len(results) > 1:
                self.count("duplicate_results", workflow_id)
            # Broker timestamps are whole milliseconds (the producer's clock, this machine's).
            logged_ns = min((e.timestamp for e in results), default=None)
            logged_ns = None if logged_ns is None else logged_ns * 1_000_000
            for before, run in itertools.pairwise(handled):
                self.effects_rerun += 1
                if logged_ns is not None and run.started_ns >= logged_ns + 1_000_000:
                    self.reruns_after_result += 1
                    self.remember("reruns_after_result", workflow_id)
                kill = explaining_kill(self.kills, before, run, logged_ns)
                if kill is None:
                    self.count("reruns_unexplained", workflow_id)
                    self.reruns.append({"workflow_id": workflow_id, "step": step, "kill": None})
                else:
                    self.reruns_explained[kill.cause] += 1
                    after_ms = (kill.at_ns - before.done_ns) // 1_000_000
                    self.reruns.append({"workflow_id": workflow_id, "step": step, "kill": kill.cause,
                                        "role": kill.role, "ms_after_effect": after_ms})

    def count(self, problem: str, workflow_id: str) -> None:
        setattr(self, problem, getattr(self, problem) + 1)
        self.remember(problem, workflow_id)

    def remember(self, problem: str, workflow_id: str) -> None:
        seen = self.examples[problem]
        if len(seen) < EXAMPLES and workflow_id not in seen:
            seen.append(workflow_id)

    def figures(self) -> dict[str, Any]:
        return {"goals": self.goals, "terminal": self.terminal, "lost": self.lost,
                "duplicate_outcomes": self.duplicate_outcomes, "duplicate_results": self.duplicate_results,
                "wrong_compensations": self.wrong_compensations, "wrong_status": self.wrong_status,
                "effects_rerun": self.effects_rerun, "reruns_explained_by": dict(self.reruns_explained),
                "reruns_unexplained": self.reruns_unexplained, "reruns_after_result": self.reruns_after_result,
                "statuses": dict(self.statuses), "reruns": self.reruns}

    def holds(self) -> bool:
        """The invariants: nothing lost or doubled, compensations exact, every re-run explained."""
        return not any(getattr(self, name) for name in INVARIANTS) and not self.wrong_status


def explaining_kill(kills: list[Kill], before: HandlerRun, rerun: HandlerRun, logged_ns: int | None) -> Kill | None:
    """The death that explains `rerun`: the process of the run `before` it died after that run's
    effect, before the re-run started, and before the step's result was in the log."""
    for kill in kills:
        if kill.pid == before.pid and before.done_ns <= kill.at_ns <= rerun.started_ns and (
                logged_ns is None or kill.at_ns < logged_ns + 1_000_000):
            return kill
    return None


def trail(entries: list[HistoryEntry]) -> str:
    """A workflow's history in one line: "goal step_completed:research ..."."""
    return " ".join(e.kind if e.step is None else f"{e.kind}:{e.step}" for e in entries)


def compensated_exactly_completed(entries: list[HistoryEntry], compensates: bool) -> bool:
    """tests/helpers/sagas.py's rule as a check: a failed saga asks each completed step to compensate once
    (and each does), a successful one asks none. A request published twice with one id (a coordinator
    restarted mid-publish) is one request."""
    completed = {e.step for e in entries if e.kind == "step_completed" and e.step is not None}
    want: Counter[str] = Counter(completed) if compensates else Counter()
    requested = Counter(step for step, _ in {(e.step, e.event_id) for e in entries
                                             if e.kind == "compensation_requested" and e.step is not None})
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
