"""Declaring an agent: one step of one workflow, a typed handler, optionally a compensation.

    agent = Agent(workflow="report", step="chart")

    @agent.handler
    async def chart(ctx: StepContext, analysis: AnalysisCompleted) -> ChartCompleted: ...

    @agent.compensation
    async def delete_chart(ctx: StepContext, request: CompensationRequested) -> None: ...

The handler's parameter annotations are the events it consumes (several = wait for all of them,
per workflow); its return annotation is the event it completes the step with. Raising fails the step.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import AgentDefinitionError
from ..events._envelope import Envelope, agent_source
from ..events._models import CompensationRequested, Event, EventSchema, StepContract

Handler = Callable[..., Awaitable[Event]]
Compensation = Callable[["StepContext", CompensationRequested], Awaitable[None]]
H = TypeVar("H", bound=Handler)
C = TypeVar("C", bound=Compensation)


@dataclass
class StepContext:
    """What a handler knows about the event it reacts to, and a way to emit side events."""

    workflow: str
    workflow_id: str
    step: str
    cause: Envelope
    log: logging.Logger
    emitted: list[Event] = field(default_factory=list)

    def emit(self, event: Event) -> None:
        """Publish an extra event (kind `other`) before the step's result, in this order."""
        self.emitted.append(event)


class Agent:
    """One step of one workflow. Run it with `choreo agent run module:attr`."""

    def __init__(self, workflow: str, step: str, *, name: str | None = None) -> None:
        for label, value in (("workflow", workflow), ("step", step)):
            if not value or not value.replace("_", "").replace("-", "").isalnum():
                raise AgentDefinitionError(f"{label} must be a non-empty identifier, got {value!r}")
        self.workflow = workflow
        self.step = step
        self.name = name or f"{workflow}.{step}"
        self.handler_fn: Handler | None = None
        self.compensation_fn: Compensation | None = None
        self.consumes: tuple[type[Event], ...] = ()
        self.completes_with: type[Event] | None = None

    @property
    def source(self) -> str:
        """CloudEvents source of everything this agent emits; shared by all its instances."""
        return agent_source(self.workflow, self.step)

    def handler(self, fn: H) -> H:
        """Declare the step's handler: `async def f(ctx, event: SomeEvent, ...) -> ResultEvent`.

        Its parameter annotations are the events it consumes (several: wait for all, per workflow); its
        return annotation is the event it completes the step with. Raising fails the step.

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

    def compensation(self, fn: C) -> C:
        """Declare how to undo the step: `async def f(ctx, request: CompensationRequested) -> None`.

        Raising reports the compensation as failed; the coordinator then ends the workflow `failed`.
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
