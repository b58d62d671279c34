"""`choreo history` marks what the services refuse (issue 12): an unsigned, badly signed or unauthorized
event is shown REJECTED with the reason the coordinator dead-letters it with; a genuine one is unmarked.
No broker: the kit's services on the memory log, read with History over the same log."""

from __future__ import annotations

import orjson
import pytest

from choreograph import OutcomeStatus, WorkflowOutcome
from choreograph.cli._render import Timeline
from choreograph.events import COORDINATOR_SOURCE, Envelope, Kind
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.examples.report._events import DraftCompleted, ReviewCompleted
from choreograph.runtime import PublishedGoal
from choreograph.saga import HistoryEntry
from choreograph.security import Identity, Verifier
from choreograph.testing import SagaKit
from choreograph.timetravel import History
from choreograph.timetravel._history import FROM_ENVIRONMENT, Verification
from choreograph.transport import MemoryTransport, Record, TopicPartition

REPORT = (research.agent, analyze.agent, chart.agent, draft.agent, review.agent)
PUBLISHER = Identity.parse("publisher:testing")
UNSIGNED = "unsigned (no ce_keyid or ce_signature)"


async def _forge(kit: SagaKit, goal: PublishedGoal) -> None:
    """After the workflow's outcome: three records the services refuse."""
    workflow_id = goal.workflow_id
    # A real key, not the step's: the research agent speaks for draft.
    await kit.given_event(goal, DraftCompleted(topic="marked", text="by research"), step="draft",
                          signed_as=Identity.agent("report", "research"))
    # No signature at all.
    await kit.given_event(goal, ReviewCompleted(topic="marked", approved=True, notes="nobody"), step="review",
                          signed_as=None)
    # The draft agent's genuine signature over another text: the record was changed after signing.
    key = workflow_id.encode()
    headers = Envelope.new(type=DraftCompleted.type_name(), source="choreo://agent/report/draft", workflow="report",
                           workflow_id=workflow_id, kind=Kind.STEP_COMPLETED, step="draft").headers()
    signed = kit.signed(key, DraftCompleted(topic="marked", text="signed").encode(), headers)
    producer = MemoryTransport(kit.log, kit.settings).producer()
    await producer.start()
    try:
        await producer.send_and_wait(kit.settings.events_topic, value=DraftCompleted(topic="marked", text="changed")
                                     .encode(), key=key, headers=signed, partition=goal.partition)
    finally:
        await producer.stop()


def _letters(kit: SagaKit) -> list[Record]:
    return [r for r in kit.log.records(TopicPartition(kit.settings.deadletter_topic, 0))
            if dict(r.headers).get("dlq_consumer") == kit.settings.coordinator_group.encode()]


async def _entries(kit: SagaKit, workflow_id: str, verifier: Verifier | Verification | None = FROM_ENVIRONMENT
                   ) -> list[HistoryEntry]:
    async with History(kit.settings, MemoryTransport(kit.log, kit.settings), verifier) as reader:
        return [e async for e in reader.entries(workflow_id, to_end=True)]


async def test_history_marks_forged_records_rejected_with_the_services_reason_and_genuine_ones_not(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    async with SagaKit(*REPORT) as kit:
        goal = await kit.given_goal("report", {"topic": "marked"})
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        genuine = await kit.events(goal)
        await _forge(kit, goal)

        async def refused_all() -> bool:
            return len(_letters(kit)) == 3  # the coordinator dead-lettered all three

        await kit.eventually(refused_all)
        believes = kit.trust(PUBLISHER).verifier
        assert believes is not None
        async with History(kit.settings, MemoryTransport(kit.log, kit.settings), believes) as reader:
            entries = [e async for e in reader.entries(goal.workflow_id, to_end=True)]
            checked = believes.verified
            again = [e async for e in reader.entries(goal.workflow_id, to_end=True)]
            assert again == entries
            assert believes.verified == checked, "no record is verified twice"
        events = [e for e in entries if e.kind != "dead_letter"]
        assert [e for e in events if e.rejected is None] == genuine  # every genuine event, unmarked
        forged = [e for e in events if e.rejected is not None]
        assert [(e.step, e.data and (e.data.get("text") or e.data.get("notes"))) for e in forged] == [
            ("draft", "by research"), ("review", "nobody"), ("draft", "changed")]
        research_says, nobody_says, changed_says = (e.rejected or "" for e in forged)
        assert research_says.startswith("agent:report/research may publish only its own step's results")
        assert nobody_says == UNSIGNED
        assert changed_says.startswith("bad signature for key ")
        # The reason is the coordinator's: each forged record is followed by its dead letter saying the same.
        for entry in forged:
            letter = entries[entries.index(entry) + 1]
            assert letter.kind == "dead_letter"
            assert letter.data is not None
            assert letter.data["reason"] == entry.rejected
            assert letter.rejected is None
        # The command line: REJECTED with the reason in the table, "rejected" in --json.
        table = Timeline(goal.workflow_id, as_json=False, stream=False)
        for entry in entries:
            table.add(entry)
        table.done()
        shown = capsys.readouterr().out
        assert f"REJECTED: {UNSIGNED}" in shown
        assert shown.count("REJECTED") == 3
        lines = Timeline(goal.workflow_id, as_json=True, stream=False)
        for entry in entries:
            lines.add(entry)
        printed = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [p["rejected"] for p in printed] == [e.rejected for e in entries]
        assert sum(p["rejected"] is not None for p in printed) == 3

        # By default the services' policy (CHOREO_POLICY) is read; CHOREO_VERIFY=off marks nothing.
        assert kit.keys is not None
        monkeypatch.delenv("CHOREO_VERIFY", raising=False)
        monkeypatch.setenv("CHOREO_POLICY", str(kit.keys.file.path))
        assert await _entries(kit, goal.workflow_id) == entries
        monkeypatch.setenv("CHOREO_VERIFY", "off")
        unmarked = await _entries(kit, goal.workflow_id)
        assert [e.rejected for e in unmarked] == [None] * len(entries)
        # Passing no verifier marks nothing either.
        assert await _entries(kit, goal.workflow_id, None) == unmarked



async def test_a_forged_outcome_does_not_end_the_history_a_verifier_reads() -> None:
    async with SagaKit(*REPORT) as kit:
        kit.pause_step("research")  # the saga is running when the forged outcome is logged
        goal = await kit.given_goal("report", {"topic": "ends"})
        done = WorkflowOutcome(workflow="report", status=OutcomeStatus.COMPLETED, completed_steps=[],
                               compensated_steps=[])
        await kit.given_event(goal, done, step="review", kind=Kind.OUTCOME, source=COORDINATOR_SOURCE, signed_as=None)
        kit.resume_step("research")
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        believes = kit.trust(PUBLISHER).verifier
        async with History(kit.settings, MemoryTransport(kit.log, kit.settings), believes) as reader:
            outcomes = [(e.source, e.rejected) for e in [e async for e in reader.entries(goal.workflow_id)]
                        if e.kind == "outcome"]
        assert outcomes == [(COORDINATOR_SOURCE, UNSIGNED), (COORDINATOR_SOURCE, None)]  # read on to the real one
        async with History(kit.settings, MemoryTransport(kit.log, kit.settings), None) as blind:
            entries = [e async for e in blind.entries(goal.workflow_id)]
        assert [e.kind for e in entries if e.kind != "dead_letter"][-1] == "outcome"
        assert [e.kind for e in entries].count("outcome") == 1, "checking nothing, the first outcome ends it"
