"""One consumer-group member's lifecycle, shared by agents, the coordinator and the archiver.

The rule it keeps: **a partition's records are handled only after that partition's set-up is
complete** (committed position, look-back of past results, the end of a silent replay: whatever
the service needs), **and the set-up never replaces state that handling created.** Revocation
and commits never race on shared state.

Why it has to be written down: aiokafka makes a new assignment active (fetchable) *before* it
awaits `on_partitions_assigned`, so records of a partition can be fetched while its set-up is still
awaiting the broker. Handling them then decided from half-built state, and the set-up replaced what
handling had created: a second coordinator joining a group lost 3-5 of 40 sagas, and an agent
taking over a partition re-ran steps whose results were already in the log. Here a partition is
paused before the set-up's first await, its records are dropped until the set-up installs its state
(the set-up ends by seeking to its start, so nothing dropped is skipped), and only then resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

from ..errors import SetUpError
from ._offsets import Cadence, PartitionProgress
from ._port import CommitFailedError, Consumer, Record, TopicPartition, Transport

log = logging.getLogger("choreograph.member")

S = TypeVar("S")

SetUp = Callable[[Consumer, set[TopicPartition]], Awaitable[dict[TopicPartition, tuple[int, S]]]]
"""Builds each assigned partition's state: `{tp: (position to read from, state)}`."""
Batch = list[tuple[TopicPartition, S, list[Record]]]
"""Fetched records of partitions that are set up, each with its partition's state."""
Release = Callable[[dict[TopicPartition, S]], Awaitable[None]]
"""Finishes with revoked partitions (drain, flush): their records are no longer handed out."""


