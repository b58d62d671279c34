"""`choreo archive --to DIR`: a service copying every record of the namespace's topics to an archive.

Records go into archive segments (see _archive.py), read in the archiver's own consumer group,
resumable from its committed position.

Records are buffered and written as complete segments every `flush_interval_s` (and when a buffer
holds `segment_records`); only then are their offsets committed. A crash between the two re-writes
those records in another segment, and readers keep each (topic, partition, offset) once. Records a
restore re-published (inside a restore bracket) are already in an archive and are skipped. Given a
verifier, only a marker an operator signed opens or closes a bracket: a forged one is archived like
any record and silences nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from ..errors import ArchiveError
from ..events._records import StoredRecord
from ..security._verify import Rejected, Verifier
from ..transport._kafka import Kafka
from ..transport._lifecycle import ServiceBase
from ..transport._member import GroupMember
from ..transport._offsets import Cadence, PartitionProgress
from ..transport._port import Consumer, Record, TopicPartition, Transport
from ..transport._restore import MARKER_TYPES, on_marker
from ..transport._settings import Settings
from ._archive import Archive, hour_of, segment_path, write_segment

log = logging.getLogger("choreograph.archive")


class Archiver(ServiceBase):
    """The archiver service: `async with Archiver(settings, Path("archive")) as a: await a.run()`.

    Args:
        settings: Broker, namespace and topics.
        root: The archive directory.
        transport: The broker port; Kafka (aiokafka) unless given.
        flush_interval_s: How often buffered records are written as segments and committed.
        segment_records: A buffer this large is written at once.
        ready_file: Written once the archiver is ready (`choreo up` waits for it).
        verifier: Checks restore markers (only an operator's are honoured); None: every marker from
            the restore source is.
    """

    def __init__(self, settings: Settings, root: Path, *, transport: Transport | None = None,
                 flush_interval_s: float = 2.0, segment_records: int = 50_000, ready_file: Path | None = None,
                 verifier: Verifier | None = None) -> None:
        # The broker's metrics and logs name the archiver by its clients' id.
        self.settings = settings = replace(settings, client_id="choreo-archive")
        self.verifier = verifier
        self.root = root
        self.archived = 0
        self._kafka: Transport = transport if transport is not None else Kafka(settings)
        self._flush_due = Cadence(flush_interval_s)
        self._segment_records = segment_records
        self._ready_file = ready_file
        self._topics = [settings.events_topic, settings.registry_topic, settings.deadletter_topic]
        self._buffers: dict[TopicPartition, list[StoredRecord]] = {}
        self._stopping = asyncio.Event()
        self._member = GroupMember[PartitionProgress](
            self._kafka, settings.archive_group, self._topics, set_up=self._set_up, progress=lambda p: p,
            release=self._release, max_poll_records=5000)

    async def start(self) -> None:
        """Join the archive group; returns once the first partitions are set up."""
        self.root.mkdir(parents=True, exist_ok=True)
        await self._kafka.ensure_topics()
        await self._member.join()
        if self._ready_file is not None:
            self._ready_file.write_text("archive")
        log.info("archiving %s to %s", ", ".join(self._topics), self.root)

    async def stop(self) -> None:
        """Write what is buffered, commit, and leave the group."""
        self._stopping.set()
        try:
            await self._flush()
        finally:
            await self._member.leave()

    async def run(self, until_idle: bool = False) -> None:
        """Archive until stop is requested.

        Args:
            until_idle: Return instead once a look at every partition's end finds nothing left to read.
        """
        ends = await self._ends() if until_idle else {}
        while not self._stopping.is_set():
            async with self._member.batch(timeout_ms=200, max_records=5000) as batch:
                for tp, progress, records in batch:
                    for record in records:
                        self._take(tp, progress, record)
            if any(len(b) >= self._segment_records for b in self._buffers.values()) or self._flush_due():
                await self._flush()
            if until_idle and await self._caught_up(ends):
                ends = await self._ends()
                if await self._caught_up(ends):
                    return

    def _take(self, tp: TopicPartition, progress: PartitionProgress, record: Record) -> None:
        progress.seen(record.offset)
        event_type = source = None
        for name, value in record.headers:
            if name == "ce_type":
                event_type = value
            elif name == "ce_source":
                source = value
        if event_type is not None and event_type in MARKER_TYPES and self._believed(record) and \
                on_marker(progress, event_type, record.value, record.offset, source):
            return  # a restore's own: not archived (a restore of this archive writes its own)
        if progress.is_history(record.timestamp):
            return  # re-published from an archive by a restore
        self._buffers.setdefault(tp, []).append(StoredRecord.of(record))

    def _believed(self, record: Record) -> bool:
        """Whether a restore marker is an operator's (or nothing is verified); a forged one is logged."""
        if self.verifier is None:
            return True
        verdict = self.verifier.admit_record(record.key, record.value, record.headers, record.timestamp)
        if isinstance(verdict, Rejected):
            log.warning("archive: not honouring a restore marker at %s[%d]@%d: %s", record.topic, record.partition,
                        record.offset, verdict)
            return False
        return True

    async def _ends(self) -> dict[TopicPartition, int]:
        ends: dict[TopicPartition, int] = await self._kafka.end_offsets(self._member.consumer.assignment())
        return ends

    async def _caught_up(self, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            consumer = self._member.consumer
            if tp in consumer.assignment() and await consumer.position(tp) < end:
                return False
        return True

    async def _flush(self) -> None:
        """Write every buffer as complete segments (one per hour it spans), then commit past them."""
        for tp, records in list(self._buffers.items()):
            run: list[StoredRecord] = []
            for record in records:
                if run and hour_of(record.timestamp) != hour_of(run[0].timestamp):
                    await asyncio.to_thread(write_segment, segment_path(self.root, tp.topic, tp.partition, run), run)
                    run = []
                run.append(record)
            if run:
                await asyncio.to_thread(write_segment, segment_path(self.root, tp.topic, tp.partition, run), run)
            self.archived += len(records)
        self._buffers.clear()
        await self._member.commit()

    async def _set_up(self, consumer: Consumer, assigned: set[TopicPartition]) -> dict[
            TopicPartition, tuple[int, PartitionProgress]]:
        states = {}
        for tp in assigned:
            position = await self._resume_at(tp, await consumer.committed(tp))
            if position is None:
                await consumer.seek_to_beginning(tp)
                position = await consumer.position(tp)
            states[tp] = (position, PartitionProgress(position, tp.partition))
        return states

    async def _resume_at(self, tp: TopicPartition, committed: int | None) -> int | None:
        """Where to resume a partition.

        Past the committed offset, or past the last archived record when the broker still holds that
        very record (segments written, commit lost). A directory whose last record the broker does
        not hold is the archive of another log: refused.
        """
        archive = Archive(self.root)
        mine = [s for s in archive.segments() if s.topic == tp.topic and s.partition == tp.partition]
        if not mine:
            return committed
        last = max(mine, key=lambda s: s.last)
        if committed is not None and committed > last.last:
            return committed
        archived = [r for r in archive.read_segment(last) if r.offset == last.last]
        async with self._kafka.reader([tp]) as reader:
            reader.seek(tp, last.last)
            batch = await reader.getmany(tp, timeout_ms=2000)
        held = [StoredRecord.of(r) for r in batch.get(tp, ()) if r.offset == last.last]
        if not archived or not held or held[0] != archived[0]:
            raise ArchiveError(f"{self.root} holds an archive of another log: {tp.topic}[{tp.partition}] offset "
                               f"{last.last} differs from the broker's; archive into a new directory")
        return last.last + 1

    async def _release(self, gone: dict[TopicPartition, PartitionProgress]) -> None:
        """Write what is buffered (of every partition) before the revoked ones are committed."""
        await self._flush()  # the member commits the revoked partitions right after
