"""Helpers of the transport contract suite and the memory log tests: members, journals, clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from choreograph.transport import (
    Consumer,
    Producer,
    Record,
    TopicPartition,
    Transport,
)

DEADLINE_S = 60.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def clock_past(ms: int) -> None:
    """Wait until the wall clock reads later than `ms` (a millisecond tick, not a guess)."""
    deadline = time.monotonic() + 5
    while now_ms() <= ms:
        assert time.monotonic() < deadline, "the clock does not advance"
        await asyncio.sleep(0.001)


class Journal:
    """An append-only list of what happened, and waiting until a condition on it holds."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []
        self._changed = asyncio.Event()

    def add(self, *entry: Any) -> None:
        self.entries.append(entry)
        self._changed.set()

    async def until(self, predicate: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate():
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}; journal: {self.entries}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def index(self, predicate: Callable[[tuple[Any, ...]], bool]) -> int:
        """Index of the first entry matching, or a failure."""
        for i, entry in enumerate(self.entries):
            if predicate(entry):
                return i
        pytest.fail(f"no such entry in {self.entries}")


class Member:
    """A group member under test: its consumer, what it was given and what it consumed.

    Its revoke callback hands over as our services do: it commits the next offset of every revoked
    partition it consumed from (when `commit_on_revoke`). `owners` is shared by the members of a
    test: the partition -> member map, which must never give one partition to two members.
    """

    def __init__(self, name: str, consumer: Consumer, journal: Journal, owners: dict[TopicPartition, str],
                 commit_on_revoke: bool) -> None:
        self.name = name
        self.consumer = consumer
        self.journal = journal
        self.owners = owners
        self.commit_on_revoke = commit_on_revoke
        self.next: dict[TopicPartition, int] = {}
        self.got: list[Record] = []
        self.violations: list[str] = []

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        handover = {tp: self.next[tp] for tp in revoked if tp in self.next}
        if self.commit_on_revoke and handover:
            await self.consumer.commit(handover)
        for tp in revoked:
            if self.owners.get(tp) == self.name:
                del self.owners[tp]
        self.journal.add(self.name, "revoked", frozenset(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            if self.owners.get(tp, self.name) != self.name:
                self.violations.append(f"{tp} given to {self.name} while {self.owners[tp]} owns it")
            self.owners[tp] = self.name
        self.journal.add(self.name, "assigned", frozenset(assigned))

    def assigned_events(self) -> list[frozenset[TopicPartition]]:
        return [e[2] for e in self.journal.entries if e[0] == self.name and e[1] == "assigned"]

    async def poll(self, timeout_ms: int = 100) -> None:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms)
        for tp, records in batch.items():
            self.got.extend(records)
            self.next[tp] = records[-1].offset + 1
        if batch:
            self.journal.add(self.name, "got", sum(len(r) for r in batch.values()))

    def offsets(self, since: int = 0) -> list[tuple[int, int]]:
        """(partition, offset) of each record consumed, from the `since`-th on."""
        return [(r.partition, r.offset) for r in self.got[since:]]


async def poll_until(members: Iterable[Member], predicate: Callable[[], bool], what: str,
                     timeout_s: float = DEADLINE_S) -> None:
    """Poll every member in turn until `predicate` holds."""
    members = list(members)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            got = {m.name: m.offsets() for m in members}
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}; consumed: {got}")
        for member in members:
            await member.poll()


class Clients:
    """Producers and consumers of one test, all stopped at its end."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.journal = Journal()
        self.owners: dict[TopicPartition, str] = {}
        self._started: list[Producer | Consumer] = []

    async def producer(self) -> Producer:
        producer = self.transport.producer()
        await producer.start()
        self._started.append(producer)
        return producer

    async def member(self, name: str, group: str, *, commit_on_revoke: bool = True) -> Member:
        """A started consumer in `group`, subscribed to the events topic with a `Member` listener."""
        consumer = self.transport.consumer(group_id=group)
        await consumer.start()
        self._started.append(consumer)
        member = Member(name, consumer, self.journal, self.owners, commit_on_revoke)
        consumer.subscribe([self.transport.settings.events_topic], listener=member)
        return member

    async def close(self) -> None:
        for client in reversed(self._started):
            with contextlib.suppress(Exception):
                await client.stop()