class GroupMember(Generic[S]):
    """Membership of one consumer group, with partition set-up gated before any record is handled.

    Args:
        transport: The broker port.
        group_id: The consumer group.
        topics: Topics to subscribe to.
        set_up: Called with the newly assigned partitions (already paused); returns each one's start
            position and state. It may await the broker freely: no record of these partitions is
            handed out before it returns.
        progress: The commit bookkeeping inside a partition's state.
        release: Called with revoked partitions' states before they are committed and dropped.
        on_ready: Called once new partitions are installed and resumed (e.g. to settle sagas).
        commit_interval_s: Period of `commit_due()`.
        **consumer_options: Passed to the transport's consumer (auto_offset_reset, max_poll_records).
    """

    def __init__(self, transport: Transport, group_id: str, topics: list[str], *, set_up: SetUp[S],
                 progress: Callable[[S], PartitionProgress], release: Release[S] | None = None,
                 on_ready: Callable[[dict[TopicPartition, S]], Awaitable[None]] | None = None,
                 commit_interval_s: float = 0.25, **consumer_options: Any) -> None:
        self.transport = transport
        self.group_id = group_id
        self.topics = topics
        self.partitions: dict[TopicPartition, S] = {}  # set up and not revoked: the only ones handled
        self.consumer: Consumer
        self.commit_due = Cadence(commit_interval_s)
        self._set_up = set_up
        self._progress = progress
        self._release = release
        self._on_ready = on_ready
        self._options = consumer_options
        self._generation = 0  # bumped by each revocation: a set-up overtaken by one installs nothing
        self._joined: asyncio.Event | None = None
        # An error in a rebalance listener is logged and swallowed by aiokafka: the member would
        # never be ready, or would go on without the partitions. Kept here, raised to the service.
        self._failure: BaseException | None = None
        # Held while a fetched batch is handled, and by a revocation: a partition is never revoked
        # (committed, handed to another member) halfway through handling its records.
        self._handling = asyncio.Lock()

    async def join(self) -> None:
        """Start the consumer, subscribe, and return once the first assignment is set up."""
        self._joined = asyncio.Event()
        self.consumer = self.transport.consumer(group_id=self.group_id, **self._options)
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=self)
        await self._joined.wait()
        self.check()

    def check(self) -> None:
        """Raise SetUpError if setting up or releasing partitions failed (the service must stop)."""
        if self._failure is not None:
            raise SetUpError(f"{self.group_id}: partition set-up failed: {self._failure!r}") from self._failure

    async def leave(self) -> None:
        """Stop the consumer (leaving the group). Commit first if the service wants its progress kept."""
        await self.consumer.stop()

    @contextlib.asynccontextmanager
    async def batch(self, timeout_ms: int, max_records: int) -> AsyncIterator[Batch[S]]:
        """Fetch, then hold off revocations while the caller handles the records.

        Only records of partitions that are set up are yielded, each with its partition's state.
        Records of other partitions are dropped: not set up yet, or revoked; a set-up seeks back
        to its start, so none is skipped.
        """
        self.check()
        fetched = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        async with self._handling:
            yield [(tp, state, records) for tp, records in fetched.items()
                   if (state := self.partitions.get(tp)) is not None]

    async def commit(self, partitions: Mapping[TopicPartition, S] | None = None) -> None:
        """Commit each partition whose committable offset moved since its last commit.

        The offsets are taken from a snapshot, and the bookkeeping updated is the snapshot's: a
        revocation that lands while the commit is awaited cannot make it fail (it once killed an
        agent with a KeyError) nor make it update a partition's successor.
        """
        states = dict(self.partitions if partitions is None else partitions)
        moved = {tp: (p, p.committable()) for tp, s in states.items()
                 if (p := self._progress(s)).committable() != p.committed}
        if not moved:
            return
        try:
            await self.consumer.commit({tp: offset for tp, (_, offset) in moved.items()})
        except CommitFailedError as exc:
            # A rebalance landed while committing: those partitions' next owner starts from the
            # last commit that was taken; tracking records make the re-read harmless.
            log.warning("%s: commit not taken (%s); the partitions' next owner re-reads from the last one",
                        self.group_id, exc)
            return
        for progress, offset in moved.values():
            progress.committed = offset

    def lags(self) -> dict[TopicPartition, int]:
        """Records of each set-up partition not handled yet: the log end its last fetch saw minus its next offset.

        Local values only (no broker call); a partition not fetched yet is left out. For metrics:
        call it on the service's event loop.
        """
        lags: dict[TopicPartition, int] = {}
        for tp, state in self.partitions.items():
            try:
                end = self.consumer.highwater(tp)
            except (AssertionError, RuntimeError):  # aiokafka asserts, the memory log raises: not assigned now
                continue
            if end is not None:
                lags[tp] = max(0, end - self._progress(state).next)
        return lags

    # the consumer's rebalance listener ------------------------------------------------------------

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Set up new partitions while they are paused, install their state, then resume them."""
        try:
            await self._assign(assigned)
        except Exception as exc:
            log.error("%s: setting up partitions %s failed; stopping: %r", self.group_id,
                      sorted(tp.partition for tp in assigned), exc)
            self._failure = self._failure or exc
            if self._joined is not None:
                self._joined.set()

    async def _assign(self, assigned: set[TopicPartition]) -> None:
        fresh = {tp for tp in assigned if tp not in self.partitions}
        if fresh:
            self.consumer.pause(*fresh)  # before the first await: nothing of these is handed out
            generation = self._generation
            states = await self._set_up(self.consumer, fresh)
            if generation != self._generation:
                return  # revoked while setting up; the next assignment sets up again
            for tp, (position, state) in states.items():
                self.consumer.seek(tp, position)
                # Never replace: a partition's state exists only once its set-up is done.
                self.partitions.setdefault(tp, state)
            self.consumer.resume(*fresh)
            if self._on_ready is not None:
                async with self._handling:
                    await self._on_ready({tp: self.partitions[tp] for tp in fresh if tp in self.partitions})
        log.info("%s: assigned %s", self.group_id, sorted(tp.partition for tp in assigned))
        if self._joined is not None:
            self._joined.set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Stop handing out revoked partitions at once, let the service finish them, commit them."""
        try:
            await self._revoke(revoked)
        except Exception as exc:
            log.error("%s: releasing partitions failed; stopping: %r", self.group_id, exc)
            self._failure = self._failure or exc

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        self._generation += 1
        async with self._handling:
            gone = {tp: self.partitions.pop(tp) for tp in revoked if tp in self.partitions}
        if not gone:
            return
        if self._release is not None:
            await self._release(gone)
        await self.commit(gone)
