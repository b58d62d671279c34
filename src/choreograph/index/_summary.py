"""One workflow's summary row, folded from its believed events: what `choreo ls` prints.

Pure: no broker, no store. The fold follows the coordinator's reading of the log closely enough for
a listing (status, current or failed step, times), not for decisions: it keeps the step graph a
WorkflowStarted fixed, the completed steps and the compensations, and derives from them the steps a
running workflow waits for. The status is `running` until a step fails (`compensating`), and the
outcome's own status string once an outcome is folded, whatever that string is (a status added to
WorkflowOutcome later needs no change here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

RUNNING = "running"
COMPENSATING = "compensating"

WORKFLOW_STARTED = "choreograph.WorkflowStarted"


@dataclass(frozen=True)
class IndexedEvent:
    """What the index needs of one believed event.

    Attributes:
        workflow_id: The workflow instance's id (the record key).
        workflow: The workflow's name.
        kind: Its kind (an events.Kind value).
        type: Its CloudEvents type (the Avro full name of its payload's schema).
        step: The step it is about, if any.
        timestamp: Its log timestamp, Unix ms.
        data: Its decoded payload where the index reads it (framework events), else None.
    """

    workflow_id: str
    workflow: str
    kind: str
    type: str
    step: str | None
    timestamp: int
    data: dict[str, Any] | None = None


@dataclass
class StepRun:
    """One step's run (or its compensation's) within a workflow: when it could start, when it ended.

    Attributes:
        step: The step's name.
        compensation: Whether this is the step's compensation.
        status: `pending`, `completed`, `failed`, `compensated` or `compensation_failed`.
        started_ms: When its inputs were all in the log (its goal for a first step), or its
            compensation was requested; None if not known.
        finished_ms: When it ended, if it did.
    """

    step: str
    compensation: bool
    status: str
    started_ms: int | None
    finished_ms: int | None = None

    @property
    def duration_ms(self) -> int | None:
        """From start to end (waiting for an agent included), once both are known; else None."""
        if self.started_ms is None or self.finished_ms is None:
            return None
        return max(0, self.finished_ms - self.started_ms)


@dataclass
class Summary:
    """One workflow's row of the index.

    Attributes:
        workflow_id: The workflow instance's id.
        workflow: The workflow's name.
        status: `running`, `compensating`, or the outcome's status (`completed`, `compensated`, ...).
        started_ms: The goal's log time (or the first event's, if the goal was not seen).
        last_event_ms: The latest event's log time.
        last_kind: The latest event's kind.
        failed_step: The step whose failure made it compensate or fail, if one did.
        reason: Why it failed or was compensated (the failure's, or the outcome's reason).
        events: How many believed events were folded.
        graph: Step -> the steps it depends on, in graph order, once WorkflowStarted fixed them.
        completed: Steps completed.
        compensations: Steps asked to undo themselves, not yet done or failed.
        runs: Each step's run and compensation, by (step, compensation).
    """

    workflow_id: str
    workflow: str = ""
    status: str = RUNNING
    started_ms: int = 0
    last_event_ms: int = 0
    last_kind: str = ""
    failed_step: str | None = None
    reason: str | None = None
    events: int = 0
    graph: dict[str, list[str]] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)
    compensations: list[str] = field(default_factory=list)
    runs: dict[tuple[str, bool], StepRun] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether an outcome was folded."""
        return self.status not in (RUNNING, COMPENSATING)

    def current_steps(self) -> list[str]:
        """What a running workflow waits for: steps whose inputs are all in, and requested compensations.

        Compensations are written `↺step`. Empty once finished, or while the graph is not known.
        """
        if self.finished:
            return []
        return [run.step if not run.compensation else f"↺{run.step}"
                for run in self.runs.values() if run.status == "pending"]

    def row(self, now_ms: int) -> dict[str, Any]:
        """The row as `choreo ls --json` prints it: ISO times and Unix ms; durations to now if running."""
        end = self.last_event_ms if self.finished else max(now_ms, self.last_event_ms)
        return {
            "workflow_id": self.workflow_id, "workflow": self.workflow, "status": self.status,
            "started": iso(self.started_ms), "started_ms": self.started_ms,
            "last_event": iso(self.last_event_ms), "last_event_ms": self.last_event_ms,
            "last_kind": self.last_kind, "duration_ms": max(0, end - self.started_ms),
            "current_steps": self.current_steps(), "failed_step": self.failed_step, "reason": self.reason,
            "events": self.events,
        }


