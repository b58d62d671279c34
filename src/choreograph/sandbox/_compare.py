"""A sandbox re-run compared with its recording, event by event, and the report `choreo replay` prints.

Results and decisions have deterministic ids, so a re-run that behaves as recorded reproduces the
recorded events id for id; `compare` lists every event whose type, step, source, cause or payload
differs, or that is missing or new. Pure: no broker.

One difference is arrival order, not behaviour, and is not listed: which of concurrent events caused
an event. A join's result is caused by whichever of its inputs came last (review by chart's or by
draft's completion), and a coordinator's decision by whichever event it read first (a compensation
request by a failure, or by a running step's late result). When only the cause differs and both
causes are events of both runs that could have caused it, the event counts as reproduced (measured:
`choreo replay` of a demo saga reported such a difference in 2 of 3 loaded test runs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..events._envelope import COORDINATOR_SOURCE
from ..saga._entries import HistoryEntry
from ..saga._graph import Graph

# The HistoryEntry fields compared. Where and when an event was logged (topic, offset, times, trace) may differ.
_COMPARED = ("type", "kind", "step", "source", "causation_id", "data", "error")


@dataclass(frozen=True)
class Difference:
    """One event that the re-run did not reproduce as recorded.

    Attributes:
        what: "differs" (both have it), "missing" (recorded, not re-produced) or "new" (re-produced,
            not recorded).
        kind: The event's kind (`Kind` value), from the recording unless the event is new.
        step: The event's step, if it has one.
        event_id: The id the recorded and the re-run event share.
        fields: For "differs", each differing field's name -> {"recorded": ..., "rerun": ...}.
    """

    what: str
    kind: str
    step: str | None
    event_id: str
    fields: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        """This difference as a JSON-ready dict (`choreo replay --json`)."""
        return {"what": self.what, "kind": self.kind, "step": self.step, "event_id": self.event_id,
                "fields": self.fields}


@dataclass
class ReplayReport:
    """The outcome of a sandbox re-run (`choreo replay`): what ran, and where it departed from the recording.

    Attributes:
        workflow_id: The recorded workflow that was re-run.
        sandbox: The sandbox namespace (`<namespace>.sandbox.<NAME>`) it ran in.
        agents: The re-run steps, each as `STEP=MODULE:ATTR`.
        fed: How many recorded events of the other agents were published into the sandbox.
        recorded: The recorded events.
        rerun: The events of the sandbox workflow after the re-run.
        differences: Every recorded event not reproduced as recorded, and every new one.
    """

    workflow_id: str
    sandbox: str
    agents: list[str]
    fed: int
    recorded: list[HistoryEntry]
    rerun: list[HistoryEntry]
    differences: list[Difference]

    @property
    def identical(self) -> bool:
        """Whether the re-run reproduced every recorded event, id for id, and nothing else."""
        return not self.differences

    def json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict: counts of events rather than the events themselves."""
        return {"workflow_id": self.workflow_id, "sandbox": self.sandbox, "agents": self.agents, "fed": self.fed,
                "recorded_events": len(self.recorded), "rerun_events": len(self.rerun),
                "identical": self.identical, "differences": [d.json() for d in self.differences]}


def _reordered(want: HistoryEntry, got: HistoryEntry, recorded: dict[str, HistoryEntry],
               rerun: dict[str, HistoryEntry], graph: Graph | None) -> bool:
    """Whether `want` and `got` differ only by which of concurrent events caused them (see the module)."""
    if any(getattr(want, name) != getattr(got, name) for name in _COMPARED if name != "causation_id"):
        return False
    causes = (want.causation_id, got.causation_id)
    if not all(cause is not None and cause in recorded and cause in rerun for cause in causes):
        return False
    if want.source == COORDINATOR_SOURCE:
        return True
    if graph is None or want.step is None:
        return False
    inputs = {step for step, dependents in graph.dependents.items() if want.step in dependents}
    return len(inputs) > 1 and all(recorded[c].kind == "step_completed" and recorded[c].step in inputs
                                   for c in causes if c is not None)


def compare(recorded: Iterable[HistoryEntry], rerun: Iterable[HistoryEntry], graph: Graph | None = None
            ) -> list[Difference]:
    """Compare recorded with re-run events, matched by event id.

    Times, offsets and trace ids are expected to differ and are not compared; everything else is,
    but a cause that differs by arrival order only is not a difference (see the module).
    An id seen twice on either side counts once (its first occurrence).

    Args:
        recorded: The recorded workflow's events.
        rerun: The re-run's events.
        graph: The workflow's step graph, for which steps join several inputs (None: no join is known).

    Returns:
        The recorded events that differ or are missing, in recorded order, then the new ones.
    """
    recorded = list(recorded)
    recorded_by_id: dict[str, HistoryEntry] = {}
    for entry in recorded:
        recorded_by_id.setdefault(entry.event_id, entry)
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
                  for name in _COMPARED if getattr(want, name) != getattr(got, name)}
        if fields and not _reordered(want, got, recorded_by_id, rerun_by_id, graph):
            differences.append(Difference("differs", want.kind, want.step, want.event_id, fields))
    for event_id, got in rerun_by_id.items():
        if event_id not in seen:
            differences.append(Difference("new", got.kind, got.step, event_id))
    return differences
