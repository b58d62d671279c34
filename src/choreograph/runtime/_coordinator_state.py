"""What the coordinator keeps of each partition: open sagas, their timers, and ended sagas.

Timers: the next deadline of each open saga that has one (saga._timers), in a heap, so the service
loop checks one number per partition to know whether a deadline has passed. Deadlines are a
function of the log (record timestamps), so after kill -9 the silent replay rebuilds them.

Ended sagas: a workflow that ended other than completed still compensates a late result (a step
that timed out and answered after all). They are kept in a bounded map; after a restart the
look-back before the partition's position rebuilds them from the outcomes it reads (an outcome
lists the completed and compensated steps) and the late results and requests after those.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

from ..errors import DecodeError
from ..events._avro import SchemaStore
from ..events._envelope import GOAL_ID_HEADER, Envelope, Kind, text_of
from ..events._models import OutcomeStatus, WorkflowOutcome
from ..saga._decide import Decision
from ..saga._facts import Fact, SagaState, evolve
from ..saga._timers import next_due, timed
from ..transport._offsets import PartitionProgress
from ..transport._port import Record, TopicPartition
from ._tracking import Done

_GOAL, _OUTCOME = Kind.GOAL.value.encode(), Kind.OUTCOME.value.encode()

# The kinds an ended saga folds in the look-back, as their ce_kind header spells them.
LATE_HEADER_KINDS = {k.value.encode(): k for k in (Kind.STEP_COMPLETED, Kind.COMPENSATION_REQUESTED,
                                                   Kind.COMPENSATION_COMPLETED, Kind.COMPENSATION_FAILED)}


class Partition:
    """Open sagas of one partition, their timers, its ended sagas, and where the silent replay ends."""

    def __init__(self, position: int, replay_end: int, partition: int = -1, ended_capacity: int = 10_000) -> None:
        self.progress = PartitionProgress(position, partition)
        self.replay_end = replay_end
        self.sagas: dict[str, SagaState] = {}
        self.goal_offsets: dict[str, int] = {}
        self.goal_ids: dict[str, str] = {}  # of open sagas: a second goal with another id is a duplicate
        self.dormant: set[str] = set()  # open sagas restored from an archive: never settled
        self.timers = Timers()
        self.ended = Ended(ended_capacity)  # ended other than completed: a late result is compensated
        # Timeouts the silent replay found due before a record, not (yet) seen in the log: published
        # after it, as the rest of what a saga is owed.
        self.owed: dict[str, tuple[str, Decision]] = {}
        self.touched: set[str] = set()  # ended sagas folded during the silent replay: settled after it

    @property
    def replaying(self) -> bool:
        return self.progress.next < self.replay_end



def note_goal(part: Partition, envelope: Envelope, kind: Kind, offset: int, history: bool) -> None:
    """A goal pins its offset until its saga ends (a restart re-reads every open saga from its goal)."""
    workflow_id, progress = envelope.workflow_id, part.progress
    if kind is Kind.GOAL and workflow_id not in part.goal_offsets:
        # A restored saga is pinned at its bracket's start, so a restart re-reads the marker
        # and keeps it dormant instead of settling it.
        at = progress.bracket_at if history and progress.bracket_at is not None else offset
        part.goal_offsets[workflow_id] = at
        part.goal_ids[workflow_id] = envelope.id
        progress.pin(at)


class Timers:
    """The next deadline of each open saga of one partition, and the event each last folded.

    Attributes:
        last: Workflow id -> the last event folded of that saga (a saga with timers only): the cause
            named by the decisions a deadline passing calls for, so a replay takes them at the same
            point of the history (see saga._ticks.Ticks).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._due: dict[str, int] = {}
        self.last: dict[str, Envelope] = {}

    def note(self, state: SagaState, envelope: Envelope) -> None:
        """Remember the event just folded into `state`, if the saga has timers."""
        if timed(state):
            self.last[state.workflow_id] = envelope

    def schedule(self, state: SagaState) -> None:
        """Set the saga's next deadline from its state (none: forget it)."""
        workflow_id = state.workflow_id
        when = next_due(state) if timed(state) else None
        if when is None:
            self._due.pop(workflow_id, None)
            return
        if self._due.get(workflow_id) == when:
            return
        self._due[workflow_id] = when
        heapq.heappush(self._heap, (when, workflow_id))
        if len(self._heap) > 2 * len(self._due) + 64:  # superseded entries (heartbeats move deadlines)
            self._heap = [(d, w) for w, d in self._due.items()]
            heapq.heapify(self._heap)

    def drop(self, workflow_id: str) -> None:
        """Forget a saga (it ended)."""
        self._due.pop(workflow_id, None)
        self.last.pop(workflow_id, None)

    def ready(self, now_ms: int) -> bool:
        """Whether a deadline may have passed by `now_ms` (one comparison: checked every batch)."""
        return bool(self._heap) and self._heap[0][0] <= now_ms

    def passed(self, now_ms: int) -> Iterator[tuple[int, str]]:
        """(deadline, workflow id) of each saga whose next deadline has passed, earliest first.

        Deadlines scheduled while iterating (the next one of a saga just handled) are seen too.
        """
        while self._heap and self._heap[0][0] <= now_ms:
            when, workflow_id = heapq.heappop(self._heap)
            if self._due.get(workflow_id) == when:
                del self._due[workflow_id]
                yield when, workflow_id

    def __len__(self) -> int:
        return len(self._due)


