"""Golden replay: recorded runs of the real coordinator, folded through the current code (no broker).

tests/golden/*.jsonl come from tests/golden/generate.py. Any change in what the coordinator decides,
in which order, with which ids, causes and payloads, or in the final state, fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import GOLDEN as GOLDEN_DIR

from choreograph import ConfigurationError, Kind, ReplayError
from choreograph.events import StepNode
from choreograph.saga import Point, SagaState, diff, fact_of, fold
from choreograph.saga import _decide as saga  # the mutation tests patch the decision module itself
from choreograph.saga import _ticks as ticks
from choreograph.saga import _timers as timers
from choreograph.timetravel import Recording

GOLDEN = sorted(GOLDEN_DIR.glob("*.jsonl"))


def test_the_golden_set_covers_the_cases_we_promise() -> None:
    assert {p.stem for p in GOLDEN} >= {"happy", "compensated", "failed_compensation", "duplicated", "reordered",
                                        "retry", "timeout", "late_result", "deadline", "cancelled"}
    statuses = {p.stem: Recording.load(p).final_state["status"] for p in GOLDEN}  # type: ignore[index]
    assert statuses["happy"] == statuses["retry"] == "completed"
    assert statuses["failed_compensation"] == "failed"
    assert statuses["compensated"] == statuses["duplicated"] == statuses["reordered"] == "compensated"
    assert statuses["timeout"] == statuses["late_result"] == "compensated"
    assert statuses["deadline"] == "timed_out"
    assert statuses["cancelled"] == "cancelled"


def kinds(name: str) -> list[tuple[str, str | None, str]]:
    """A recording's events as (kind, step, who published it)."""
    return [(e.kind, e.step, e.source.rsplit("/", 1)[-1])
            for e in Recording.load(GOLDEN_DIR / f"{name}.jsonl").entries()]


def test_the_fault_recordings_hold_what_they_are_named_for() -> None:
    retry = kinds("retry")
    assert [k for k in retry if k[0] == "step_attempt_failed"] == [("step_attempt_failed", "chart", "chart")] * 2
    assert not any(k[0] == "step_timed_out" for k in retry)
    timeout = kinds("timeout")
    assert [k for k in timeout if k[0] == "step_timed_out"] == [("step_timed_out", "draft", "coordinator")] * 2
    late = kinds("late_result")
    outcome_at = late.index(("outcome", None, "coordinator"))
    # draft answered while the saga compensated, chart after its outcome: both undone.
    assert late.index(("step_completed", "draft", "draft")) < outcome_at
    assert late[outcome_at + 1:] == [("step_completed", "chart", "chart"),
                                     ("compensation_requested", "chart", "coordinator"),
                                     ("compensation_completed", "chart", "chart")]
    assert ("compensation_requested", "draft", "coordinator") in late[:outcome_at]
    deadline = Recording.load(GOLDEN_DIR / "deadline.jsonl")
    [timed_out] = [e for e in deadline.entries() if e.kind == "step_timed_out"]
    assert timed_out.data is not None
    assert timed_out.data["reason"].startswith("workflow deadline")


def test_the_cancelled_recording_holds_what_it_is_named_for() -> None:
    # Cancelled (Client.cancel) while draft ran: chart, analyze, research undone in that order, the
    # outcome with no wait for draft, whose result came after it and was undone too.
    cancelled = kinds("cancelled")
    asked_at = cancelled.index(("cancel_requested", None, "client"))
    outcome_at = cancelled.index(("outcome", None, "coordinator"))
    assert ("step_completed", "draft", "draft") not in cancelled[:outcome_at]
    assert [step for kind, step, _ in cancelled[asked_at:outcome_at] if kind == "compensation_requested"] == [
        "chart", "analyze", "research"]
    assert cancelled[outcome_at + 1:] == [("step_completed", "draft", "draft"),
                                          ("compensation_requested", "draft", "coordinator"),
                                          ("compensation_completed", "draft", "draft")]
    [outcome] = [e for e in Recording.load(GOLDEN_DIR / "cancelled.jsonl").entries() if e.kind == "outcome"]
    assert outcome.data is not None
    assert (outcome.data["status"], outcome.data["reason"]) == ("cancelled", "changed my mind")


