"""A workflow's history: its events in log order, decoded.

The workflow id is the record key, so the whole history is on one partition of the events topic, and
a UUIDv7 workflow id carries its goal's publication time: the reader asks the broker for the first
offset at that time (ListOffsets by timestamp) and reads from there to the workflow's outcome, not
the partition from its start. Ids of other shapes are read from the partition's start (or --since).

`History.entries` (what `choreo history` prints) adds the workflow's dead letters, each right after
the record it is a copy of (kind "dead_letter", see dead_letter_entry), and shows payloads with their
sensitive fields redacted (see events._redact; `records` gives the bytes as logged). It checks each
record it shows against the policy, as the services do: one they refuse (unsigned, badly signed, or
its signer may not say it) is marked with their reason (`HistoryEntry.rejected`).
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Literal

from ..events._avro import SchemaStore
from ..events._envelope import workflow_time_ms
from ..events._records import StoredRecord
from ..events._redact import redact_payload
from ..saga._entries import HistoryEntry, entries_of, entry_of, is_outcome
from ..security._verify import Rejected, Verifier
from ..transport._deadletter import DeadLetter
from ..transport._dlq import DeadLetterBox
from ..transport._kafka import Kafka
from ..transport._keyring import service_verifier
from ..transport._port import Consumer, TopicPartition, Transport
from ..transport._registry import Registry
from ..transport._settings import Settings

# How far before the id's time to start reading. Kafka indexes CreateTime, which the client that
# made the id also stamps; Tansu indexes the broker's append time (measured: its ListOffsets by
# timestamp ignores the records' own timestamps), which follows the id unless clocks are skewed.
SEEK_SLACK_MS = 1_000


class Verification(enum.Enum):
    """Where a history reader's verifier comes from when none is given."""

    FROM_ENVIRONMENT = "environment"
    """The services' policy (transport.service_verifier): none with CHOREO_VERIFY=off."""


FROM_ENVIRONMENT = Verification.FROM_ENVIRONMENT


