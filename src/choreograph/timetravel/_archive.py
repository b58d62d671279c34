"""The archive: every record of a namespace's topics in Avro Object Container Files on disk.

So history, state and replay outlive a memory-only broker.

Layout: DIR/<topic>/<YYYY-MM-DDTHH>/<partition>-<first offset>-<last offset>.avro, one segment per
topic, partition and hour of the records' timestamps (UTC), each record byte for byte with its key,
headers, offset and timestamp (schema: schemas/choreograph/archived_record.avsc). Segments are
written to a temporary name and renamed when complete, so a reader never sees half a segment.
`Archiver` (_archiver.py) writes them; `Archive` reads them; `restore` re-publishes them.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import fastavro

from ..errors import ArchiveError
from ..events._avro import SchemaStore
from ..events._envelope import RESTORE_SOURCE, Envelope, Kind, new_event_id
from ..events._models import Event, RestoreCompleted, RestoreStarted, load_schema, schema_root
from ..events._records import StoredRecord
from ..saga._entries import HistoryEntry
from ..saga._graph import Graph
from ..security._verify import Verifier
from ..transport._kafka import Kafka
from ..transport._keyring import operator_identity
from ..transport._port import Producer, TopicPartition, Transport
from ..transport._registry import Contracts
from ..transport._restore import MARKER_TYPES
from ..transport._settings import Settings
from ..transport._trust import Trust
from ._history import judge_by, shown_entries

SCHEMA = fastavro.parse_schema(dict(load_schema(schema_root() / "archive" / "archived_record.avsc").source))
SEGMENT = re.compile(r"^(\d+)-(\d+)-(\d+)\.avro$")


def hour_of(timestamp_ms: int) -> str:
    """The segment directory of a record's timestamp: its UTC hour, `YYYY-MM-DDTHH`."""
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%dT%H")


def segment_path(root: Path, topic: str, partition: int, records: list[StoredRecord]) -> Path:
    """Where the segment of `records` goes: named by the hour of the first and the first and last offsets."""
    return root / topic / hour_of(records[0].timestamp) / f"{partition}-{records[0].offset}-{records[-1].offset}.avro"


