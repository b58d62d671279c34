"""Dead letters read back and redriven (`choreo dlq`), on the memory log: what was dead-lettered, where
a redriven record goes, what a redrive refuses, and what the services make of a redriven record."""

from __future__ import annotations

import orjson
import pytest

from choreograph import OutcomeStatus, Settings
from choreograph.events import Envelope, Kind, StepContract
from choreograph.events._envelope import REDRIVE_HEADER
from choreograph.events._models import EventSchema
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.runtime import PublishedGoal
from choreograph.security import Identity
from choreograph.testing import SagaKit
from choreograph.timetravel import History
from choreograph.transport import MemoryLog, MemoryTransport, TopicPartition, announce
from choreograph.transport._deadletter import DeadLetters, parse_letter_id
from choreograph.transport._dlq import DeadLetterBox

REPORT = (research.agent, analyze.agent, chart.agent, draft.agent, review.agent)
# report.ReportGoal with one more field: a writer schema nobody has announced (yet).
GOAL_V2 = orjson.dumps({"type": "record", "name": "ReportGoal", "namespace": "report", "fields": [
    {"name": "topic", "type": "string"}, {"name": "fail_at", "type": ["null", "string"], "default": None},
    {"name": "priority", "type": "int", "default": 0}]}).decode()


async def _memory() -> MemoryTransport:
    transport = MemoryTransport(MemoryLog(), Settings("memory", namespace="dlq", partitions=2, max_event_bytes=4096))
    await transport.ensure_topics()
    return transport


async def _dead_letter(transport: MemoryTransport, value: bytes, key: bytes | None, reason: str,
                       headers: list[tuple[str, bytes]] | None = None, partition: int = 1) -> None:
    """Append a record to the events topic and dead-letter it as a consumer would."""
    s = transport.settings
    producer = transport.producer()
    await producer.start()
    sent = await producer.send_and_wait(s.events_topic, value=value, key=key, headers=headers or [],
                                        partition=partition)
    [record] = [r for r in transport.log.records(TopicPartition(s.events_topic, sent.partition))
                if r.offset == sent.offset]
    await (await DeadLetters(producer, s.deadletter_topic, "someone", s.max_event_bytes).send(record, reason))
    await producer.stop()


async def test_a_dead_letter_reads_back_with_its_origin_reason_and_bytes() -> None:
    transport = await _memory()
    await _dead_letter(transport, b"\xffgarbage", b"wf-1", "malformed payload", [("ce_type", b"x.Y")])
    [letter] = await DeadLetterBox(transport).read()
    assert (letter.id, letter.reason, letter.consumer, letter.workflow_id) == ("0", "malformed payload", "someone",
                                                                                "wf-1")
    origin = letter.origin
    assert origin is not None
    assert origin[0] == ("dlq.events", 1)
    assert origin[1] == 0
    assert letter.value == b"\xffgarbage"
    assert not letter.truncated
    assert letter.redrive_count == 0
    assert letter.original_headers() == [("ce_type", b"x.Y")]
    assert letter.json(preview=4)["value_preview"] == "\\xffgar"
    assert parse_letter_id("0") == (0, 0)
    assert parse_letter_id("2:17") == (2, 17)
    assert parse_letter_id("x") is None


async def test_redrive_sends_the_original_bytes_back_once_and_marks_the_letter() -> None:
    transport = await _memory()
    await _dead_letter(transport, b"payload", b"wf-1", "unknown schema", [("ce_type", b"x.Y"), ("h", b"v")])
    box = DeadLetterBox(transport)
    dry = await box.redrive(await box.read(), dry_run=True)
    assert [(d.action, d.count) for d in dry] == [("would redrive", 1)]
    events = TopicPartition("dlq.events", 1)
    assert len(transport.log.records(events)) == 1, "a dry run sends nothing"

    [done] = await box.redrive(await box.read())
    assert (done.action, done.to, done.count) == ("redriven", "dlq.events:1@1", 1)
    copy = transport.log.records(events)[1]
    assert (copy.key, copy.value) == (b"wf-1", b"payload")
    assert list(copy.headers) == [("ce_type", b"x.Y"), ("h", b"v"), (REDRIVE_HEADER, b"1")], "no dlq_* header"

    [letter] = await box.read()
    assert letter.redriven == ("dlq.events:1@1",)
    [again] = await box.redrive([letter])
    assert again.action == "skipped"
    assert "already redriven" in again.why
    assert len(transport.log.records(events)) == 2
    [forced] = await box.redrive([letter], again=True)
    assert forced.action == "redriven"


