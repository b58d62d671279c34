"""Reading a recorded workflow as the coordinator read it live: its facts, and the clock ticks between them.

`choreo state` (saga.fold) and the golden replayer (saga.check) both go through here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from ..errors import WorkflowError
from ..events._envelope import COORDINATOR_SOURCE, DEADLINE_HEADER, Kind
from ._check import contradiction, impostor
from ._decide import Decision, SagaState, clock, handle
from ._entries import HistoryEntry
from ._facts import Fact, deadline_of, fact_of
from ._graph import Graph
from ._timers import next_due


def fact_of_entry(entry: HistoryEntry, state: SagaState | None = None) -> Fact | None:
    """The coordinator's reading of an entry; None for what it dead-letters and never folds.

    That is an unreadable payload, a framework event failing its model (ValueError), a
    WorkflowStarted whose steps make no graph (WorkflowError: a cycle or an unknown dependency),
    an attempt, timeout or heartbeat from a party that cannot know it (saga._check.impostor), and,
    given the workflow's state, a second goal or a fact contradicting it (saga._check.contradiction).
    """
    if entry.error is not None or entry.data is None:
        return None
    try:
        deadline = None
        if entry.kind == Kind.GOAL.value:
            deadline = deadline_of(next((v for k, v in entry.headers if k == DEADLINE_HEADER), None))
        fact = fact_of(entry.envelope, entry.data, entry.timestamp, deadline)
    except (ValueError, WorkflowError):
        return None
    if impostor(entry.source, fact) is not None:
        return None
    if state is not None and state.goal_seen and (fact.kind is Kind.GOAL or contradiction(state, fact) is not None):
        return None  # a second goal is a duplicate: ignored, or dead-lettered if its id differs
    return fact


class Ticks:
    """The clock facts the live coordinator fed between two events of a workflow, read off its decisions.

    The coordinator's clock passes a deadline while the log is silent; it decides right then, with
    the events it has folded, and names the last one as the decisions' cause. When the decisions
    caused by an event outnumber those the event itself calls for, the coordinator ticked after
    it: the replay ticks there too, deadline by deadline (as the coordinator does), up to the
    latest of those decisions' timestamps. An event whose id recurs (a duplicate) is taken to be
    the last copy before the decisions naming it.

    Args:
        entries: The workflow's events, in log order (the position of each is its index).
    """

    def __init__(self, entries: Sequence[HistoryEntry]) -> None:
        self._caused: Counter[int] = Counter()  # position -> recorded decisions attributed to it
        self._until: dict[int, int] = {}
        self._expected: Counter[str] = Counter()  # cause id -> recorded decisions up to the position reached
        self._emitted: Counter[str] = Counter()  # cause id -> decisions the replay took
        last: dict[str, int] = {}
        for index, e in enumerate(entries):
            if e.source == COORDINATOR_SOURCE and e.causation_id is not None:
                at = last.get(e.causation_id)
                if at is not None:
                    self._caused[at] += 1
                    self._until[at] = max(self._until.get(at, 0), e.timestamp)
            last[e.event_id] = index

    def after(self, index: int, entry: HistoryEntry, state: SagaState, taken: int,
              catalog: Mapping[str, Graph]) -> tuple[SagaState, list[Decision]]:
        """Tick after the entry at `index` (whose handling took `taken` decisions) as the coordinator did."""
        cause = entry.event_id
        self._emitted[cause] += taken
        self._expected[cause] += self._caused[index]
        decided: list[Decision] = []
        while self._emitted[cause] < self._expected[cause]:
            when = next_due(state)
            if when is None or when > self._until[index]:
                break
            state, decisions = handle(state, clock(when), catalog)
            if not decisions:
                break
            decided.extend(decisions)
            self._emitted[cause] += len(decisions)
        return state, decided
