"""Declaring an agent: one step of one workflow, a typed handler, optionally a compensation.

    agent = Agent(workflow="report", step="chart")

    @agent.handler
    async def chart(ctx: StepContext, analysis: AnalysisCompleted) -> ChartCompleted: ...

    @agent.compensation
    async def delete_chart(ctx: StepContext, request: CompensationRequested) -> None: ...

The handler's parameter annotations are the events it consumes (several = wait for all of them,
per workflow); its return annotation is the event it completes the step with. Each run is a task
of its own (cancellation, timeouts, TaskGroup and context variables behave as in plain asyncio).
Raising fails the attempt: the step is retried per its `retry` policy, and fails once attempts are
exhausted (or at once on `NonRetryable`). Guards (`@agent.guard`) check the result before it is
published; a rejected result fails the attempt the same way (see _guards).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from ..errors import AgentDefinitionError
from ..events._envelope import Envelope, agent_source
from ..events._models import CompensationRequested, Event, EventSchema, StepContract
from ..events._policy import Retry, millis
from ._breaker import Breaker
from ._guards import Guard, checked
from ._ratelimit import RateLimit

Handler = Callable[..., Awaitable[Event]]
Compensation = Callable[["StepContext", CompensationRequested], Awaitable[None]]
H = TypeVar("H", bound=Handler)
C = TypeVar("C", bound=Compensation)
G = TypeVar("G", bound=Guard)


@dataclass
class StepContext:
    """What a handler knows about the event it reacts to, and a way to emit side events.

    Attributes:
        workflow: The workflow's name.
        workflow_id: The workflow instance.
        step: The step.
        cause: The envelope of the input that completed the step's inputs (or of the request to undo).
        log: A logger. Its lines, and any other logger's during the run, carry the workflow id, step,
            event id, trace id and span id (CHOREO_LOG_FORMAT=json shows them; see transport._logs).
        emitted: Side events to publish before the result.
        attempt: Which attempt of the step (or of its compensation) this run is, from 1.
    """

    workflow: str
    workflow_id: str
    step: str
    cause: Envelope
    log: logging.Logger
    emitted: list[Event] = field(default_factory=list)
    attempt: int = 1
    beat: Callable[[str | None], None] | None = field(default=None, repr=False)

    def emit(self, event: Event) -> None:
        """Publish an extra event (kind `other`) before the step's result, in this order.

        Side events of an attempt that fails and is retried are not published.
        """
        self.emitted.append(event)

    def heartbeat(self, details: str | None = None) -> None:
        """Say the attempt is alive (a StepHeartbeat in the log), e.g. once per chunk of a long job.

        It never blocks: the event is sent in the background, at most one per third of the step's
        `heartbeat_timeout` (one per second without one); calls in between are dropped.

        Args:
            details: What to say about the progress (shown in `choreo history`).
        """
        if self.beat is not None:
            self.beat(details)


class Agent:
    """One step of one workflow. Run it with `choreo agent run module:attr`.

    Args:
        workflow: The workflow's name.
        step: The step's name.
        name: The agent's name (default `workflow.step`).
        retry: How failed attempts of the step and of its compensation are retried; None: never.
        timeout: Seconds (or a timedelta) each attempt may take, counted from the moment all its
            inputs are in the log; the coordinator then publishes StepTimedOut (a failed attempt).
        heartbeat_timeout: Seconds a running attempt may go without `ctx.heartbeat()`.
        breaker: A circuit breaker: while open the agent stops consuming (the backlog waits in Kafka).
        rate_limit: At most so many handler starts per second (attempts, retries and compensations),
            per agent instance; excess inputs wait in Kafka (the agent pauses consumption), none fails.
    """

    def __init__(self, workflow: str, step: str, *, name: str | None = None, retry: Retry | None = None,
                 timeout: float | timedelta | None = None, heartbeat_timeout: float | timedelta | None = None,
                 breaker: Breaker | None = None, rate_limit: RateLimit | None = None) -> None:
        for label, value in (("workflow", workflow), ("step", step)):
            if not value or not value.replace("_", "").replace("-", "").isalnum():
                raise AgentDefinitionError(f"{label} must be a non-empty identifier, got {value!r}")
        for label, limit in (("timeout", timeout), ("heartbeat_timeout", heartbeat_timeout)):
            if limit is not None and (millis(limit) or 0) <= 0:
                raise AgentDefinitionError(f"{label} must be positive, got {limit!r}")
        self.workflow = workflow
        self.step = step
        self.name = name or f"{workflow}.{step}"
        self.retry = retry
        self.timeout_ms = millis(timeout)
        self.heartbeat_timeout_ms = millis(heartbeat_timeout)
        self.breaker = breaker
        self.rate_limit = rate_limit
        self.handler_fn: Handler | None = None
        self.compensation_fn: Compensation | None = None
        self.consumes: tuple[type[Event], ...] = ()
        self.completes_with: type[Event] | None = None
        self.guards: list[Guard] = []

    @property
    def source(self) -> str:
        """CloudEvents source of everything this agent emits; shared by all its instances."""
        return agent_source(self.workflow, self.step)

    def handler(self, fn: H) -> H:
        """Declare the step's handler: `async def f(ctx, event: SomeEvent, ...) -> ResultEvent`.

        Its parameter annotations are the events it consumes (several: wait for all, per workflow); its
        return annotation is the event it completes the step with. Raising fails the attempt (retried
        per `retry`; `NonRetryable` fails the step at once).

        Raises:
            AgentDefinitionError: The signature does not say what it consumes or returns.
        """
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters)
        is_async = inspect.iscoroutinefunction(fn)  # kept in a name: narrowing would change fn's type
        if not is_async or len(params) < 2:
            raise AgentDefinitionError(f"{self.name}: handler must be `async def f(ctx, event: SomeEvent, ...)`")
        consumes = tuple(hints.get(p) for p in params[1:])
        returns = hints.get("return")
        for t in (*consumes, returns):
            if not (isinstance(t, type) and issubclass(t, Event)):
                raise AgentDefinitionError(
                    f"{self.name}: every handler parameter after ctx and the return must be annotated "
                    f"with an Event subclass, got {t!r}")
        if len({t.type_name() for t in consumes if t}) != len(consumes):
            raise AgentDefinitionError(f"{self.name}: a handler cannot consume one event type twice")
        self.handler_fn = fn
        self.consumes = typing.cast(tuple[type[Event], ...], consumes)
        self.completes_with = typing.cast(type[Event], returns)
        return fn

    def guard(self, fn: G) -> G:
        """Declare a check on the step's result: `def f(result: ResultEvent) -> str | None` (or `async def`).

        It returns None to pass the result, or a reason to reject it. Guards run in declaration
        order after the handler returns, in its task, before anything is published; the first
        rejection fails the attempt with GuardRejected (retried per `retry`, like a handler's
        exception), and a guard that raises rejects with a reason naming the exception. Ready
        guards: `max_bytes(n)`, `forbid(pattern, field=...)`; `agent.guard(max_bytes(64_000))`.

        Raises:
            AgentDefinitionError: `fn` cannot be called with the result alone.
        """
        self.guards.append(checked(fn, self.name))
        return fn

    def compensation(self, fn: C) -> C:
        """Declare how to undo the step: `async def f(ctx, request: CompensationRequested) -> None`.

        Raising fails the attempt, retried per `retry` like the step's; once attempts are exhausted (or
        on `NonRetryable`) the compensation has failed and the coordinator ends the workflow `failed`.
        """
        is_async = inspect.iscoroutinefunction(fn)
        if not is_async:
            raise AgentDefinitionError(f"{self.name}: compensation must be an async function")
        self.compensation_fn = fn
        return fn

    def contract(self) -> StepContract:
        """The step contract this agent announces: what it consumes and completes with, and its schemas."""
        if self.handler_fn is None or self.completes_with is None:
            raise AgentDefinitionError(f"{self.name}: no @agent.handler declared")
        return StepContract(
            workflow=self.workflow, step=self.step, agent=self.name,
            consumes=[EventSchema.of(t) for t in self.consumes],
            completes_with=EventSchema.of(self.completes_with),
            compensable=self.compensation_fn is not None,
            retry=None if self.retry is None else self.retry.policy(),
            timeout_ms=self.timeout_ms, heartbeat_timeout_ms=self.heartbeat_timeout_ms,
        )

    def __repr__(self) -> str:
        consumed = ", ".join(t.type_name() for t in self.consumes)
        return f"Agent({self.name}: [{consumed}] -> {self.completes_with and self.completes_with.type_name()})"


def load_agent(spec: str) -> Agent:
    """Import `module:attr` (the current directory is importable) and return the Agent there."""
    module_name, _, attr = spec.partition(":")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        obj: Any = getattr(importlib.import_module(module_name), attr or "agent")
    except (ImportError, AttributeError) as exc:
        raise AgentDefinitionError(f"cannot load agent {spec!r}: {exc}") from exc
    if not isinstance(obj, Agent):
        raise AgentDefinitionError(f"{spec!r} is a {type(obj).__name__}, not an Agent")
    return obj
