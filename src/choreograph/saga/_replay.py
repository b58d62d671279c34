"""Time travel over a workflow's recorded events, with the coordinator's own decision code.

`fold` rebuilds the state the coordinator held after each event (what `choreo state --at` shows);
`check` replays a recording through the current code and lists every decision or final state that
differs from what was recorded (what the golden tests run, like Temporal's replayer).

Both skip what the coordinator dead-letters and never folds: an event whose payload cannot be
decoded or fails its model, a WorkflowStarted whose steps make no graph (a dependency cycle or
an unknown dependency: saga.fact_of raises WorkflowError), and an attempt, timeout or heartbeat
from a party that cannot know it (saga._check.impostor). Such a record still counts as an event
read, so `--at` offsets stay those of the log.

Both also take the coordinator's timer decisions where it took them: each fact carries its
record's timestamp (deadlines passed by then are decided before it is folded), and a deadline
the coordinator's own clock saw pass while the log was silent is re-decided right after the
event it names as the decision's cause (see saga._ticks.Ticks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import ConfigurationError
from ..events._envelope import COORDINATOR_SOURCE
from ..events._models import Event
from ._decide import Decision, Fact, SagaState, clock, decision_id, handle
from ._entries import HistoryEntry
from ._graph import Graph
from ._ticks import Ticks, fact_of_entry
from ._timers import attempts_json


@dataclass(frozen=True)
class Point:
    """A point in a workflow's history: an offset of its partition, or a log timestamp (ms).

    With neither set, the point is the end of the history.

    Attributes:
        offset: The last offset included.
        timestamp_ms: The last log timestamp included, in Unix milliseconds.
    """

    offset: int | None = None
    timestamp_ms: int | None = None

    @classmethod
    def parse(cls, text: str) -> Point:
        """Read a point as `choreo state --at` takes it.

        `1234` is an offset; an ISO 8601 time with a time zone (`2026-11-21T09:30:00Z`) is a log
        timestamp, rounded to the millisecond.

        Args:
            text: The offset or the time.

        Returns:
            The point.

        Raises:
            ConfigurationError: The text is neither, or a time without a time zone.
        """
        if text.isdigit():
            return cls(offset=int(text))
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigurationError(f"{text!r} is neither an offset nor an ISO 8601 time") from exc
        if moment.tzinfo is None:
            raise ConfigurationError(f"{text!r}: give a time zone (e.g. a trailing Z for UTC)")
        return cls(timestamp_ms=round(moment.timestamp() * 1000))  # int() could land a millisecond early

    def includes(self, entry: HistoryEntry) -> bool:
        """Whether `entry` is at or before this point."""
        if self.offset is not None:
            return entry.offset <= self.offset
        if self.timestamp_ms is not None:
            return entry.timestamp <= self.timestamp_ms
        return True


@dataclass
class Snapshot:
    """The coordinator's view of one workflow after the events up to a point.

    Attributes:
        state: The workflow's state.
        last: The last event folded, if any.
        events: How many events were folded.
        decided: The decisions taken at `last`, which the coordinator published right after it.
    """

    state: SagaState
    last: HistoryEntry | None = None
    events: int = 0
    decided: list[Decision] = field(default_factory=list)  # taken at `last`, published right after

    def json(self) -> dict[str, Any]:
        """The snapshot as `choreo state --json` prints it (status "running" or "unknown" before an outcome).

        `deadline` (the workflow's, Unix ms), `attempts` (per step: its latest attempt, the
        failed and timed-out ones, see saga._timers.attempts_json) and `cancelled` (the reason of
        its cancellation) are there only when the workflow has them, so the state of a workflow
        without any reads as it always did.
        """
        s = self.state
        status = s.outcome.value if s.outcome is not None else "running" if s.goal_seen else "unknown"
        graph = None if s.graph is None else [
            {"step": n, "depends_on": list(s.graph.nodes[n].depends_on), "compensable": s.graph.nodes[n].compensable}
            for n in s.graph.order]
        at = None if self.last is None else {"partition": self.last.partition, "offset": self.last.offset,
                                             "timestamp": self.last.timestamp, "time": self.last.time}
        found: dict[str, Any] = {
            "workflow_id": s.workflow_id, "workflow": s.workflow, "status": status, "at": at,
            "events_folded": self.events, "goal_seen": s.goal_seen, "graph": graph,
            "completed": sorted(s.completed), "failed": dict(sorted(s.failed.items())),
            "compensation_requested": sorted(s.compensation_requested), "compensated": sorted(s.compensated),
            "compensation_failed": dict(sorted(s.compensation_failed.items())),
            "outcome": None if s.outcome is None else s.outcome.value,
            "decided": [_decision_json(d) for d in self.decided]}
        if s.deadline_ms is not None:
            found["deadline"] = s.deadline_ms
        if attempts := attempts_json(s):
            found["attempts"] = attempts
        if s.cancelled is not None:
            found["cancelled"] = s.cancelled
        return found


def _decision_json(decision: Decision) -> dict[str, Any]:
    """A decision as Snapshot.json lists it: kind, step and event type."""
    return {"kind": decision.kind.value, "step": decision.step, "type": decision.event.type_name()}


def catalog_for(entries: Iterable[HistoryEntry], fallback: Mapping[str, Graph] | None = None) -> Mapping[str, Graph]:
    """The catalog to replay a workflow with: the graph its recorded WorkflowStarted names.

    Args:
        entries: The workflow's events.
        fallback: What stands in before the coordinator recorded a WorkflowStarted (the registry's
            current catalog); None for an empty catalog.

    Returns:
        Workflow name -> graph: the recorded graph alone, or `fallback`.
    """
    for entry in entries:
        fact = fact_of_entry(entry)
        if fact is not None and fact.graph is not None:
            return {fact.workflow: fact.graph}
    return fallback or {}


def fold(entries: Iterable[HistoryEntry], catalog: Mapping[str, Graph], until: Point | None = None) -> Snapshot:
    """Rebuild the state a coordinator that handled these events live held after the last one within `until`.

    Each event goes through saga.handle, the coordinator's own code, decisions included. Like the
    coordinator, it ignores events it dead-letters (see saga._ticks.fact_of_entry), and after the outcome everything
    but late results and their compensations.

    Args:
        entries: The workflow's events, in log order.
        catalog: The step graphs to start the workflow with (see catalog_for).
        until: The last point to fold; None for every event.

    Returns:
        The snapshot after the last event folded; one of an unnamed workflow if none was.
    """
    entries = list(entries)
    ticks = Ticks(entries)
    snapshot: Snapshot | None = None
    for index, entry in enumerate(entries):
        if until is not None and not until.includes(entry):
            break
        if snapshot is None:
            snapshot = Snapshot(SagaState(entry.workflow_id))
        snapshot.last, snapshot.events = entry, snapshot.events + 1
        snapshot.decided = []
        if (fact := fact_of_entry(entry, snapshot.state)) is None:
            continue
        snapshot.state, snapshot.decided = handle(snapshot.state, fact, catalog)
        snapshot.state, later = ticks.after(index, entry, snapshot.state, len(snapshot.decided), catalog)
        snapshot.decided.extend(later)
    return snapshot or Snapshot(SagaState(""))


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What changed between two snapshots' JSON (Snapshot.json), field by field.

    Lists of strings and dicts change as {"added": ..., "removed": ...} (a dict also with
    "changed": {key: {"from": ..., "to": ...}} when a key's value changed, e.g. a step's attempts),
    anything else as {"from": ..., "to": ...}; where the snapshots are and the decisions taken there
    are left out.

    Args:
        before: The earlier snapshot's JSON.
        after: The later snapshot's JSON.

    Returns:
        Field name -> change, sorted by name; only fields that changed.
    """
    changes: dict[str, Any] = {}
    for name in before.keys() | after.keys():
        if name in ("at", "events_folded", "decided"):
            continue
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list) and all(isinstance(x, str) for x in [*a, *b]):
            changes[name] = {"added": sorted(set(b) - set(a)), "removed": sorted(set(a) - set(b))}
        elif isinstance(a, dict) and isinstance(b, dict):
            changes[name] = {"added": {k: v for k, v in b.items() if k not in a},
                             "removed": {k: v for k, v in a.items() if k not in b}}
            if changed := {k: {"from": a[k], "to": v} for k, v in b.items() if k in a and a[k] != v}:
                changes[name]["changed"] = changed
        else:
            changes[name] = {"from": a, "to": b}
    return dict(sorted(changes.items()))