class History:
    """Reads workflows' records from the events topic: `async with History(settings) as h: ...`.

    Entering it starts a registry reader and catches up with it, so `store` knows the writer schema of
    every announced event type. Its contracts are learned whoever signed them (they serve to decode),
    but a restore bracket opens only at a marker the verifier admits as an operator's.

    Args:
        settings: The broker and namespace to read.
        transport: The broker port; Kafka (aiokafka) unless given.
        verifier: What `entries` checks records against; by default the services' policy (none with
            CHOREO_VERIFY=off); None: nothing is checked, nothing marked.

    Attributes:
        settings: The broker and namespace read.
        registry: The registry reader: announced contracts and their schemas.
        verifier: What records are checked against (None: nothing is).
        scanned: How many records were fetched from the broker, the workflow's and others'.

    Raises:
        ConfigurationError: By default, as transport.service_verifier (an unreadable policy).
    """

    def __init__(self, settings: Settings, transport: Transport | None = None,
                 verifier: Verifier | Literal[Verification.FROM_ENVIRONMENT] | None = FROM_ENVIRONMENT) -> None:
        self.settings = settings
        self._kafka: Transport = transport if transport is not None else Kafka(settings)
        self.verifier = service_verifier() if verifier is FROM_ENVIRONMENT else verifier
        self.registry = Registry(self._kafka, verifier=self.verifier, verify_contracts=False)
        self.scanned = 0  # records fetched from the broker, the workflow's and others'
        self._refusals: dict[tuple[str, int, int], str | None] = {}  # each record judged once

    async def __aenter__(self) -> History:
        await self.registry.start()
        await self.registry.catch_up()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.registry.stop()

    @property
    def store(self) -> SchemaStore:
        """The writer schemas to decode events with: the framework's and every announced one."""
        return self.registry.store

    async def records(self, workflow_id: str, *, to_end: bool = False, follow: bool = False,
                      timeout_s: float | None = None, since_ms: int | None = None) -> AsyncIterator[StoredRecord]:
        """The workflow's records in log order, up to its outcome.

        With a verifier, only an outcome it believes ends the reading: a forged one (refused, see
        `refusal`) is yielded and read past, as the services read past it.

        Reading starts at `since_ms` if given, else at the time a UUIDv7 workflow id carries (each
        less SEEK_SLACK_MS), else at the partition's start.

        Args:
            workflow_id: The workflow instance's id.
            to_end: Read on past the outcome, to the partition's end now (records written after it).
            follow: Wait for new records until the outcome or `timeout_s`, rather than stop at the
                partition's end.
            timeout_s: Stop after this many seconds, if given.
            since_ms: Where to start reading (Unix ms), instead of the id's time.

        Yields:
            The workflow's records.
        """
        topic = self.settings.events_topic
        tp = TopicPartition(topic, self._kafka.partition_for(workflow_id.encode(),
                                                              await self._kafka.partition_count(topic)))
        key = workflow_id.encode()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        async with self._kafka.reader([tp]) as consumer:
            end = (await self._kafka.true_ends(consumer, [tp]))[tp]
            await self._seek_start(consumer, tp, end, workflow_id if since_ms is None else None, since_ms)
            while True:
                if not follow and await consumer.position(tp) >= end:
                    return
                if deadline is not None and time.monotonic() > deadline:
                    return
                batch = await consumer.getmany(tp, timeout_ms=200)
                self.scanned += len(batch.get(tp, ()))
                for record in batch.get(tp, ()):
                    if not follow and record.offset >= end:
                        return
                    if record.key != key:
                        continue
                    stored = StoredRecord.of(record)
                    yield stored
                    if (follow or not to_end) and is_outcome(stored) and self.refusal(stored) is None:
                        return

    async def entries(self, workflow_id: str, *, to_end: bool = False, follow: bool = False,
                      timeout_s: float | None = None, since_ms: int | None = None) -> AsyncIterator[HistoryEntry]:
        """The workflow's events (see records) with its dead letters, each after the record it copies.

        Dead letters of records not read (after the outcome, or before the start) come last. With
        `follow`, the dead-letter topic is read again at the end, for those written meanwhile.
        Payloads are shown as `choreo history` shows them: sensitive fields redacted (see shown_entry).
        An event the verifier refuses has `rejected` set (see refusal); dead letters are not
        checked (they keep the signature of the record they copy, which is shown with its own mark).

        Args:
            workflow_id: The workflow instance's id.
            to_end: As for records.
            follow: As for records.
            timeout_s: As for records.
            since_ms: As for records.

        Yields:
            History entries, dead letters with kind "dead_letter".
        """
        letters = await self.dead_letters(workflow_id, since_ms)
        by_origin: dict[object, list[DeadLetter]] = {}
        for letter in letters:
            by_origin.setdefault(letter.origin, []).append(letter)
        shown: set[str] = set()
        async for record in self.records(workflow_id, to_end=to_end, follow=follow, timeout_s=timeout_s,
                                         since_ms=since_ms):
            if (entry := shown_entry(record, self.store, self.refusal)) is not None:
                yield entry
            for letter in by_origin.pop(((record.topic, record.partition), record.offset), ()):
                shown.add(letter.id)
                yield dead_letter_entry(letter)
        if follow:
            letters = await self.dead_letters(workflow_id, since_ms)
        for letter in letters:
            if letter.id not in shown:
                yield dead_letter_entry(letter)

    def refusal(self, record: StoredRecord) -> str | None:
        """Why services refuse `record` (see refusal_of); None if they believe it or nothing is checked.

        Each record (topic, partition, offset) is checked once per reader, refused ones too.
        """
        if self.verifier is None:
            return None
        where = (record.topic, record.partition, record.offset)
        if where not in self._refusals:
            self._refusals[where] = refusal_of(self.verifier, record)
        return self._refusals[where]

    async def dead_letters(self, workflow_id: str, since_ms: int | None = None) -> list[DeadLetter]:
        """The dead letters of the workflow's records, from `since_ms` or the id's time (less the slack).

        Args:
            workflow_id: The workflow instance's id (the records' key).
            since_ms: Where to start reading (Unix ms), instead of the id's time.

        Returns:
            The dead letters, in the order they were written.
        """
        at = since_ms if since_ms is not None else workflow_time_ms(workflow_id)
        return await DeadLetterBox(self._kafka).read(since_ms=None if at is None else max(0, at - SEEK_SLACK_MS),
                                                      key=workflow_id.encode())

    async def _seek_start(self, consumer: Consumer, tp: TopicPartition, end: int,
                          workflow_id: str | None, since_ms: int | None) -> None:
        """Seek to the first offset at `since_ms`, or the id's time, less the slack.

        Without either time, seek to the partition's start; when nothing was logged since, to `end`.
        """
        at = since_ms if workflow_id is None else workflow_time_ms(workflow_id)
        if at is None:
            await consumer.seek_to_beginning(tp)
            return
        found = (await consumer.offsets_for_times({tp: max(0, at - SEEK_SLACK_MS)}))[tp]
        # Nothing logged since then: Kafka answers None, Tansu offset 0 with timestamp -1.
        consumer.seek(tp, end if found is None or found.timestamp < 0 else found.offset)