def test_ignoring_cancellations_fails_the_golden_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    # The deliberate bug: a cancellation read as an event of no consequence.
    def blind(*args: object, **kwargs: object) -> saga.Fact:
        fact = fact_of(*args, **kwargs)  # type: ignore[arg-type]
        return fact._replace(kind=Kind.OTHER) if fact.kind is Kind.CANCEL_REQUESTED else fact

    monkeypatch.setattr(ticks, "fact_of", blind)
    failing = {p.stem for p in GOLDEN if Recording.load(p).check()}
    assert failing == {"cancelled"}


def test_a_change_to_when_a_deadline_passes_fails_the_golden_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    # The deliberate bug: a retry's deadline counted from its step's inputs, not from when it was due.
    original = timers.current_attempt

    def from_inputs(state: SagaState, node: StepNode) -> tuple[int, int | None]:
        return original(state, node)[0], original(state._replace(retries={}), node)[1]

    monkeypatch.setattr(timers, "current_attempt", from_inputs)
    failing = {p.stem for p in GOLDEN if Recording.load(p).check()}
    assert "timeout" in failing
    assert not failing & {"happy", "compensated", "failed_compensation", "duplicated", "reordered"}


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_recording_replays_to_the_same_decisions_and_state(path: Path) -> None:
    assert [str(m) for m in Recording.load(path).check()] == []


def test_a_change_to_compensation_order_fails_the_golden_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    # The deliberate bug: compensate every completed step at once, dependents or not.
    monkeypatch.setattr(saga, "_dependents_undone", lambda *args: True)
    failing = {p.stem: Recording.load(p).check() for p in GOLDEN}
    assert {name for name, problems in failing.items() if problems} >= {
        "compensated", "duplicated", "reordered", "failed_compensation"}
    assert "happy" not in {name for name, problems in failing.items() if problems}
    assert any("compensation_requested" in str(m) for m in failing["compensated"])


def test_a_changed_decision_payload_fails_the_golden_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    original = saga._outcome
    monkeypatch.setattr(saga, "_outcome", lambda state, status, step, reason: original(state, status, step,
                                                                                        reason and reason.upper()))
    problems = Recording.load(next(p for p in GOLDEN if p.stem == "compensated")).check()
    assert any("payload differs" in str(m) for m in problems)


def test_state_at_each_point_of_a_recording() -> None:
    recording = Recording.load(next(p for p in GOLDEN if p.stem == "compensated"))
    entries, catalog = recording.entries(), recording.catalog()
    failed_at = next(e for e in entries if e.kind == "step_failed")
    before = fold(entries, catalog, Point(offset=failed_at.offset - 1)).json()
    after = fold(entries, catalog, Point(offset=failed_at.offset)).json()
    assert before["status"] == after["status"] == "running"
    assert after["failed"].keys() == {"review"}
    # Decided at the failure: the two steps nobody depends on any more, published right after it.
    assert {(d["kind"], d["step"]) for d in after["decided"]} == {
        ("compensation_requested", "chart"), ("compensation_requested", "draft")}
    changes = diff(before, after)
    assert changes["compensation_requested"] == {"added": ["chart", "draft"], "removed": []}
    assert fold(entries, catalog).json()["status"] == "compensated"
    by_time = fold(entries, catalog, Point(timestamp_ms=failed_at.timestamp)).json()
    assert by_time["at"]["offset"] >= failed_at.offset


@pytest.mark.parametrize("text", ["2026-11-21T09:30:00", "yesterday", "-3"])
def test_a_point_is_an_offset_or_a_zoned_iso_time(text: str) -> None:
    with pytest.raises(ConfigurationError):
        Point.parse(text)


def test_points_parse() -> None:
    assert Point.parse("42") == Point(offset=42)
    assert Point.parse("2026-11-21T09:30:00Z") == Point(timestamp_ms=1795253400000)


def test_which_steps_a_sandbox_reruns() -> None:
    from choreograph.sandbox import rerun_steps

    graph = Recording.load(next(p for p in GOLDEN if p.stem == "happy")).catalog()["report"]
    assert rerun_steps(graph, None, None) == list(graph.order)
    assert rerun_steps(graph, {"analyze": None}, None) == ["analyze"]
    assert rerun_steps(graph, None, "chart") == ["chart", "review"]
    assert rerun_steps(graph, {"analyze": None, "draft": None}, "chart") == []
    with pytest.raises(ReplayError, match="no step"):
        rerun_steps(graph, {"summarise": None}, None)