@dataclass(frozen=True)
class Mismatch:
    """One way the current code departs from a recorded run.

    Attributes:
        index: The position of the decision concerned among the recorded coordinator events and the
            decisions taken now; -1 for the final state.
        what: What differs, in words.
    """

    index: int
    what: str

    def __str__(self) -> str:
        return f"decision {self.index}: {self.what}" if self.index >= 0 else self.what


# A decision taken on replay: the id of the event it was taken on, the decision, the state after it.
_Taken = tuple[str | None, Decision, SagaState]


def check(entries: list[HistoryEntry], values: Mapping[str, bytes], catalog: Mapping[str, Graph],
          final_state: Mapping[str, Any] | None) -> list[Mismatch]:
    """Replay a recorded workflow through the current coordinator code; list where it departs from the recording.

    Everything but the coordinator's own events goes through saga.handle; those only move the
    clock to their timestamps, as reading them back does for the coordinator. The decisions taken
    are compared with the coordinator events recorded (id, kind, step, type, cause, payload bytes
    and order), and the final state with `final_state` (the fields it has: a recording made before
    a field existed does not constrain it).

    Args:
        entries: The workflow's events, in log order.
        values: Event id -> recorded payload bytes.
        catalog: The step graphs to start the workflow with (see catalog_for).
        final_state: The recorded final state (Snapshot.json without "at", "events_folded" and
            "decided"), or None not to compare it.

    Returns:
        Every mismatch, in decision order, the final state's last; empty when the code reproduces
        the recording.
    """
    recorded = [e for e in entries if e.source == COORDINATOR_SOURCE]
    emitted, state = _decide(entries, catalog)
    problems = [mismatch for index, (want, got) in enumerate(zip(recorded, emitted, strict=False))
                if (mismatch := _compare(index, want, got, values)) is not None]
    for want in recorded[len(emitted):]:
        problems.append(Mismatch(len(emitted), f"recorded {want.kind} {want.step or ''} was not decided"))
    for _, decision, _ in emitted[len(recorded):]:
        problems.append(Mismatch(len(recorded), f"decided {decision.kind.value} {decision.step or ''}, "
                                                "which the recording does not have"))
    if final_state is not None and state is not None:
        now = {k: v for k, v in Snapshot(state).json().items() if k in final_state}
        changed = diff(dict(final_state), now)
        if changed:
            problems.append(Mismatch(-1, f"final state differs: {changed}"))
    return problems