Judge = Callable[[StoredRecord], str | None]
"""Why a record is refused (HistoryEntry.rejected), or None."""


def refusal_of(verifier: Verifier, record: StoredRecord) -> Rejected | None:
    """Why services refuse `record`, in the words they dead-letter it with; None if they believe it.

    Args:
        verifier: The policy's verifier.
        record: The record, checked as the coordinator and agents check what they act on
            (Verifier.admit_record): signed by a trusted key of a party that may say what it says.
    """
    verdict = verifier.admit_record(record.key, record.value, record.headers, record.timestamp)
    return verdict if isinstance(verdict, Rejected) else None


def judge_by(verifier: Verifier | None) -> Judge | None:
    """A judge of records for shown_entry (refusal_of with `verifier`); None without a verifier."""
    return None if verifier is None else partial(refusal_of, verifier)


def shown_entry(record: StoredRecord, store: SchemaStore, judge: Judge | None = None) -> HistoryEntry | None:
    """The history entry of a record (see saga.entry_of) as choreograph shows it: sensitive fields redacted.

    Args:
        record: The record.
        store: The writer schemas to decode its payload with (and whose marks say what is sensitive).
        judge: Says why the record is refused (see refusal_of), for `rejected`; None: nothing is marked.

    Returns:
        The entry, its `data` with REDACTED for each field marked `"sensitive": true` (events._redact);
        None for a record that is not an event.
    """
    entry = entry_of(record, store)
    if entry is None:
        return None
    if judge is not None and (rejected := judge(record)) is not None:
        entry = replace(entry, rejected=str(rejected))
    if entry.data is None or record.value is None:
        return entry
    data = redact_payload(store, record.value, entry.data)
    return entry if data is entry.data else replace(entry, data=data)


def shown_entries(records: Iterable[StoredRecord], store: SchemaStore, judge: Judge | None = None
                  ) -> list[HistoryEntry]:
    """The entries of the records that are events, as shown (see shown_entry), in the records' order."""
    return [e for r in records if (e := shown_entry(r, store, judge)) is not None]


def dead_letter_entry(letter: DeadLetter) -> HistoryEntry:
    """A dead letter as a history entry: kind "dead_letter", its cause the event it copies.

    Its topic, partition and offset are the dead letter's own; `source` is the consumer that could
    not read the record, and `data` the dead letter's JSON (reason, origin, redrive count, ...).
    """
    header = letter.header
    return HistoryEntry(
        topic=letter.topic, partition=letter.partition, offset=letter.offset,
        timestamp=letter.timestamp, time=letter.time or header("ce_time") or "", type=header("ce_type") or "",
        kind="dead_letter", step=header("ce_step"), event_id=f"dlq:{letter.id}", causation_id=header("ce_id"),
        source=letter.consumer, traceparent=header("traceparent"), data=letter.json(),
        workflow_id=letter.workflow_id or "", workflow=header("ce_workflow") or "",
        headers=tuple((k, "" if v is None else v.decode(errors="replace")) for k, v in letter.headers))


async def history(settings: Settings, workflow_id: str, *, to_end: bool = False,
                  transport: Transport | None = None,
                  verifier: Verifier | Literal[Verification.FROM_ENVIRONMENT] | None = FROM_ENVIRONMENT
                  ) -> list[HistoryEntry]:
    """The workflow's events in log order, decoded, from the broker (see History.records).

    Args:
        settings: The broker and namespace to read.
        workflow_id: The workflow instance's id.
        to_end: Read on past the outcome, to the partition's end.
        transport: The broker port; Kafka (aiokafka) unless given.
        verifier: As for History (here it checks the registry's restore markers and which outcome ends the
            reading: nothing is marked).

    Returns:
        The events, as logged (nothing redacted or marked); empty if the workflow has none.
    """
    async with History(settings, transport, verifier) as reader:
        return entries_of([r async for r in reader.records(workflow_id, to_end=to_end)], reader.store)
