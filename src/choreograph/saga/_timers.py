"""Deadlines as a function of the state: each running step's attempt, and the workflow's own.

An attempt's deadline is counted from the moment all its inputs are in the log (the latest result
of the steps it depends on, or the goal for a first step), or, for a retry, from the time the
failed attempt before it said the retry is due. A heartbeat timeout counts from the attempt's last
heartbeat (or its start); the earlier deadline counts. A workflow deadline (given with the goal)
times out every step still running then, for good.

The state only holds log facts and the time they carry, so the same log gives the same timers: the
coordinator keeps them in a heap and feeds clock facts; `choreo state` and the golden replayer
rebuild them from the recorded events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from ..events._envelope import Kind
from ..events._faults import StepTimedOut
from ..events._models import StepNode
from ._facts import Decision, Fact, SagaState, evolve
from ._graph import Graph


class Timer(NamedTuple):
    """The deadline of a running step's current attempt.

    A NamedTuple built without its reason: the coordinator computes every open saga's timers
    after each event it folds (about three times per event), and formatting the reasons there
    cost it a third of its CPU per saga (cProfile, 1,000 report sagas, 64 in flight). The reason
    is written only when the timer fires.

    Attributes:
        due_ms: When it passes, Unix ms.
        step: The step.
        attempt: Its current attempt, from 1.
        cause: TIMEOUT, HEARTBEAT or DEADLINE: which limit passes first.
        limit_ms: The step's timeout or heartbeat timeout (its workflow's deadline for DEADLINE).
    """

    due_ms: int
    step: str
    attempt: int
    cause: str
    limit_ms: int

    @property
    def final(self) -> bool:
        """It is the workflow's deadline: the step fails, whatever attempts are left."""
        return self.cause == DEADLINE

    @property
    def reason(self) -> str:
        """What a StepTimedOut will say."""
        step, attempt = self.step, self.attempt
        if self.cause == TIMEOUT:
            return f"step {step!r} attempt {attempt} timed out after {seconds(self.limit_ms)} s"
        if self.cause == HEARTBEAT:
            return f"step {step!r} attempt {attempt}: no heartbeat for {seconds(self.limit_ms)} s"
        return f"workflow deadline {iso(self.limit_ms)} passed before step {step!r} attempt {attempt} finished"


TIMEOUT, HEARTBEAT, DEADLINE = "timeout", "heartbeat", "deadline"


def timed(state: SagaState) -> bool:
    """Whether the workflow may have a timer: open, not cancelled, with a graph, and a step timeout or a deadline.

    A cancelled workflow awaits no step (what completes later is compensated), so none is timed out.
    """
    graph = state.graph
    return (state.outcome is None and graph is not None and (graph.timed or state.deadline_ms is not None)
            and state.cancelled is None)


def seconds(ms: int) -> str:
    """Milliseconds as seconds for a reason: 10000 -> "10.0", 1500 -> "1.5", 250 -> "0.25"."""
    text = f"{ms / 1000:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def iso(ms: int) -> str:
    """Unix milliseconds as ISO 8601 UTC, e.g. 2026-11-21T09:30:00.000Z."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def current_attempt(state: SagaState, node: StepNode) -> tuple[int, int | None]:
    """The step's current attempt and when it started (None: its inputs are not all in the log)."""
    last, start = 0, None
    for (name, attempt), due in state.retries.items() if state.retries else ():
        if name == node.name and attempt > last:
            last, start = attempt, due
    if last:
        return last + 1, start
    if not node.depends_on:
        return 1, state.goal_at
    times = [state.completed_at.get(d) for d in node.depends_on]
    return 1, None if None in times else max(t for t in times if t is not None)


def timers(state: SagaState) -> tuple[Timer, ...]:
    """The deadline of each running step's current attempt, in the graph's order (none if not `timed`)."""
    graph = state.graph
    if graph is None or not timed(state):
        return ()
    if _Last.state is state:
        return _Last.found
    found = _scan(state, graph)
    _Last.state, _Last.found = state, found
    return found


# The last state's timers. A state is immutable, and one is asked for its timers twice in a row:
# the last settle step of handle() finds none due, and the coordinator then schedules its next
# deadline from the same state. Holding the state keeps its identity from being reused.
class _Last:
    state: SagaState | None = None
    found: tuple[Timer, ...] = ()