def write_segment(path: Path, records: list[StoredRecord]) -> None:
    """Write one complete segment: to a temporary file, flushed to disk, then renamed into place.

    Args:
        path: The segment's path (see segment_path); missing directories are created.
        records: The records, all of one topic and partition, in offset order; at least one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".avro.part")
    rows = ({"topic": r.topic, "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp,
             "key": r.key, "value": r.value, "headers": [{"name": k, "value": v} for k, v in r.headers]}
            for r in records)
    with open(partial, "wb") as out:
        fastavro.writer(out, SCHEMA, rows, codec="deflate",
                        metadata={"choreograph.topic": records[0].topic,
                                  "choreograph.partition": str(records[0].partition)})
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)


@dataclass(frozen=True)
class SegmentRef:
    """A segment file of an archive, and what its name says it holds.

    Attributes:
        path: The file.
        topic: The topic of its records.
        partition: Their partition.
        first: The first offset.
        last: The last offset.
    """

    path: Path
    topic: str
    partition: int
    first: int
    last: int


class Archive:
    """Reads an archive directory.

    A damaged segment is reported in `problems` (file and position), and the records before the
    damage are still returned.

    Args:
        root: The archive directory.

    Raises:
        ArchiveError: `root` is not a directory.
    """

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise ArchiveError(f"{root}: no such archive directory")
        self.root = root
        self.problems: list[str] = []
        self._store: SchemaStore | None = None
        self._contracts: Contracts | None = None

    def segments(self, topic_suffix: str | None = None) -> list[SegmentRef]:
        """The segments, by topic, partition and offsets; only topics ending in `topic_suffix` if given."""
        found = []
        for path in self.root.glob("*/*/*.avro"):
            match = SEGMENT.match(path.name)
            topic = path.parent.parent.name
            if match is None or (topic_suffix is not None and not topic.endswith(topic_suffix)):
                continue
            found.append(SegmentRef(path, topic, int(match[1]), int(match[2]), int(match[3])))
        return sorted(found, key=lambda s: (s.topic, s.partition, s.first, s.last, str(s.path)))

    def read_segment(self, segment: SegmentRef) -> Iterator[StoredRecord]:
        """The records of one segment, up to any damage (reported in `problems`)."""
        with open(segment.path, "rb") as stream:
            yield from self._rows(segment.path, stream)

    def _rows(self, path: Path, stream: BinaryIO) -> Iterator[StoredRecord]:
        """The records of an open segment file; at damage, a problem noted and the iteration ends."""
        index = 0
        try:
            for row in fastavro.reader(stream):
                if not isinstance(row, dict):
                    raise ValueError(f"a segment row is a {type(row).__name__}, not a record")
                yield StoredRecord(row["topic"], row["partition"], row["offset"], row["timestamp"], row["key"],
                                   row["value"], tuple((h["name"], h["value"]) for h in row["headers"]))
                index += 1
        except Exception as exc:  # fastavro raises assorted types on damage (EOF, bad sync, zlib, ...)
            self.problems.append(f"{path}: damaged at byte {stream.tell()} after {index} records "
                                 f"({type(exc).__name__}: {exc or 'truncated'}); the records before it are used")

    def records(self, topic_suffix: str | None = None) -> Iterator[StoredRecord]:
        """Every record, per topic and partition in offset order, each offset once.

        Args:
            topic_suffix: Only topics ending in it (such as ".events"), if given.

        Yields:
            The records.
        """
        seen: set[tuple[str, int, int]] = set()
        for segment in self.segments(topic_suffix):
            for record in self.read_segment(segment):
                where = (record.topic, record.partition, record.offset)
                if where not in seen:  # a segment re-written after a crash before its commit
                    seen.add(where)
                    yield record

    def contracts(self) -> Contracts:
        """The archived step contracts (and their schemas), as a registry reader knew them."""
        if self._contracts is None:
            self._contracts = Contracts()
            for record in self.records(".registry"):
                self._contracts.apply(record.value, key=record.key)
        return self._contracts

    @property
    def store(self) -> SchemaStore:
        """The framework's schemas and those of the archived contracts."""
        return self.contracts().store

    def catalog(self) -> Mapping[str, Graph]:
        """The step graph of every workflow the archived contracts announce."""
        return self.contracts().catalog

    def workflow_records(self, workflow_id: str) -> list[StoredRecord]:
        """The archived records of the events topic keyed by `workflow_id`, in offset order."""
        key = workflow_id.encode()
        return [r for r in self.records(".events") if r.key == key]

    def history(self, workflow_id: str, verifier: Verifier | None = None) -> list[HistoryEntry]:
        """The workflow's archived events, decoded, sensitive fields redacted (as `choreo history` shows them).

        Args:
            workflow_id: The workflow instance's id.
            verifier: Marks the events services refuse (see History.entries); None: nothing is marked.
        """
        return shown_entries(self.workflow_records(workflow_id), self.store, judge_by(verifier))


@dataclass
class RestoreReport:
    """What a restore did (`choreo archive restore` prints its JSON).

    Attributes:
        restore_id: The id of the restore, in its markers.
        records: Target topic -> how many records were re-published to it.
        problems: The damaged segments (see Archive.problems); records after the damage were not restored.
    """

    restore_id: str
    records: dict[str, int]  # by target topic
    problems: list[str]

    def json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {"restore_id": self.restore_id, "records": self.records, "problems": self.problems}


_SUFFIXES = (".events", ".registry", ".deadletter")


