"""Restore markers are the operator's (issue 12): `restore` signs its markers as the operator and keeps the
restored records' own signatures; the archiver and the registry reader open a restore bracket only at a
marker an operator signed, so a forged one (unsigned, or signed by another party's real key) silences
nothing. No broker: the memory log, the test kit's keys."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from choreograph.events import (
    RESTORE_SOURCE,
    Envelope,
    Kind,
    RestoreStarted,
    SchemaStore,
    StoredRecord,
    new_workflow_id,
)
from choreograph.examples.report import research
from choreograph.examples.report._events import ReportGoal
from choreograph.security import Identity, Verifier
from choreograph.testing._keys import OPERATOR, PUBLISHER, Keys
from choreograph.timetravel import Archive, Archiver, History, restore, write_segment
from choreograph.timetravel._archive import segment_path
from choreograph.transport import MemoryLog, MemoryTransport, Registry, Settings, TopicPartition, Trust, announce
from choreograph.transport._registry import retire

RESEARCH = Identity.agent("report", "research")
STORE = SchemaStore()
STORE.add(ReportGoal.avro)


@pytest.fixture
def keys() -> Iterator[Keys]:
    made = Keys((research.agent,))
    yield made
    made.close()


def memory(namespace: str) -> tuple[MemoryTransport, Settings]:
    settings = Settings(bootstrap_servers="memory", namespace=namespace, partitions=1)
    return MemoryTransport(MemoryLog(), settings), settings


def forged_marker() -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A RestoreStarted from the restore source whose bracket never ends: honoured, everything after it is history."""
    marker = RestoreStarted(restore_id="forged", archive="/nowhere", records=0, until_timestamp=2**62)
    envelope = Envelope.new(type=marker.type_name(), source=RESTORE_SOURCE, workflow="", workflow_id="restore/forged",
                            kind=Kind.OTHER)
    return envelope.key, marker.encode(), envelope.headers()


def goal(topic: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    envelope = Envelope.new(type=ReportGoal.type_name(), source="choreo://cli", workflow="report",
                            workflow_id=new_workflow_id(), kind=Kind.GOAL)
    return envelope.key, ReportGoal(topic=topic).encode(), envelope.headers()


async def send(transport: MemoryTransport, topic: str, record: tuple[bytes, bytes | None, Sequence[tuple[str, bytes]]],
               trust: Trust) -> None:
    producer = trust.producer(transport.producer())
    await producer.start()
    try:
        key, value, headers = record
        await producer.send_and_wait(topic, value=value, key=key, headers=headers, partition=0)
    finally:
        await producer.stop()


def topic_of(record: StoredRecord) -> str:
    """What a record of these tests is: a goal's topic, or "marker"."""
    if record.header("ce_kind") == b"goal":
        return ReportGoal.decode(record.value or b"", STORE).topic
    return "marker"


async def test_a_forged_restore_marker_silences_no_archiver_while_an_operators_restore_still_brackets(
        tmp_path: Path, keys: Keys) -> None:
    transport, settings = memory("forgedarchive")
    await transport.ensure_topics()
    publisher, operator = keys.trust(PUBLISHER), keys.trust(OPERATOR)
    # An archive of another broker: one goal, signed by the publisher, logged long ago.
    key, value, headers = goal("archived")
    assert publisher.signer is not None
    signed = tuple(publisher.signer.sign(key, value, headers))
    archived = StoredRecord(settings.events_topic, 0, 0, 1_000, key, value, signed)
    write_segment(segment_path(tmp_path / "old", settings.events_topic, 0, [archived]), [archived])
    # On this broker: two forged markers (unsigned; signed with an agent's real key), a goal after them,
    # then the operator's restore of the archive, and a goal after that.
    await send(transport, settings.events_topic, forged_marker(), Trust.off())
    await send(transport, settings.events_topic, forged_marker(), keys.trust(RESEARCH))
    await send(transport, settings.events_topic, goal("after forged markers"), publisher)
    report = await restore(settings, tmp_path / "old", force=True, trust=operator, transport=transport)
    assert report.records == {settings.events_topic: 1}
    await send(transport, settings.events_topic, goal("after the restore"), publisher)

    # The restore's markers are the operator's; the restored record is the archived one, its signature its own.
    verifier = Verifier(keys.file)
    logged = [StoredRecord.of(r) for r in transport.log.records(TopicPartition(settings.events_topic, 0))]
    restored = logged[3:6]  # after the two forged markers and the first goal
    assert [verifier.admit_record(r.key, r.value, r.headers, r.timestamp) for r in restored] == [
        OPERATOR, PUBLISHER, OPERATOR]
    assert (restored[1].key, restored[1].value, restored[1].headers, restored[1].timestamp) == (
        key, value, signed, 1_000)

    archiver = Archiver(settings, tmp_path / "new", transport=transport, verifier=verifier)
    async with archiver:
        await archiver.run(until_idle=True)
    kept = list(Archive(tmp_path / "new").records(".events"))
    # The forged markers are archived like any record and silenced nothing; the operator's bracket
    # still keeps the restored record (already archived elsewhere) and its own markers out.
    assert [topic_of(r) for r in kept] == ["marker", "marker", "after forged markers", "after the restore"]


async def test_a_forged_restore_marker_on_the_registry_does_not_make_a_later_retirement_restored(
        keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    transport, settings = memory("forgedregistry")
    await transport.ensure_topics()
    topics = (settings.registry_topic, settings.events_topic, settings.partitions)
    agent = keys.trust(RESEARCH).producer(transport.producer())
    await agent.start()
    await announce(agent, *topics, research.agent.contract(), "choreo://agent/report/research")
    await agent.stop()
    await send(transport, settings.registry_topic, forged_marker(), Trust.off())
    await send(transport, settings.registry_topic, forged_marker(), keys.trust(RESEARCH))
    # The operator retires the step: honoured, unless a forged bracket made this tombstone "restored"
    # (a restored tombstone removes only a restored contract).
    operator = keys.trust(OPERATOR).producer(transport.producer())
    await operator.start()
    await retire(operator, *topics, "report", "research", "choreo://cli/retire")
    await operator.stop()

    registry = Registry(transport, verifier=Verifier(keys.file))  # the coordinator's and agents' reader
    await registry.start()
    try:
        await registry.catch_up()
    finally:
        await registry.stop()
    assert "report/research" not in registry.contracts
    # `choreo history`'s reader, believing the services' policy (CHOREO_POLICY).
    monkeypatch.delenv("CHOREO_VERIFY", raising=False)
    monkeypatch.setenv("CHOREO_POLICY", str(keys.file.path))
    async with History(settings, transport) as reader:
        assert "report/research" not in reader.registry.contracts
