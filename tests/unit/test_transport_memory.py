"""Rules of the memory log that only it can show: crash(), fault injection at await points, record
size, pause/resume, compaction itself. The rules it shares with Kafka are in tests/contract."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest
from helpers.transport import Journal

from choreograph.errors import SetUpError
from choreograph.transport import (
    CommitFailedError,
    GroupMember,
    MemoryConsumer,
    MemoryLog,
    MemoryTransport,
    Record,
    RecordTooLargeError,
    Settings,
    TopicPartition,
)

TOPIC = "m.events"
TP0, TP1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


@pytest.fixture
def log() -> MemoryLog:
    return MemoryLog()


@pytest.fixture
def transport(log: MemoryLog) -> MemoryTransport:
    return MemoryTransport(log, Settings(bootstrap_servers="memory", namespace="m", partitions=2))


class Listener:
    """Journals its callbacks; with `commit_on_revoke`, commits the positions it reached."""

    def __init__(self, name: str, consumer: MemoryConsumer, journal: Journal, commit_on_revoke: bool = False) -> None:
        self.name, self.consumer, self.journal, self.commit_on_revoke = name, consumer, journal, commit_on_revoke

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.commit_on_revoke and revoked:
            await self.consumer.commit({tp: await self.consumer.position(tp) for tp in revoked})
        self.journal.add(self.name, "revoked", frozenset(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.journal.add(self.name, "assigned", frozenset(assigned))


async def _member(transport: MemoryTransport, name: str, journal: Journal, group: str = "g",
                  commit_on_revoke: bool = False) -> MemoryConsumer:
    consumer = transport.consumer(group_id=group)
    await consumer.start()
    consumer.subscribe([TOPIC], listener=Listener(name, consumer, journal, commit_on_revoke))
    return consumer


async def _produce(transport: MemoryTransport, partition: int, count: int) -> None:
    producer = transport.producer()
    await producer.start()
    for n in range(count):
        await producer.send(TOPIC, b"%d" % n, partition=partition)


async def _waiting_fetch(log: MemoryLog, fetch: Coroutine[Any, Any, dict[TopicPartition, list[Record]]]
                         ) -> asyncio.Task[dict[TopicPartition, list[Record]]]:
    """Start `fetch` (a getmany finding nothing) and return once it waits for a change of the log."""
    entered = asyncio.Event()

    async def hook(operation: str) -> None:
        entered.set()  # the fetch goes on without a pause, to its wait, before this test resumes

    log.on_await = hook
    task = asyncio.create_task(fetch)
    await asyncio.wait_for(entered.wait(), 5)
    log.on_await = None
    assert not task.done()
    return task


async def _drain(consumer: MemoryConsumer) -> list[tuple[int, int]]:
    batch = await consumer.getmany(timeout_ms=0)
    return sorted((tp.partition, r.offset) for tp, records in batch.items() for r in records)


async def test_crash_calls_no_callback_commits_nothing_and_the_survivor_resumes_at_the_commit(
        transport: MemoryTransport, log: MemoryLog) -> None:
    await transport.ensure_topics()
    journal = Journal()
    a = await _member(transport, "A", journal, commit_on_revoke=True)
    await log.idle()
    b = await _member(transport, "B", journal, commit_on_revoke=True)
    await log.idle()
    assert a.assignment() == {TP0}  # round robin over member ids in join order
    assert b.assignment() == {TP1}
    await _produce(transport, 0, 5)
    assert await _drain(a) == [(0, n) for n in range(5)]
    await a.commit({TP0: 2})
    seen = len(journal.entries)

    a.crash()
    await log.idle()
    assert [e for e in journal.entries[seen:] if e[0] == "A"] == []
    assert log.committed("g", TP0) == 2
    assert b.assignment() == {TP0, TP1}
    assert await b.position(TP0) == 2
    assert await _drain(b) == [(0, 2), (0, 3), (0, 4)]
    with pytest.raises(RuntimeError, match="crashed"):
        await a.getmany()
    await b.stop()


async def test_a_stopping_member_leaves_without_its_own_revoke_callback(transport: MemoryTransport,
                                                                         log: MemoryLog) -> None:
    await transport.ensure_topics()
    journal = Journal()
    a = await _member(transport, "A", journal)
    b = await _member(transport, "B", journal)
    await log.idle()
    seen = len(journal.entries)
    await a.stop()
    await log.idle()
    assert journal.entries[seen:] == [("B", "revoked", frozenset({TP1})), ("B", "assigned", frozenset({TP0, TP1}))]
    await b.stop()


async def test_the_assignment_is_active_while_on_partitions_assigned_runs(transport: MemoryTransport,
                                                                          log: MemoryLog) -> None:
    await transport.ensure_topics()
    await _produce(transport, 0, 1)
    entered, release = asyncio.Event(), asyncio.Event()

    class Slow:
        async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            pass

        async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            entered.set()
            await release.wait()

    consumer = transport.consumer(group_id="g", auto_offset_reset="earliest")
    await consumer.start()
    consumer.subscribe([TOPIC], listener=Slow())
    await asyncio.wait_for(entered.wait(), 5)
    # The callback has not returned, yet a fetch already returns records of the new assignment:
    # the window in which a service may see records before it has set up its partition state.
    batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 5)
    assert [r.offset for r in batch[TP0]] == [0]
    release.set()
    await log.idle()
    await consumer.stop()


async def test_on_await_injects_a_join_and_the_rebalance_waits_for_the_running_callback(
        transport: MemoryTransport, log: MemoryLog) -> None:
    await transport.ensure_topics()
    journal = Journal()
    operations: list[str] = []
    joined: list[str] = []
    joiner = transport.consumer(group_id="g")

    async def hook(operation: str) -> None:
        operations.append(operation)
        if operation == "committed" and "start" not in joined:
            joined.append("start")
            await joiner.start()  # called from the hook: does not re-enter it
            joiner.subscribe([TOPIC], listener=Listener("B", joiner, journal))

    a = transport.consumer(group_id="g")

    class Checking(Listener):
        async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            self.journal.add("A", "assigning")
            for tp in assigned:
                await a.committed(tp)  # the await point where B joins
            await super().on_partitions_assigned(assigned)

    await a.start()
    log.on_await = hook
    a.subscribe([TOPIC], listener=Checking("A", a, journal))
    await log.idle()

    kinds = [e[:2] for e in journal.entries]
    assert kinds[:3] == [("A", "revoked"), ("A", "assigning"), ("A", "assigned")], kinds
    assert ("A", "revoked") in kinds[3:], kinds  # the next rebalance
    assert ("B", "assigned") in kinds[3:], kinds
    assert a.assignment() | joiner.assignment() == {TP0, TP1}
    assert not a.assignment() & joiner.assignment()
    assert "committed" in operations
    assert "start" not in operations
    log.on_await = None
    await a.stop()
    await joiner.stop()


async def test_on_await_can_crash_a_member_at_its_commit(transport: MemoryTransport, log: MemoryLog) -> None:
    await transport.ensure_topics()
    journal = Journal()
    a = await _member(transport, "A", journal)
    b = await _member(transport, "B", journal, commit_on_revoke=True)
    await log.idle()
    await _produce(transport, 0, 3)
    assert await _drain(a) == [(0, 0), (0, 1), (0, 2)]
    operations: list[str] = []

    async def crash_at_commit(operation: str) -> None:
        operations.append(operation)
        if operation == "commit" and a.member_id in log.group("g").members:
            a.crash()

    log.on_await = crash_at_commit
    with pytest.raises(CommitFailedError, match="crashed"):
        await a.commit({TP0: 3})
    await log.idle()
    # The rebalance the hook caused runs B's revoke callback, whose commit meets the hook too.
    assert operations.count("commit") == 2, operations
    log.on_await = None
    assert b.assignment() == {TP0, TP1}
    assert await _drain(b) == [(0, 0), (0, 1), (0, 2)]  # A committed nothing: all of it again
    await b.stop()


async def test_a_record_larger_than_a_request_is_refused(transport: MemoryTransport, log: MemoryLog) -> None:
    producer = transport.producer()
    await producer.start()
    with pytest.raises(RecordTooLargeError):
        await producer.send("big", b"x" * 1_048_576, key=b"k")
    with pytest.raises(RecordTooLargeError):
        await producer.send("big", b"x" * 1_000_000, key=b"k", headers=[("h", b"y" * 48_576)])
    meta = await producer.send_and_wait("big", b"x" * 1_048_000, key=b"k")
    assert meta.offset == 0
    assert len(log.records(TopicPartition("big", 0))) == 1


async def test_pause_and_resume(transport: MemoryTransport, log: MemoryLog) -> None:
    await transport.ensure_topics()
    await _produce(transport, 0, 2)
    await _produce(transport, 1, 2)
    async with transport.reader([TP0, TP1]) as reader:
        reader.pause(TP0)
        batch = await reader.getmany(timeout_ms=0)
        assert set(batch) == {TP1}
        assert await reader.getmany(TP0, timeout_ms=0) == {}
        waiting = await _waiting_fetch(log, reader.getmany(TP0, timeout_ms=60_000))
        reader.resume(TP0)
        batch = await asyncio.wait_for(waiting, 5)
        assert [r.offset for r in batch[TP0]] == [0, 1]


async def test_getmany_wakes_on_an_append_and_respects_max_records(transport: MemoryTransport,
                                                                  log: MemoryLog) -> None:
    await transport.ensure_topics()
    async with transport.reader([TP0]) as reader:
        assert await reader.getmany(timeout_ms=0) == {}
        waiting = await _waiting_fetch(log, reader.getmany(timeout_ms=60_000))
        await _produce(transport, 0, 5)
        batch = await asyncio.wait_for(waiting, 5)
        assert [r.offset for r in batch[TP0]] == [0, 1, 2, 3, 4]  # appended before the waiter ran
        reader.seek(TP0, 1)
        assert [r.offset for r in (await reader.getmany(max_records=3))[TP0]] == [1, 2, 3]
        assert reader.highwater(TP0) == 5
    small = transport.consumer(group_id=None, max_poll_records=2)
    await small.start()
    small.assign([TP0])
    assert [r.offset for r in (await small.getmany())[TP0]] == [0, 1]
    await small.stop()


async def test_a_position_past_the_end_resets_by_auto_offset_reset(transport: MemoryTransport) -> None:
    await transport.ensure_topics()
    await _produce(transport, 0, 3)
    for reset, expected in (("earliest", [0, 1, 2]), ("latest", [])):
        consumer = transport.consumer(group_id=None, auto_offset_reset=reset)
        await consumer.start()
        consumer.assign([TP0])
        consumer.seek(TP0, 100)
        assert [r.offset for r in (await consumer.getmany()).get(TP0, [])] == expected
        assert await consumer.position(TP0) == 3
        await consumer.stop()


async def test_compaction_keeps_offsets_and_removes_tombstones(transport: MemoryTransport, log: MemoryLog) -> None:
    log.create_topic("c", 1, compacted=True)
    tp = TopicPartition("c", 0)
    producer = transport.producer()
    await producer.start()
    for key, value in ((b"a", b"1"), (b"b", b"1"), (b"a", None), (b"b", b"2"), (b"d", b"1")):
        await producer.send_and_wait("c", value, key=key)
    failed = await producer.send("c", b"no key")
    with pytest.raises(ValueError, match="without a key"):
        await failed
    assert log.compact("c") == 3
    assert [(r.offset, r.key, r.value) async for r in transport.read([tp])] == [(3, b"b", b"2"), (4, b"d", b"1")]
    async with transport.reader([tp]) as reader:
        reader.seek(tp, 1)  # inside a gap: the next record is returned, and the position passes the end
        assert [r.offset for r in (await reader.getmany())[tp]] == [3, 4]
        assert await reader.position(tp) == 5
    log.create_topic("plain", 1)
    with pytest.raises(ValueError, match="not a compacted topic"):
        log.compact("plain")


async def test_keyless_records_go_round_robin_to_an_auto_created_topic(transport: MemoryTransport,
                                                                       log: MemoryLog) -> None:
    log.default_partitions = 3
    producer = transport.producer()
    await producer.start()
    metas = [await producer.send_and_wait("auto", b"v") for _ in range(6)]
    assert [m.partition for m in metas] == [0, 1, 2, 0, 1, 2]
    assert await producer.partitions_for("auto") == {0, 1, 2}
    await producer.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        await producer.send("auto", b"v")


async def test_a_failing_set_up_stops_the_member_instead_of_wedging_it(transport: MemoryTransport) -> None:
    # The listener's error is swallowed by the consumer (aiokafka logs it); join() used to wait forever.
    async def set_up(consumer: Any, assigned: set[TopicPartition]) -> dict[TopicPartition, tuple[int, Any]]:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    member = GroupMember[Any](transport, "g-fails", ["m.events"], set_up=set_up, progress=lambda s: s)
    await transport.ensure_topics()
    try:
        with pytest.raises(SetUpError, match="partition set-up failed"):
            await asyncio.wait_for(member.join(), 10)
    finally:
        await member.leave()