def iso(ms: int) -> str:
    """Unix ms as ISO 8601 UTC, in milliseconds (`2026-11-22T11:22:36.123Z`)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fold(summary: Summary | None, event: IndexedEvent) -> Summary:
    """The summary after one more believed event of its workflow (a new one for its first).

    Args:
        summary: The workflow's summary so far, or None.
        event: The event, in log order.

    Returns:
        The summary, updated in place (or new).
    """
    if summary is None:
        summary = Summary(event.workflow_id, started_ms=event.timestamp)
    if event.kind == "goal" and summary.events:
        summary.started_ms = min(summary.started_ms, event.timestamp)
    summary.workflow = summary.workflow or event.workflow
    summary.events += 1
    summary.last_event_ms = max(summary.last_event_ms, event.timestamp)
    summary.last_kind = event.kind
    _apply(summary, event)
    return summary


def _apply(s: Summary, e: IndexedEvent) -> None:  # noqa: C901  # one case per kind, flat on purpose
    data = e.data or {}
    step = e.step or data.get("step")
    match e.kind:
        case "goal":
            s.started_ms = min(s.started_ms, e.timestamp)
        case "other" if e.type == WORKFLOW_STARTED and not s.graph:
            s.graph = {node["name"]: list(node.get("depends_on") or ()) for node in data.get("steps") or ()}
            for run in s.runs.values():  # results that reached the log before the coordinator's start
                if run.started_ms is None and not run.compensation:
                    run.started_ms = _inputs_in(s, run.step)
            _open_ready(s, e.timestamp)
        case "step_completed" if step and step not in s.completed:
            s.completed.append(step)
            _finish(s, step, False, "completed", e.timestamp)
            _open_ready(s, e.timestamp)
        case "step_failed" if step:
            _fail(s, step, data.get("reason"), e.timestamp)
        case "step_timed_out" if step and not data.get("compensation") and data.get("next_attempt_at") is None:
            _fail(s, step, data.get("reason") or "timed out", e.timestamp)
        case "compensation_requested" if step and step not in s.compensations:
            s.compensations.append(step)
            s.runs.setdefault((step, True), StepRun(step, True, "pending", e.timestamp))
            if s.status == RUNNING:
                s.status = COMPENSATING
            if s.failed_step is None and data.get("failed_step"):
                s.failed_step, s.reason = data["failed_step"], s.reason or data.get("reason")
        case "compensation_completed" if step:
            _finish(s, step, True, "compensated", e.timestamp)
        case "compensation_failed" if step:
            _finish(s, step, True, "compensation_failed", e.timestamp)
        case "outcome":
            status = data.get("status")
            s.status = str(status) if status else "unknown"
            s.failed_step = data.get("failed_step") or s.failed_step
            s.reason = data.get("reason") or s.reason
            for run in s.runs.values():
                if run.status == "pending":
                    run.status = "abandoned"  # never ran to an end: the workflow ended first
        case _:
            pass


def _fail(s: Summary, step: str, reason: Any, at: int) -> None:
    """A step failed for good: the workflow compensates (unless an outcome is in already)."""
    _finish(s, step, False, "failed", at)
    if s.failed_step is None:
        s.failed_step, s.reason = step, None if reason is None else str(reason)
    if s.status == RUNNING:
        s.status = COMPENSATING


def _finish(s: Summary, step: str, compensation: bool, status: str, at: int) -> None:
    run = s.runs.get((step, compensation))
    if run is None:
        # No run was opened: the graph is not known yet (an agent reacting to the goal can publish
        # before the coordinator's WorkflowStarted), or its inputs came before this indexer's time.
        started = None if compensation or not s.graph else _inputs_in(s, step)
        s.runs[(step, compensation)] = StepRun(step, compensation, status, started, at)
    elif run.finished_ms is None:
        run.status, run.finished_ms = status, at


def _inputs_in(s: Summary, step: str) -> int | None:
    """When `step`'s inputs were all in the log: its goal, and its dependencies' results (None: unknown)."""
    times = [s.started_ms]
    for dep in s.graph.get(step, ()):
        run = s.runs.get((dep, False))
        if run is None or run.finished_ms is None:
            return None
        times.append(run.finished_ms)
    return max(times)


def _open_ready(s: Summary, at: int) -> None:
    """Open a run for each step whose inputs are now all in the log (only while running)."""
    if s.status != RUNNING:
        return
    done = set(s.completed)
    for step, deps in s.graph.items():
        if (step, False) not in s.runs and step not in done and all(d in done for d in deps):
            started = _inputs_in(s, step)
            s.runs[(step, False)] = StepRun(step, False, "pending", at if started is None else started)