def _scan(state: SagaState, graph: Graph) -> tuple[Timer, ...]:
    found: list[Timer] = []
    deadline, completed = state.deadline_ms, state.completed
    for name in graph.order:
        node = graph.nodes[name]
        if name in completed or name in state.failed or not completed.issuperset(node.depends_on):
            continue
        attempt, start = current_attempt(state, node)
        if start is None:
            continue
        timer = None
        if (limit := node.timeout_ms) is not None:
            timer = Timer(start + limit, name, attempt, TIMEOUT, limit)
        if (limit := node.heartbeat_timeout_ms) is not None:
            beat_due = max(start, state.heartbeats.get((name, attempt), start)) + limit
            if timer is None or beat_due < timer.due_ms:
                timer = Timer(beat_due, name, attempt, HEARTBEAT, limit)
        if deadline is not None and (timer is None or deadline <= timer.due_ms):
            timer = Timer(deadline, name, attempt, DEADLINE, deadline)
        if timer is not None:
            found.append(timer)
    return tuple(found)


def next_due(state: SagaState) -> int | None:
    """When the earliest timer passes; None without one."""
    return min((t.due_ms for t in timers(state)), default=None)


def due(state: SagaState) -> list[Decision]:
    """The StepTimedOut decisions of the timers passed by `state.now_ms`."""
    if not timed(state):
        return []
    return [_timed_out(state, t) for t in timers(state) if t.due_ms <= state.now_ms]


def expire(state: SagaState, now_ms: int) -> tuple[SagaState, list[Decision]]:
    """Move the state's time to `now_ms` and time out what has passed by then (StepTimedOut only).

    Returns:
        The new state, each decision applied, and the decisions in the order taken.
    """
    if now_ms > state.now_ms:
        state = state._replace(now_ms=now_ms)
    taken: list[Decision] = []
    while decisions := due(state):
        for decision in decisions:
            state = evolve(state, decision.fact)
            taken.append(decision)
    return state, taken


def _timed_out(state: SagaState, timer: Timer) -> Decision:
    """The decision to time out `timer`'s attempt: a failed attempt, retried per the step's policy or final."""
    retry = state.graph.nodes[timer.step].retry if state.graph is not None else None
    next_at = None if timer.final or retry is None else retry.next_attempt_at(
        state.workflow_id, timer.step, timer.attempt, timer.due_ms)
    event = StepTimedOut(step=timer.step, attempt=timer.attempt, reason=timer.reason, deadline=timer.due_ms,
                         next_attempt_at=next_at)
    fact = Fact(Kind.STEP_TIMED_OUT, state.workflow, step=timer.step, reason=timer.reason, attempt=timer.attempt,
                next_attempt_at=next_at, deadline_ms=timer.due_ms)
    return Decision(Kind.STEP_TIMED_OUT, timer.step, event, fact, attempt=timer.attempt)


def attempts_json(state: SagaState) -> dict[str, dict[str, Any]]:
    """Per step with a failed attempt, a timeout or a heartbeat: where its attempts stand.

    `attempt` is the latest one (running, due, done, or the last one made), `failed` the attempts
    that failed (`timed_out` those the coordinator timed out), `next_attempt_at` when the one after
    the last failed attempt was due (None: none was, the step failed), `heartbeat_at` the latest
    attempt's last heartbeat, `compensation_failed` the failed attempts of its compensation.
    """
    steps = {s for s, _ in state.retries} | {s for s, _ in state.heartbeats} | state.compensation_retries.keys()
    found: dict[str, dict[str, Any]] = {}
    for step in sorted(steps):
        failed = sorted(a for s, a in state.retries if s == step)
        attempt = 1 if not failed else failed[-1] + (state.retries[(step, failed[-1])] is not None)
        found[step] = {"attempt": attempt, "failed": failed,
                       "timed_out": sorted(a for s, a in state.timed_out if s == step),
                       "next_attempt_at": state.retries[(step, failed[-1])] if failed else None,
                       "heartbeat_at": state.heartbeats.get((step, attempt)),
                       "compensation_failed": state.compensation_retries.get(step, 0)}
    return found
