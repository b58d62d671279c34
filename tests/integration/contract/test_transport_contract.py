"""The transport contract: what choreograph relies on from Kafka, run on every transport (the
memory log and a real broker). A rule that holds on one and not the other fails here."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import pytest
from helpers.transport import Clients, Member, clock_past, now_ms, poll_until

from choreograph.transport import (
    Consumer,
    MemoryConsumer,
    MemoryTransport,
    RecordMetadata,
    TopicPartition,
    Transport,
)

pytestmark = pytest.mark.contract


def _group() -> str:
    return f"g{uuid.uuid4().hex[:8]}"


def _all_partitions(transport: Transport) -> set[TopicPartition]:
    s = transport.settings
    return {TopicPartition(s.events_topic, p) for p in range(s.partitions)}


async def _fill(clients: Clients, per_partition: int, *, first: int = 0) -> None:
    """`per_partition` records on every events partition, acknowledged."""
    producer = await clients.producer()
    topic = clients.transport.settings.events_topic
    futures = [await producer.send(topic, f"{p}:{n}".encode(), key=f"k{p}".encode(), partition=p)
               for n in range(first, first + per_partition) for p in range(clients.transport.settings.partitions)]
    await asyncio.gather(*futures)


async def _kill(member: Member) -> None:
    """The member dies without committing: a crash on the memory log; on Kafka, a stop (which
    commits nothing and calls no revoke callback of its own, as a crash would not)."""
    if isinstance(member.consumer, MemoryConsumer):
        member.consumer.crash()
    else:
        await member.consumer.stop()


async def test_same_key_same_partition_in_order(transport: Transport, clients: Clients) -> None:
    await transport.ensure_topics()
    topic, partitions = transport.settings.events_topic, transport.settings.partitions
    assert await transport.partition_count(topic) == partitions
    producer = await clients.producer()
    assert await producer.partitions_for(topic) == set(range(partitions))
    keys = [f"workflow-{i}".encode() for i in range(12)]
    sent = [(key, n, await producer.send(topic, b"%s:%d" % (key, n), key=key)) for n in range(5) for key in keys]
    acked: list[tuple[bytes, int, RecordMetadata]] = [(key, n, await future) for key, n, future in sent]

    for key, _, meta in acked:
        assert (meta.topic, meta.partition) == (topic, transport.partition_for(key, partitions))
    by_partition: dict[int, list[int]] = defaultdict(list)
    for _, _, meta in acked:  # acknowledged in send order, offsets 0, 1, 2, ... per partition
        by_partition[meta.partition].append(meta.offset)
    assert all(offsets == list(range(len(offsets))) for offsets in by_partition.values())

    read: dict[bytes, list[tuple[int, int, bytes | None]]] = defaultdict(list)
    async for record in transport.read(TopicPartition(topic, p) for p in range(partitions)):
        assert record.key is not None
        read[record.key].append((record.partition, record.offset, record.value))
    for key in keys:
        entries = read[key]
        assert [value for _, _, value in entries] == [b"%s:%d" % (key, n) for n in range(5)]
        assert {partition for partition, _, _ in entries} == {transport.partition_for(key, partitions)}
        assert [offset for _, offset, _ in entries] == sorted(offset for _, offset, _ in entries)


async def test_commit_and_a_new_member_resumes_at_the_committed_offset(transport: Transport,
                                                                       clients: Clients) -> None:
    await transport.ensure_topics()
    tp, other = TopicPartition(transport.settings.events_topic, 0), TopicPartition(transport.settings.events_topic, 1)
    producer = await clients.producer()
    await asyncio.gather(*[await producer.send(tp.topic, b"%d" % n, key=b"k", partition=0) for n in range(10)])
    group = _group()

    a = await clients.member("A", group, commit_on_revoke=False)
    await poll_until([a], lambda: len(a.got) >= 10, "A to read partition 0")
    assert a.offsets() == [(0, n) for n in range(10)]
    assert await a.consumer.committed(tp) is None
    await a.consumer.commit({tp: 4})
    assert await a.consumer.committed(tp) == 4
    assert await a.consumer.committed(other) is None
    await a.consumer.stop()

    b = await clients.member("B", group)
    await clients.journal.until(lambda: tp in clients.owners and clients.owners[tp] == "B", "B to own partition 0")
    assert await b.consumer.committed(tp) == 4
    assert await b.consumer.position(tp) == 4
    await poll_until([b], lambda: len(b.got) >= 6, "B to read partition 0 from the committed offset")
    assert b.offsets() == [(0, n) for n in range(4, 10)]


async def test_uncommitted_records_come_again_to_the_next_owner(transport: Transport, clients: Clients) -> None:
    await transport.ensure_topics()
    everything = _all_partitions(transport)
    group = _group()
    a = await clients.member("A", group)
    await clients.journal.until(lambda: len(clients.owners) == len(everything), "A to own every partition")
    b = await clients.member("B", group)
    await clients.journal.until(lambda: set(clients.owners.values()) == {"A", "B"}, "A and B to share partitions")
    mine = {tp for tp, owner in clients.owners.items() if owner == "A"}
    await _fill(clients, 3)
    await poll_until([a, b], lambda: len(a.got) + len(b.got) >= 12, "A and B to read 3 records per partition")
    await a.consumer.commit({tp: 1 for tp in mine})  # A finished only the first record of each

    mark = len(b.got)
    await _kill(a)
    await clients.journal.until(lambda: clients.owners.keys() == everything and set(clients.owners.values()) == {"B"},
                                "B to own every partition")
    await _fill(clients, 1, first=3)  # a sentinel per partition: anything redelivered comes before it
    await poll_until([b], lambda: sum(offset == 3 for _, offset in b.offsets(mark)) == len(everything),
                     "B to read every sentinel")
    expected = sorted([(tp.partition, n) for tp in mine for n in (1, 2)] + [(tp.partition, 3) for tp in everything])
    assert sorted(b.offsets(mark)) == expected, "not exactly the records past the dead member's commit came again"


async def test_rebalance_between_two_members(transport: Transport, clients: Clients) -> None:
    await transport.ensure_topics()
    everything = _all_partitions(transport)
    group = _group()
    a = await clients.member("A", group)
    await clients.journal.until(lambda: len(clients.owners) == len(everything), "A to own every partition")
    await _fill(clients, 2)
    await poll_until([a], lambda: len(a.got) >= 8, "A to read the first records")

    mark = len(a.got)
    joined = len(clients.journal.entries)
    b = await clients.member("B", group)
    await clients.journal.until(
        lambda: set(clients.owners.values()) == {"A", "B"} and clients.owners.keys() == everything,
        "A and B to share every partition")
    assert a.violations == b.violations == []
    assert a.consumer.assignment().isdisjoint(b.consumer.assignment())
    assert a.consumer.assignment() | b.consumer.assignment() == everything
    events = clients.journal.entries
    a_revoked = clients.journal.index(lambda e: e[:2] == ("A", "revoked") and e[2] == everything)
    b_assigned = clients.journal.index(lambda e: e[:2] == ("B", "assigned") and bool(e[2]))
    b_revoked = clients.journal.index(lambda e: e[:2] == ("B", "revoked"))
    a_reassigned = joined + next(i for i, e in enumerate(events[joined:]) if e[:2] == ("A", "assigned"))
    assert a_revoked < b_assigned, "A's partitions were given to B before A's revoke callback ran"
    assert b_revoked < a_reassigned, "A was assigned before B's revoke callback ran"

    await _fill(clients, 2, first=2)
    await poll_until([a, b], lambda: len(a.got) - mark + len(b.got) >= 8, "A and B to read the new records")
    after = sorted(a.offsets(mark) + b.offsets())
    assert after == sorted((tp.partition, n) for tp in everything for n in (2, 3)), "lost or duplicated records"
    for member in (a, b):
        assert {p for p, _ in member.offsets(mark if member is a else 0)} == {
            tp.partition for tp in member.consumer.assignment()}


async def test_compacted_topic_keeps_the_latest_value_per_key(transport: Transport, clients: Clients) -> None:
    await transport.ensure_topics()
    tp = TopicPartition(transport.settings.registry_topic, 0)
    producer = await clients.producer()
    writes = [(b"a", b"a1"), (b"b", b"b1"), (b"a", b"a2"), (b"c", b"c1"), (b"b", b"b2"), (b"a", b"a3")]
    for key, value in writes:
        await producer.send_and_wait(tp.topic, value, key=key)

    latest = {record.key: record.value async for record in transport.read([tp])}
    assert latest == {b"a": b"a3", b"b": b"b2", b"c": b"c1"}
    if isinstance(transport, MemoryTransport):
        assert transport.log.compact(tp.topic) == 3
        kept = [(r.offset, r.key, r.value) async for r in transport.read([tp])]
        assert kept == [(3, b"c", b"c1"), (4, b"b", b"b2"), (5, b"a", b"a3")]
        assert await transport.end_offsets([tp]) == {tp: 6}


async def test_end_offset_is_the_next_offset_to_be_written(transport: Transport, clients: Clients) -> None:
    await transport.ensure_topics()
    topic = transport.settings.events_topic
    tp, empty = TopicPartition(topic, 1), TopicPartition(topic, 2)
    producer = await clients.producer()
    assert await transport.end_offsets([tp, empty]) == {tp: 0, empty: 0}
    for size, end in ((7, 7), (5, 12)):  # sent without waiting, so several records share a batch
        futures = [await producer.send(topic, b"%d" % n, partition=1) for n in range(size)]
        metas = await asyncio.gather(*futures)
        assert [m.offset for m in metas] == list(range(end - size, end))
        assert await transport.end_offsets([tp, empty]) == {tp: end, empty: 0}
    async with transport.reader([tp]) as reader:
        assert await transport.true_ends(reader, [tp]) == {tp: 12}


async def test_offsets_for_times_finds_the_first_record_at_or_after(transport: Transport, clients: Clients) -> None:
    await transport.ensure_topics()
    tp = TopicPartition(transport.settings.events_topic, 3)
    producer = await clients.producer()
    before_first = now_ms()
    first = [await producer.send_and_wait(tp.topic, b"first", partition=3) for _ in range(3)]
    await clock_past(max(now_ms(), *(m.timestamp or 0 for m in first)))
    before_second = now_ms()
    for _ in range(3):
        await producer.send_and_wait(tp.topic, b"second", partition=3)

    async with transport.reader([tp]) as reader:
        found = (await reader.offsets_for_times({tp: before_first}))[tp]
        assert found is not None
        assert found.offset == 0
        assert found.timestamp >= before_first
        found = (await reader.offsets_for_times({tp: before_second}))[tp]
        assert found is not None
        assert found.offset == 3
        assert found.timestamp >= before_second
        assert (await reader.offsets_for_times({tp: now_ms() + 3_600_000}))[tp] is None


async def _race(clients: Clients, producers: int, per_producer: int) -> set[tuple[int, int]]:
    """`producers` producers, each appending `per_producer` records to every events partition at
    once; the (partition, offset) of every acknowledged record."""
    transport = clients.transport
    topic, partitions = transport.settings.events_topic, transport.settings.partitions

    async def one() -> list[tuple[int, int]]:
        producer = await clients.producer()
        acked = []
        for n in range(per_producer):
            futures = [await producer.send(topic, b"%d" % n, partition=p) for p in range(partitions)]
            acked += [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
        return acked

    return {at for acked in await asyncio.gather(*(one() for _ in range(producers))) for at in acked}


# Tansu's fetches slow down as a partition's batch count grows (README, compatibility): 8 rounds keep
# each partition under 4,000 records.
ROUNDS = 8


async def _take(reader: Consumer) -> list[tuple[int, int]]:
    batch = await reader.getmany(timeout_ms=50)
    return [(tp.partition, record.offset) for tp, records in batch.items() for record in records]


async def test_a_live_reader_reads_every_offset_while_producers_race(transport: Transport, clients: Clients) -> None:
    """Kafka's high watermark covers only readable offsets, so a reader never skips one. Tansu can
    show offset N+1 before N under concurrent producers (bench/probes/fetch_gaps.py); the consumer
    must hold at such a hole until N is readable. On Kafka, five rounds at least (about 1,900
    records each), and more, up to ROUNDS, until a hole was actually met where the broker is known
    to make them, so a pass proves the scenario happened."""
    await transport.ensure_topics()
    tps = sorted(_all_partitions(transport))
    loop = asyncio.get_running_loop()
    read: list[tuple[int, int]] = []
    acked: set[tuple[int, int]] = set()
    async with transport.reader(tps) as reader:
        for tp in tps:
            reader.seek(tp, 0)
        contiguity = getattr(reader, "contiguity", None)
        rounds = 1 if isinstance(transport, MemoryTransport) else 5
        for round_ in range(ROUNDS):
            racing = asyncio.ensure_future(_race(clients, producers=8, per_producer=60))
            while not racing.done():
                read += await _take(reader)
            acked |= racing.result()
            deadline = loop.time() + 10
            while not acked <= set(read) and loop.time() < deadline:
                read += await _take(reader)
            if round_ + 1 >= rounds and (contiguity is None or contiguity.refetched):
                break
    missing = sorted(acked - set(read))
    assert not missing, f"{len(missing)} offsets acknowledged but never read, first {missing[:10]}"
    for partition in {p for p, _ in read}:
        offsets = [o for p, o in read if p == partition]
        assert offsets == sorted(set(offsets)), f"partition {partition} read out of order or twice"
    if contiguity is not None and not contiguity.refetched:
        # Holes come in bursts (0 to 3 per 2,000 records per probe run, and some runs of 10,000 with
        # none): nothing lost, but nothing proven about holes either, and the run says so.
        pytest.skip(f"the broker made no hole in {ROUNDS} rounds: every record was read, no hole was met")
