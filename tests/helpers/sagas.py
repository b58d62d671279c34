"""Assertions about a workflow's recorded history that several broker tests share, and what tests of
the saga kit share (`from helpers.sagas import ...`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from choreograph import HistoryEntry, Settings, history
from choreograph.events import StepContract
from choreograph.security import Identity
from choreograph.testing import SagaKit
from choreograph.transport import MemoryTransport, announce

REPORT_DEPENDS = {"research": [], "analyze": ["research"], "chart": ["analyze"], "draft": ["analyze"],
                  "review": ["chart", "draft"]}


def steps_of(entries: list[HistoryEntry], kind: str) -> list[str]:
    return [e.step for e in entries if e.kind == kind and e.step is not None]


def assert_compensated_exactly_completed(entries: list[HistoryEntry]) -> None:
    completed = steps_of(entries, "step_completed")
    requested = steps_of(entries, "compensation_requested")
    assert Counter(requested) == Counter(set(completed)), (completed, requested)
    assert Counter(steps_of(entries, "compensation_completed")) == Counter(set(completed))


def assert_reverse_dependency_order(entries: list[HistoryEntry], depends: dict[str, list[str]]) -> None:
    """A step is asked to compensate only after every completed step depending on it was undone."""
    requested_at = {e.step: e.offset for e in entries if e.kind == "compensation_requested"}
    undone_at = {e.step: e.offset for e in entries if e.kind == "compensation_completed"}
    for step, at in requested_at.items():
        for dependent, deps in depends.items():
            if step in deps and dependent in requested_at:
                assert undone_at[dependent] < at, f"{step} compensated before its dependent {dependent}"


def assert_single_outcome_last(entries: list[HistoryEntry]) -> None:
    outcomes = [e for e in entries if e.kind == "outcome"]
    assert len(outcomes) == 1, [e.kind for e in entries]
    assert entries[-1].kind == "outcome"


async def describe_unfinished(settings: Settings, workflow_ids: Iterable[str]) -> str:
    """Each workflow's history, one line per event, for the message of a test that found it without an outcome."""
    lines = []
    for workflow_id in workflow_ids:
        lines.append(f"{workflow_id}:")
        for e in await history(settings, workflow_id, to_end=True):
            lines.append(f"  p{e.partition}@{e.offset} {e.kind} {e.step or '-'} from {e.source} "
                         f"id={e.event_id[:8]} cause={(e.causation_id or '-')[:8]} t={e.timestamp}")
    return "\n".join(lines)


async def announce_in_kit(kit: SagaKit, *contracts: StepContract) -> None:
    """Announce each contract as its own agent does (signed with that agent's key), no process of it running."""
    for one in contracts:
        raw = MemoryTransport(kit.log, kit.settings).producer()
        producer = kit.trust(Identity.agent(one.workflow, one.step)).producer(raw)
        await producer.start()
        try:
            await announce(producer, kit.settings.registry_topic, kit.settings.events_topic, kit.settings.partitions,
                           one, f"choreo://agent/{one.workflow}/{one.step}")
        finally:
            await producer.stop()