async def restore(settings: Settings, root: Path, *, force: bool = False, trust: Trust | None = None,
                  transport: Transport | None = None) -> RestoreReport:
    """Re-publish an archive into this namespace's topics, each partition inside a restore bracket.

    The records keep their keys, headers, values, timestamps, partitions and order (and so their
    signatures: they are not signed again); the bracket (see transport._restore) is a RestoreStarted
    marker before them and a RestoreCompleted after, signed by the operator `trust` signs as. Running
    services learn from the restored records and never act on them; a new agent group starts at the
    end; so a restore repeats no side effect and adds no event besides its markers. Offsets shift by
    what the partition held before (agents' announcements, the opening marker).

    Args:
        settings: The namespace to restore into.
        root: The archive directory.
        force: Restore even into a broker whose events topic holds workflow events or a restore.
        trust: The operator's signer (see transport.Trust): services that verify honour only markers
            an operator signed. None: the environment's `operator:<CHOREO_OPERATOR>`.
        transport: The broker port; Kafka (aiokafka) unless given.

    Returns:
        The report: how many records went to each topic, and any damaged segments.

    Raises:
        ArchiveError: `root` is not an archive directory, holds no archive (or no readable record),
            holds several namespaces, needs more partitions than a topic has, or (unless `force`) the
            broker already holds workflows.
    """
    archive = Archive(root)
    targets = {".events": settings.events_topic, ".registry": settings.registry_topic,
               ".deadletter": settings.deadletter_topic}
    groups: dict[tuple[str, int], list[StoredRecord]] = {}
    sources: dict[str, set[str]] = {}
    for record in archive.records():
        suffix = next((x for x in _SUFFIXES if record.topic.endswith(x)), None)
        if suffix is None:
            continue
        sources.setdefault(suffix, set()).add(record.topic)
        groups.setdefault((targets[suffix], record.partition), []).append(record)
    for suffix, topics in sources.items():
        if len(topics) > 1:
            raise ArchiveError(f"{root}: holds several namespaces' {suffix[1:]} topics {sorted(topics)}")
    if not groups:  # said before the broker is touched: restoring nothing is a mistake, not a success
        if archive.problems:
            raise ArchiveError(f"{root}: no record of its archive can be read: {archive.problems[0]}")
        raise ArchiveError(f"{root}: holds no archive (no segments <topic>/<hour>/<partition>-<first>-<last>.avro "
                           "of an events, registry or deadletter topic)")
    kafka: Transport = transport if transport is not None else Kafka(settings)
    await kafka.ensure_topics()
    for topic in {t for t, _ in groups}:
        count = await kafka.partition_count(topic)
        wanted = 1 + max(p for t, p in groups if t == topic)
        if wanted > count:
            raise ArchiveError(f"{topic} has {count} partitions; the archive needs {wanted} (create it so)")
    if not force:
        await refuse_unless_empty(kafka, settings)
    restore_id = new_event_id()
    counts: dict[str, int] = {}
    producer = kafka.producer()
    if trust is None:
        trust = Trust.from_env(operator_identity())
    markers = trust.producer(producer)  # the same producer: one order per partition
    await producer.start()
    try:
        for (topic, partition), records in sorted(groups.items()):
            await _restore_partition(producer, markers, topic, partition, records, restore_id, str(root))
            counts[topic] = counts.get(topic, 0) + len(records)
    finally:
        await producer.stop()
    return RestoreReport(restore_id, counts, archive.problems)


async def _restore_partition(producer: Producer, markers: Producer, topic: str, partition: int,
                             records: list[StoredRecord], restore_id: str, archive: str) -> None:
    """Re-publish one partition's records between its two restore markers; return once the broker has them.

    The records go out as archived (`producer`), the markers signed (`markers`).
    """
    until = max(r.timestamp for r in records)
    opening = RestoreStarted(restore_id=restore_id, archive=archive, records=len(records), until_timestamp=until)
    closing = RestoreCompleted(restore_id=restore_id, records=len(records))
    await _send_marker(markers, topic, partition, opening, restore_id)
    futures = [await producer.send(topic, value=r.value, key=r.key, headers=list(r.headers), partition=partition,
                                   timestamp_ms=r.timestamp) for r in records]
    await asyncio.gather(*futures)
    await _send_marker(markers, topic, partition, closing, restore_id)


async def _send_marker(producer: Producer, topic: str, partition: int, marker: Event, restore_id: str) -> None:
    """Publish a restore marker to one partition and wait for the broker to have it."""
    envelope = Envelope.new(type=marker.type_name(), source=RESTORE_SOURCE, workflow="",
                            workflow_id=f"restore/{restore_id}", kind=Kind.OTHER)
    await producer.send_and_wait(topic, value=marker.encode(), key=envelope.key, headers=envelope.headers(),
                                 partition=partition)


async def refuse_unless_empty(kafka: Transport, settings: Settings,
                             hint: str = "restore into an empty broker, or pass --force") -> None:
    """Refuse a broker whose events topic holds workflow events or a restore's markers.

    An archive goes into a broker that has no workflows yet (agents' announcements are fine); so
    does a sandbox re-run.

    Args:
        kafka: The broker's client.
        settings: The namespace whose events topic is read.
        hint: What to do instead, appended to the error.

    Raises:
        ArchiveError: The events topic holds an event of a kind other than "other", or a restore marker.
    """
    topic = settings.events_topic
    tps = [TopicPartition(topic, p) for p in range(await kafka.partition_count(topic))]
    async for record in kafka.read(tps):
        kind = dict(record.headers).get("ce_kind")
        event_type = dict(record.headers).get("ce_type")
        if event_type in MARKER_TYPES:
            raise ArchiveError(f"{topic} already holds a restore (marker at partition {record.partition} "
                               f"offset {record.offset}); {hint}")
        if kind is not None and kind != b"other":
            raise ArchiveError(f"{topic} already holds workflow events (partition {record.partition} offset "
                               f"{record.offset}); {hint}")