class Ended(OrderedDict[str, SagaState]):
    """Sagas of one partition that ended other than completed, newest last, at most `capacity`.

    Args:
        capacity: How many to keep; a late result of an older one is ignored like any event of a
            finished workflow.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self._capacity = capacity

    def keep(self, state: SagaState) -> None:
        """Keep (or update) an ended saga's state, as the newest."""
        self[state.workflow_id] = state
        self.move_to_end(state.workflow_id)
        if len(self) > self._capacity:
            self.popitem(last=False)

    def fold(self, workflow_id: str, kind: Kind, step: str | None) -> None:
        """Fold a late result or compensation read in the look-back (headers only)."""
        if (state := self.get(workflow_id)) is not None:
            self[workflow_id] = evolve(state, Fact(kind, state.workflow, step=step))


def ended_of(workflow_id: str, value: bytes | None, store: SchemaStore) -> SagaState | None:
    """An ended saga's state rebuilt from its outcome record; None if it completed or cannot be read.

    Its graph is not known (the WorkflowStarted may be before the look-back): a late result is
    compensated if the catalog's graph says the step can be undone.
    """
    try:
        outcome = WorkflowOutcome.decode(value or b"", store)
    except DecodeError:
        return None
    if outcome.status is OutcomeStatus.COMPLETED:
        return None
    done, undone = frozenset(outcome.completed_steps), frozenset(outcome.compensated_steps)
    failed = MappingProxyType({outcome.failed_step: outcome.reason or ""} if outcome.failed_step else {})
    return SagaState(workflow_id, outcome.workflow, goal_seen=True, completed=done, failed=failed,
                     compensation_requested=undone, compensated=undone, outcome=outcome.status,
                     outcome_completed=done)


def look_back(record: Record, states: Mapping[TopicPartition, tuple[int, Partition]],
              goals: dict[bytes, bytes | None], finished: Done, store: SchemaStore,
              believed: Callable[[Record], bool] = lambda record: True) -> None:
    """Learn from one record before a partition's position which workflows finished there.

    A goal reusing one of their ids is a duplicate (`finished` maps each to its goal's id). One that
    ended other than completed is kept, with the late results and requests after its outcome, to
    compensate a late result. Headers only, but for those outcomes.

    Only outcomes, late results and requests the coordinator believes count (it dead-letters the
    others when it first reads them): a forged outcome ahead of a goal would make the goal a
    duplicate. A believed outcome names its goal (ce_goalid); a goal record is not checked.

    Args:
        record: A record of the look-back, in log order.
        states: The partitions being set up.
        goals: Workflow id (key) -> goal event id, of the goals seen so far in the look-back.
        finished: The coordinator's finished workflow ids.
        store: The writer schemas to decode an outcome with.
        believed: Whether a record is signed by a party that may say what it says (the coordinator's gate).
    """
    headers = dict(record.headers)
    if (kind := headers.get("ce_kind")) == _GOAL and record.key:
        goals.setdefault(record.key, headers.get("ce_id"))
    elif kind == _OUTCOME and record.key and (workflow_id := text_of(record.key)) is not None:
        if not believed(record):
            return
        finished.add(workflow_id, text_of(headers.get(GOAL_ID_HEADER) or goals.get(record.key)))
        if (ended := ended_of(workflow_id, record.value, store)) is not None:
            states[TopicPartition(record.topic, record.partition)][1].ended.keep(ended)
    elif (late := LATE_HEADER_KINDS.get(kind or b"")) is not None and (workflow_id := text_of(record.key)):
        kept = states[TopicPartition(record.topic, record.partition)][1].ended
        if workflow_id in kept and believed(record):
            step = headers.get("ce_step")
            kept.fold(workflow_id, late, None if step is None else step.decode(errors="replace"))
