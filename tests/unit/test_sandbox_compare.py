"""`choreo replay`'s comparison: what differs is listed, but not which of concurrent events came first
(a join's last input, the event a coordinator decision was triggered by)."""

from __future__ import annotations

from dataclasses import replace

from helpers import GOLDEN

from choreograph.saga._entries import HistoryEntry
from choreograph.sandbox._compare import compare
from choreograph.timetravel import Recording

HAPPY = Recording.load(GOLDEN / "happy.jsonl")
COMPENSATED = Recording.load(GOLDEN / "compensated.jsonl")


def one(entries: list[HistoryEntry], kind: str, step: str | None) -> HistoryEntry:
    (found,) = [e for e in entries if e.kind == kind and e.step == step]
    return found


def with_cause(entries: list[HistoryEntry], target: HistoryEntry, cause: str | None) -> list[HistoryEntry]:
    return [replace(e, causation_id=cause) if e.event_id == target.event_id else e for e in entries]


def test_a_join_caused_by_its_other_input_is_reproduced() -> None:
    entries = HAPPY.entries()
    graph = HAPPY.catalog()["report"]
    review = one(entries, "step_completed", "review")
    inputs = {one(entries, "step_completed", step).event_id for step in ("chart", "draft")}
    assert review.causation_id in inputs
    (other,) = inputs - {review.causation_id}
    rerun = with_cause(entries, review, other)
    assert compare(entries, rerun, graph) == []
    # Without the graph nothing says review joins two inputs: the cause is a difference.
    assert [d.fields for d in compare(entries, rerun)] == [
        {"causation_id": {"recorded": review.causation_id, "rerun": other}}]


def test_a_result_caused_by_an_event_it_does_not_consume_is_a_difference() -> None:
    entries = HAPPY.entries()
    graph = HAPPY.catalog()["report"]
    review = one(entries, "step_completed", "review")
    research = one(entries, "step_completed", "research")
    (difference,) = compare(entries, with_cause(entries, review, research.event_id), graph)
    assert (difference.what, difference.step, list(difference.fields)) == ("differs", "review", ["causation_id"])


def test_a_coordinator_decision_triggered_by_another_event_of_the_run_is_reproduced() -> None:
    entries = COMPENSATED.entries()
    graph = COMPENSATED.catalog()["report"]
    decision = next(e for e in entries if e.kind == "compensation_requested")
    other = next(e for e in entries if e.kind == "step_completed" and e.event_id != decision.causation_id)
    assert compare(entries, with_cause(entries, decision, other.event_id), graph) == []
    # A cause that is in neither run is still a difference.
    (difference,) = compare(entries, with_cause(entries, decision, "not-an-event"), graph)
    assert difference.fields["causation_id"]["rerun"] == "not-an-event"


def test_a_changed_payload_with_a_reordered_cause_is_a_difference() -> None:
    entries = HAPPY.entries()
    graph = HAPPY.catalog()["report"]
    review = one(entries, "step_completed", "review")
    other = one(entries, "step_completed", "chart" if review.causation_id != one(
        entries, "step_completed", "chart").event_id else "draft")
    rerun = [replace(e, causation_id=other.event_id, data={**(e.data or {}), "changed": True})
             if e.event_id == review.event_id else e for e in entries]
    (difference,) = compare(entries, rerun, graph)
    assert set(difference.fields) == {"causation_id", "data"}
