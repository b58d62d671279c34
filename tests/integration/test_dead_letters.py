"""Unreadable records on the events topic are dead-lettered by every service that reads them, and the
next event is processed (the example services in this process, on a real broker)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer, TopicPartition
from helpers import eventually, example_services, serving

from choreograph import Client, Envelope, Kind, OutcomeStatus, Settings
from choreograph.transport import Kafka


async def test_unreadable_records_are_dead_lettered_and_the_next_event_is_processed(settings: Settings) -> None:
    headers = Envelope.new(type="report.ReportGoal", source="test", workflow="report", workflow_id="bad",
                           kind=Kind.GOAL).headers()
    bad = {
        b"\x00\x01 not avro at all": "malformed",
        b"\xc3\x01" + bytes(8) + b"\x02x": "unknown fingerprint",
    }
    kafka = Kafka(settings)

    async def dead_letters() -> list[dict[str, bytes]]:
        found = []
        async for record in kafka.read([TopicPartition(settings.deadletter_topic, 0)]):
            assert record.value is not None, "a dead letter carries the record's value"
            found.append({**dict(record.headers), "value": record.value})
        return found if len(found) >= 2 * len(bad) + 1 else []

    async with serving(*example_services(settings)):
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            sent = {value: await producer.send_and_wait(settings.events_topic, value=value, key=b"bad",
                                                        headers=headers)
                    for value in bad}
            headerless = await producer.send_and_wait(settings.events_topic, value=b"no envelope", key=b"bad")
        finally:
            await producer.stop()
        async with Client(settings) as client:
            good = await client.publish("report", {"topic": "after the bad ones"})
            outcome = await client.wait(good, 60)
        assert outcome is not None
        assert outcome.status is OutcomeStatus.COMPLETED
        letters = await eventually(dead_letters, what="dead letters from coordinator and research")

    for value, meta in sent.items():
        mine = [d for d in letters if d["value"] == value]
        assert {d["dlq_consumer"] for d in mine} == {settings.coordinator_group.encode(), b"report.research"}
        for d in mine:
            assert d["dlq_topic"] == settings.events_topic.encode()
            assert int(d["dlq_partition"]) == meta.partition
            assert int(d["dlq_offset"]) == meta.offset
            assert d["dlq_reason"]
            assert d["ce_type"] == b"report.ReportGoal"  # the original headers travel along
    # A record without an envelope is nobody's event: only the coordinator, which reads everything, reports it.
    [orphan] = [d for d in letters if d["value"] == b"no envelope"]
    assert orphan["dlq_consumer"] == settings.coordinator_group.encode()
    assert int(orphan["dlq_offset"]) == headerless.offset
    assert b"ce_" in orphan["dlq_reason"]