def _decide(entries: Iterable[HistoryEntry], catalog: Mapping[str, Graph]) -> tuple[list[_Taken], SagaState | None]:
    """The decisions the current code takes on everything but the coordinator's own events, and the final state."""
    entries = list(entries)
    ticks = Ticks(entries)
    emitted: list[_Taken] = []
    state: SagaState | None = None
    for index, entry in enumerate(entries):
        state = state or SagaState(entry.workflow_id)
        if entry.source == COORDINATOR_SOURCE:
            fact: Fact | None = clock(entry.timestamp)  # its own decision: taken already, if the code agrees
        else:
            fact = fact_of_entry(entry, state)
        if fact is None:
            continue
        state, decisions = handle(state, fact, catalog)
        emitted.extend((entry.event_id, d, state) for d in decisions)
        state, later = ticks.after(index, entry, state, len(decisions), catalog)
        emitted.extend((entry.event_id, d, state) for d in later)
    return emitted, state


def _same_event(want: HistoryEntry, event: Event) -> bool:
    """Whether a payload recorded with an earlier version of its schema holds the same event.

    Bytes differ when the schema gained fields since the recording; read with the current model,
    the added fields take their defaults.
    """
    if want.data is None:
        return False
    try:
        return type(event).model_validate(want.data) == event
    except ValueError:
        return False


def _compare(index: int, want: HistoryEntry, got: _Taken, values: Mapping[str, bytes]) -> Mismatch | None:
    """The first way the decision `got` departs from the recorded coordinator event `want`, if any."""
    cause, decision, after = got
    event_id = decision_id(after.workflow_id, decision)
    checks = [("kind", want.kind, decision.kind.value), ("step", want.step, decision.step),
              ("type", want.type, decision.event.type_name()), ("event id", want.event_id, event_id)]
    if want.causation_id is not None:  # None: settled after a coordinator restart, cause unknown
        checks.append(("cause", want.causation_id, cause))
    for name, expected, actual in checks:
        if expected != actual:
            return Mismatch(index, f"recorded {want.kind} {want.step or ''}: "
                                   f"{name} {actual!r} now, {expected!r} recorded")
    if values.get(want.event_id) != decision.encoded() and not _same_event(want, decision.event):
        return Mismatch(index, f"{want.kind} {want.step or ''} payload differs: "
                               f"{decision.event.model_dump(mode='json')} != {want.data}")
    return None
