"""`choreo index run`: a service keeping the workflow index, a projection of the events topic.

It reads `<ns>.events` in its own group (`<ns>.index`), folds every believed record into one row per
workflow (see _summary) and writes the rows a batch changed with each partition's next offset in one
SQLite transaction (see _store). On a new assignment it seeks each partition to the offset stored
with the rows, not to the group's committed one: the group's commits are kept for `choreo ps`'s lag
only. A stored offset beyond a partition's end, or another record than the one read last at the
offset before it (its timestamp and event id are stored), means the log is not the one indexed (a
fresh broker, or an archive restored into a new cluster at new offsets): the store is dropped and
rebuilt from the log's start, logged at WARNING.

One indexer per namespace and CHOREO_HOME: a second member of the group would take some partitions
and leave the first one's rows of them stale.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Literal

from ..security._verify import Verifier
from ..transport._kafka import Kafka
from ..transport._keyring import service_verifier
from ..transport._lifecycle import ServiceBase
from ..transport._member import GroupMember
from ..transport._offsets import Cadence, PartitionProgress
from ..transport._port import Consumer, TopicPartition, Transport
from ..transport._registry import framework_store
from ..transport._settings import Settings, run_dir
from ._decode import indexed_event
from ._store import Indexed, IndexStore, index_path, record_mark

log = logging.getLogger("choreograph.index")

FROM_ENVIRONMENT: Literal["environment"] = "environment"
# A record costs ~140 us here (a signature check: 62 us on an idle machine, measured 140 us on a busy
# 2-core one, most of the indexing time of `python -m bench --only index`), so a 2,000-record batch
# would hold the event loop ~0.3 s: it yields every 256 records, and the group's heartbeats (a third
# of the session timeout, 1 s on Tansu) are never held up by a batch.
_YIELD_EVERY = 256


class Indexer(ServiceBase):
    """The index service: `async with Indexer(settings) as i: await i.run()`.

    Args:
        settings: Broker, namespace and topics.
        path: The index file; by default `<CHOREO_HOME>/index/<namespace>.sqlite`.
        transport: The broker port; Kafka (aiokafka) unless given.
        verifier: What records must pass to be folded; by default the services' policy
            (transport.service_verifier: none with CHOREO_VERIFY=off); None: every record is folded.
        ready_file: Written once the indexer is ready (`choreo up` waits for it).
        max_records: The largest batch folded in one transaction.

    Attributes:
        folded: Believed events folded by this instance.
        rebuilt: Whether this instance dropped the store and rebuilt it (another log, or a file of
            another schema version).
    """

    def __init__(self, settings: Settings, path: Path | None = None, *, transport: Transport | None = None,
                 verifier: Verifier | Literal["environment"] | None = FROM_ENVIRONMENT,
                 ready_file: Path | None = None, max_records: int = 2000) -> None:
        self.settings = settings = replace(settings, client_id="choreo-index")
        self.path = path if path is not None else index_path(run_dir(), settings.namespace)
        self.verifier: Verifier | None = service_verifier() if verifier == FROM_ENVIRONMENT else verifier
        self.folded = 0
        self.rebuilt = False
        self._kafka: Transport = transport if transport is not None else Kafka(settings)
        self._ready_file = ready_file
        self._max_records = max_records
        self._store_schemas = framework_store()
        self._store: IndexStore | None = None
        self._touch_due = Cadence(5.0)
        self._stopping = asyncio.Event()
        self._member = GroupMember[PartitionProgress](
            self._kafka, settings.index_group, [settings.events_topic], set_up=self._set_up, progress=lambda p: p,
            max_poll_records=max_records)

    @property
    def store(self) -> IndexStore:
        """The open store (between start and stop)."""
        assert self._store is not None, "start the indexer first"
        return self._store

    async def start(self) -> None:
        """Open the store, join the index group; returns once the first partitions are set up."""
        self._store = IndexStore(self.path)
        self.rebuilt = self._store.migrated  # a file of another schema version: made again, read from the start
        await self._kafka.ensure_topics()
        await self._member.join()
        if self._ready_file is not None:
            self._ready_file.write_text("index")
        log.info("indexing %s into %s", self.settings.events_topic, self.path)

    async def stop(self) -> None:
        """Commit the group's offsets (for lag), leave the group, close the store."""
        self._stopping.set()
        try:
            await self._member.commit()
            await self._member.leave()
        finally:
            if self._store is not None:
                self._store.close()
                self._store = None

    async def run(self) -> None:
        """Index until stop is requested."""
        while not self._stopping.is_set():
            await self.step()

    async def step(self, timeout_ms: int = 200) -> int:
        """Fetch one batch and fold it; returns how many believed events it folded."""
        indexed: list[Indexed] = []
        marks: dict[int, str] = {}
        async with self._member.batch(timeout_ms=timeout_ms, max_records=self._max_records) as batch:
            for tp, progress, records in batch:
                if records:
                    marks[tp.partition] = record_mark(records[-1].timestamp, records[-1].headers)
                for r in records:
                    progress.seen(r.offset)
                    indexed.append((r.partition, r.offset, indexed_event(
                        r.key, r.value, r.headers, r.timestamp, self._store_schemas, self.verifier)))
                    if len(indexed) % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # let the group's heartbeats through
        store = self.store
        folded = store.fold_batch(self.settings.events_topic, indexed, marks) if indexed else 0
        self.folded += folded
        if not indexed and self._touch_due():
            store.touch()  # caught up and alive: `choreo ls` does not call it behind
        if self._member.commit_due():
            await self._member.commit()
        return folded

    async def caught_up(self) -> bool:
        """Whether every assigned partition is read to the end it has now."""
        consumer = self._member.consumer
        assigned = consumer.assignment()
        ends = await self._kafka.end_offsets(assigned)
        stored = self.store.offsets(self.settings.events_topic)
        return all(stored.get(tp.partition, 0) >= end for tp, end in ends.items() if end > 0)

    async def _set_up(self, consumer: Consumer, assigned: set[TopicPartition]) -> dict[
            TopicPartition, tuple[int, PartitionProgress]]:
        store = self.store
        topic = self.settings.events_topic
        stored = store.offsets(topic)
        ends = await self._kafka.end_offsets(assigned)
        beyond = {tp.partition: (stored[tp.partition], end) for tp, end in ends.items()
                  if stored.get(tp.partition, 0) > end}
        other = [] if beyond else await self._other_records(
            [tp for tp in assigned if stored.get(tp.partition, 0) > 0], stored, store.last_records(topic))
        if beyond or other:
            what = (f"stored offsets beyond the log's end (partition: (stored, end) {dict(sorted(beyond.items()))})"
                    if beyond else f"another record at the last offset read of partitions {sorted(other)}")
            log.warning("index %s: %s: not the log indexed (a fresh broker or a restored archive); rebuilding the "
                        "index from the start", self.path, what)
            store.reset()
            self.rebuilt = True
            stored = {}
        states = {}
        for tp in assigned:
            position = stored.get(tp.partition)
            if position is None:
                await consumer.seek_to_beginning(tp)
                position = await consumer.position(tp)
            states[tp] = (position, PartitionProgress(position, tp.partition))
        return states

    async def _other_records(self, tps: list[TopicPartition], stored: dict[int, int],
                             marks: dict[int, str | None]) -> list[int]:
        """The partitions whose record before the stored offset is not the one read then (another log).

        A partition whose mark is unknown, or whose record is gone (retention), is taken as the same log.
        """
        wanted = [tp for tp in tps if marks.get(tp.partition)]
        if not wanted:
            return []
        other = []
        async with self._kafka.reader(wanted) as reader:
            for tp in wanted:
                at = stored[tp.partition] - 1
                reader.seek(tp, at)
                batch = await reader.getmany(tp, timeout_ms=2000)
                found = next((r for r in batch.get(tp, ()) if r.offset == at), None)
                if found is not None and record_mark(found.timestamp, found.headers) != marks[tp.partition]:
                    other.append(tp.partition)
        return other
