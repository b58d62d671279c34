"""The framework's fault events: failed attempts, timeouts, heartbeats, breakers and presence.

Attempts, timeouts and heartbeats travel on the events topic, keyed by workflow id like every
workflow event, so `choreo history` and `choreo state` show them and every party rebuilds retry
counts and deadlines from the log. Breaker transitions and presence travel on the status topic,
keyed by agent instance.
"""

from __future__ import annotations

import enum

from ._models import Event, _framework


class StepAttemptFailed(Event, schema=_framework("step_attempt_failed")):
    """One attempt of a step (or of its compensation) failed and another is due.

    Published by the step's agent; it is the agent's tracking record of the attempt, so a restarted
    agent neither repeats nor skips an attempt.

    Attributes:
        step: The step.
        attempt: The attempt that failed, from 1.
        compensation: Whether it was an attempt of the step's compensation.
        reason: The exception's message.
        error_type: The exception's class name.
        next_attempt_at: When the next attempt is due, Unix milliseconds.
        input_offsets: Offsets of the attempt's inputs on the workflow's partition (read back by a
            restarted agent to run the next attempt).
    """

    step: str
    attempt: int
    compensation: bool = False
    reason: str
    error_type: str
    next_attempt_at: int
    input_offsets: list[int] = []


class StepTimedOut(Event, schema=_framework("step_timed_out")):
    """The coordinator saw an attempt of a step pass its deadline: a failed attempt of the step.

    Attributes:
        step: The step.
        attempt: The attempt that timed out, from 1.
        reason: Which deadline passed (the step's timeout or its heartbeat timeout).
        deadline: The deadline that passed, Unix milliseconds.
        next_attempt_at: When the next attempt is due; None when attempts are exhausted (the step
            failed and the saga compensates).
    """

    step: str
    attempt: int
    reason: str
    deadline: int
    next_attempt_at: int | None = None


class StepHeartbeat(Event, schema=_framework("step_heartbeat")):
    """A running attempt of a step is alive (published by StepContext.heartbeat).

    Attributes:
        step: The step.
        attempt: The running attempt.
        details: What the handler said about its progress, if anything.
    """

    step: str
    attempt: int
    details: str | None = None


class BreakerState(enum.StrEnum):
    """A circuit breaker's state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerChanged(Event, schema=_framework("breaker_changed")):
    """An agent instance's circuit breaker changed state (on the status topic).

    Attributes:
        workflow: The agent's workflow.
        step: The agent's step.
        agent: The agent's name.
        instance: The agent instance.
        state: The new state.
        cause: Why (the failure ratio that opened it, the probe that closed it, ...).
    """

    workflow: str
    step: str
    agent: str
    instance: str
    state: BreakerState
    cause: str


class AgentPresence(Event, schema=_framework("agent_presence")):
    """An agent instance is alive, sent periodically on the status topic; or leaving.

    Attributes:
        workflow: The agent's workflow.
        step: The agent's step.
        agent: The agent's name.
        instance: The instance's id (host, pid and a random suffix).
        host: Its host name.
        pid: Its process id.
        started_at: When it started, Unix milliseconds.
        seen_at: When it sent this record, Unix milliseconds.
        interval_ms: The period of these records; silence for three periods means gone.
        breaker: Its breaker's state (a BreakerState value).
        lag: Records behind the end of the events topic over its partitions; -1 if unknown.
        running: Handler runs in progress.
        stopping: Whether it is leaving (its last record).
        rate_limit: Handler starts per second it allows (its agent's RateLimit); None: no limit.
        rate_burst: The rate limit's bucket size (starts allowed at once); None: no limit.
        throttled: Attempts waited for a token (consumption paused) now or since its previous record.
    """

    workflow: str
    step: str
    agent: str
    instance: str
    host: str
    pid: int
    started_at: int
    seen_at: int
    interval_ms: int
    breaker: str = "closed"
    lag: int = -1
    running: int = 0
    stopping: bool = False
    rate_limit: float | None = None
    rate_burst: int | None = None
    throttled: bool = False


FAULT_EVENTS: tuple[type[Event], ...] = (StepAttemptFailed, StepTimedOut, StepHeartbeat, BreakerChanged,
                                          AgentPresence)