async def test_a_truncated_dead_letter_or_a_duplicate_goal_is_not_redriven() -> None:
    transport = await _memory()
    await _dead_letter(transport, b"x" * 4000, b"big", "too much")  # over 4096 with the dlq headers
    await _dead_letter(transport, b"goal", b"wf-2", "duplicate workflow id: workflow wf-2 already has a goal")
    box = DeadLetterBox(transport)
    letters = await box.read()
    assert [x.truncated for x in letters] == [True, False]
    done = await box.redrive(letters)
    assert [d.action for d in done] == ["skipped", "skipped"]
    assert "truncated" in done[0].why
    assert "cannot be redriven" in done[0].why
    assert "duplicate goal" in done[1].why
    assert len(transport.log.records(TopicPartition("dlq.events", 1))) == 2, "nothing was sent"


async def test_dead_letters_of_one_record_by_several_consumers_are_redriven_once() -> None:
    transport = await _memory()
    await _dead_letter(transport, b"bad", b"wf-3", "malformed")
    [_letter] = await DeadLetterBox(transport).read()
    producer = transport.producer()
    await producer.start()
    record = transport.log.records(TopicPartition("dlq.events", 1))[0]
    await (await DeadLetters(producer, "dlq.deadletter", "another", 4096).send(record, "malformed too"))
    await producer.stop()
    letters = await DeadLetterBox(transport).read()
    assert len(letters) == 2
    [done] = await DeadLetterBox(transport).redrive(letters)
    assert done.ids == ("0", "1")
    assert done.action == "redriven"
    assert len(transport.log.records(TopicPartition("dlq.events", 1))) == 2


async def test_a_goal_refused_for_an_unknown_schema_runs_when_redriven_after_the_schema_is_announced() -> None:
    async with SagaKit(*REPORT) as kit:
        transport = MemoryTransport(kit.log, kit.settings)
        s = kit.settings
        from choreograph.events._avro import AvroSchema

        value = AvroSchema.from_json(GOAL_V2).encode({"topic": "late schema", "fail_at": None, "priority": 2})
        envelope = Envelope.new(type="report.ReportGoal", source="test", workflow="report", workflow_id="v2-goal",
                                kind=Kind.GOAL)
        producer = transport.producer()
        await producer.start()
        meta = await producer.send_and_wait(s.events_topic, value=value, key=envelope.key,
                                            headers=kit.signed(envelope.key, value, envelope.headers()))
        box = DeadLetterBox(transport)

        async def letters() -> object:
            found = await box.read(key=b"v2-goal")
            return found if {x.consumer for x in found} >= {s.coordinator_group, "report.research"} else None

        refused = await kit.eventually(letters)
        assert isinstance(refused, list)
        assert all("schema" in x.reason for x in refused)
        # The fix: an agent that speaks the new goal version announces it (any contract will do).
        contract = StepContract(workflow="schemas", step="v2", agent="schemas.v2",
                                consumes=[EventSchema(name="report.ReportGoal", avro_schema=GOAL_V2)],
                                completes_with=EventSchema(name="report.ReportGoal", avro_schema=GOAL_V2),
                                compensable=False)
        await producer.stop()
        agent = kit.trust(Identity.agent("schemas", "v2")).producer(transport.producer())  # its own key
        await agent.start()
        await announce(agent, s.registry_topic, s.events_topic, s.partitions, contract, "choreo://agent/schemas/v2")
        await agent.stop()
        [done] = await box.redrive(refused)
        assert done.action == "redriven"
        assert done.origin == f"{s.events_topic}:{meta.partition}@{meta.offset}"
        copy_at = int(done.to.rsplit("@", 1)[1])
        goal = PublishedGoal("report", "v2-goal", meta.partition, copy_at, envelope.id)
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        assert kit.handler_runs[("v2-goal", "research")] == 1


