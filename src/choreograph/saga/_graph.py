"""A workflow's step graph, assembled from the contracts its agents announce.

Step S depends on step T when S consumes the event T completes with. Types consumed but produced by
no step are the workflow's goal types. No central file lists the steps: starting an agent adds one.

A workflow whose announced contracts cannot make a graph (a cycle, an unreadable schema) still has
an entry in the coordinator's catalog: a refusal, `Graph.refusal(workflow, reason)`, with no steps.
A goal of that workflow fails with the reason instead of starting (see transport.Contracts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from ..errors import WorkflowError
from ..events._models import StepContract, StepNode, WorkflowStarted


@dataclass(frozen=True)
class Graph:
    """Steps of one workflow with their dependencies, in a topological order.

    Attributes:
        workflow: The workflow's name.
        nodes: Step name -> step.
        order: The step names, each after the steps it depends on (ties broken by name).
        dependents: Step name -> the steps that depend on it directly.
        refused: Why the workflow cannot start, for a refusal (see `refusal`); None for a graph.
        timed: Whether a step has a timeout or a heartbeat timeout (the coordinator keeps timers for it).
    """

    workflow: str
    nodes: Mapping[str, StepNode]
    order: tuple[str, ...] = field(default=())
    dependents: Mapping[str, frozenset[str]] = field(default_factory=dict)
    refused: str | None = None
    timed: bool = False

    @cached_property
    def started(self) -> tuple[WorkflowStarted, bytes]:
        """The WorkflowStarted that fixes this graph for a workflow instance, and its payload.

        Encoded once per graph: every instance of a workflow starts with the same bytes, and its
        nested steps made this the coordinator's costliest encode (70 us of its ~1 ms per saga).
        """
        event = WorkflowStarted(workflow=self.workflow, steps=[self.nodes[n] for n in self.order])
        return event, event.encode()

    @classmethod
    def refusal(cls, workflow: str, reason: str) -> Graph:
        """The catalog entry of a workflow whose contracts were refused: no steps, and why.

        Args:
            workflow: The workflow's name.
            reason: Why its contracts make no graph; a goal of the workflow fails with it.

        Returns:
            A graph with no steps and `refused` set.
        """
        return cls(workflow, {}, refused=reason)

    @classmethod
    def of(cls, workflow: str, nodes: Iterable[StepNode]) -> Graph:
        """The graph of the given steps, ordered.

        Args:
            workflow: The workflow's name.
            nodes: Its steps; of two with one name, the last counts.

        Returns:
            The graph.

        Raises:
            WorkflowError: A step depends on a step not given, or the dependencies form a cycle.
        """
        by_name = {n.name: n for n in nodes}
        for node in by_name.values():
            unknown = set(node.depends_on) - by_name.keys()
            if unknown:
                raise WorkflowError(f"{workflow}: step {node.name!r} depends on unknown steps {sorted(unknown)}")
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(name: str, path: tuple[str, ...]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise WorkflowError(f"{workflow}: dependency cycle {' -> '.join((*path, name))}")
            state[name] = 1
            for dep in sorted(by_name[name].depends_on):
                visit(dep, (*path, name))
            state[name] = 2
            order.append(name)

        for name in sorted(by_name):
            visit(name, ())
        dependents = {name: frozenset(n.name for n in by_name.values() if name in n.depends_on)
                      for name in by_name}
        timed = any(n.timeout_ms is not None or n.heartbeat_timeout_ms is not None for n in by_name.values())
        return cls(workflow, by_name, tuple(order), dependents, timed=timed)

    @classmethod
    def from_contracts(cls, workflow: str, contracts: Iterable[StepContract]) -> Graph:
        """The graph that the announced contracts of `workflow` make.

        Step S depends on step T when S consumes the event type T completes with (of two steps
        completing with one type, the first given counts).

        Args:
            workflow: The workflow's name.
            contracts: Announced contracts; those of other workflows are ignored.

        Returns:
            The graph.

        Raises:
            WorkflowError: The dependencies form a cycle.
        """
        mine = [c for c in contracts if c.workflow == workflow]
        producers: dict[str, str] = {}
        for c in mine:
            producers.setdefault(c.completes_with.name, c.step)
        nodes = [
            StepNode(name=c.step, compensable=c.compensable,
                     depends_on=sorted({producers[t.name] for t in c.consumes if t.name in producers} - {c.step}),
                     retry=c.retry, timeout_ms=c.timeout_ms, heartbeat_timeout_ms=c.heartbeat_timeout_ms)
            for c in mine
        ]
        return cls.of(workflow, nodes)

    def live(self, completed: frozenset[str], failed: Iterable[str]) -> frozenset[str]:
        """Steps that are running or may still run: not finished, and every dependency done or live."""
        finished = completed | set(failed)
        live: set[str] = set()
        for name in self.order:
            if name not in finished and all(d in completed or d in live for d in self.nodes[name].depends_on):
                live.add(name)
        return frozenset(live)


def goal_types(workflow: str, contracts: Iterable[StepContract]) -> dict[str, str]:
    """Goal event types of a workflow (name -> schema JSON): consumed, but completed by no step."""
    mine = [c for c in contracts if c.workflow == workflow]
    produced = {c.completes_with.name for c in mine}
    return {t.name: t.avro_schema for c in mine for t in c.consumes if t.name not in produced}