async def test_a_redriven_record_already_handled_changes_nothing() -> None:
    async with SagaKit(*REPORT) as kit:
        transport = MemoryTransport(kit.log, kit.settings)
        goal = await kit.given_goal("report", {"topic": "handled"})
        await kit.expect_outcome(goal, OutcomeStatus.COMPLETED)
        before = await kit.events(goal)
        # As if some consumer had dead-lettered the goal that everybody else handled.
        [record] = [r for r in kit.log.records(TopicPartition(kit.settings.events_topic, goal.partition))
                    if r.offset == goal.offset]
        producer = transport.producer()
        await producer.start()
        await (await DeadLetters(producer, kit.settings.deadletter_topic, "someone", 1 << 20).send(record, "flaky"))
        await producer.stop()
        box = DeadLetterBox(transport)
        [done] = await box.redrive(await box.read())
        assert done.action == "redriven"
        await kit.idle()
        async with History(kit.settings, transport, kit.trust(Identity.parse("publisher:testing")).verifier) as reader:
            entries = [e async for e in reader.entries(goal.workflow_id, to_end=True)]
        # The letter (shown after the goal it copies), then the redriven copy of the goal; no new work.
        assert [e.kind for e in entries if e not in before] == ["dead_letter", "goal"]
        assert kit.handler_runs[(goal.workflow_id, "research")] == 1
        assert len(await box.read()) == 1, "not dead-lettered again (a duplicate of the goal it started with)"


async def test_a_record_that_fails_again_returns_with_its_redrive_count() -> None:
    async with SagaKit(*REPORT) as kit:
        transport = MemoryTransport(kit.log, kit.settings)
        s = kit.settings
        headers = Envelope.new(type="report.ReportGoal", source="test", workflow="report", workflow_id="poison",
                               kind=Kind.GOAL).headers()
        producer = transport.producer()
        await producer.start()
        await producer.send_and_wait(s.events_topic, value=b"\x00 not avro", key=b"poison", headers=headers)
        await producer.stop()
        box = DeadLetterBox(transport)

        async def letters(count: int) -> object:
            found = [x for x in await box.read() if x.redrive_count == count]
            return found if len(found) >= 2 else None  # the coordinator's and research's

        first = await kit.eventually(lambda: letters(0))
        assert isinstance(first, list)
        [done] = await box.redrive(first)
        assert done.count == 1
        second = await kit.eventually(lambda: letters(1))
        assert isinstance(second, list)
        assert {x.reason for x in second} == {x.reason for x in first}
        # Bulk redrive takes only what was not redriven yet: the new letters, now at count 2.
        pending = [x for x in await box.read() if not x.redriven]
        assert [x.id for x in pending] == [x.id for x in second]
        [done] = await box.redrive(pending)
        assert done.count == 2
        await kit.eventually(lambda: letters(2))


@pytest.mark.parametrize(("text", "expected"), [("90s", 1_000_000 - 90_000), ("10m", 1_000_000 - 600_000),
                                                ("1970-01-01T00:00:01Z", 1000)])
def test_since_takes_a_duration_ago_or_an_iso_time(text: str, expected: int) -> None:
    from choreograph.cli._input import since_ms

    assert since_ms(text, now_ms=1_000_000) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-01-01T00:00:00"])
def test_since_refuses_what_is_not_a_time(text: str) -> None:
    from choreograph.cli._input import since_ms
    from choreograph.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="--since"):
        since_ms(text)
