"""A forger on a real broker (issue 12): records written with a producer of its own, unsigned or signed
with another party's real key (as it lies in the test's CHOREO_HOME), and what the coordinator
dead-lettered of them.

`from helpers.forger import ...`; used by tests/e2e/test_forgeries.py. The in-memory counterpart, for
the property over every kind and mode, is helpers.forgeries.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer

from choreograph import Client, Event, HistoryEntry, OutcomeStatus, Settings, StepContract
from choreograph.events import Envelope, Kind, agent_source
from choreograph.security import Identity, KeyPair, Signer
from choreograph.security._local import policy_lock
from choreograph.security._policy import PolicyFile, write_policy
from choreograph.transport import Kafka, Record, TopicPartition, partition_for
from choreograph.transport._deadletter import DeadLetter
from choreograph.transport._keyring import policy_path, service_key

from . import eventually

UNSIGNED = "unsigned (no ce_keyid or ce_signature)"
WORKFLOW = "report"


@dataclass(frozen=True)
class Forged:
    """One forged record in the log, and what the coordinator's dead letter of it must say.

    Attributes:
        what: What it is, for messages.
        topic: Where it was written.
        partition: Its partition.
        offset: Its offset.
        says: Text its dead letter's reason must contain, each; empty: the code promises no dead letter.
    """

    what: str
    topic: str
    partition: int
    offset: int
    says: tuple[str, ...] = ()


def key_of(identity: Identity) -> KeyPair:
    """The real key of `identity` in this test's CHOREO_HOME (made and trusted, if its service has not yet)."""
    return service_key(identity)


def signed(pair: KeyPair | None, key: bytes | None, value: bytes | None,
           headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """`headers` signed by `pair` as its service's producer signs them; unchanged (unsigned) for None."""
    out = list(headers)
    return out if pair is None else Signer(pair).sign(key, value, out)


def trusted_publisher(identity: Identity, goals: tuple[str, ...]) -> KeyPair:
    """A new key of publisher `identity`, trusted in this CHOREO_HOME's local policy to start `goals` only."""
    pair = KeyPair.generate(identity)
    path = policy_path()
    with policy_lock(path):
        write_policy(path, PolicyFile(path).current().trust(identity, pair.public, goals=goals))
    return pair


def workflow_id_on(partition: int, partitions: int, prefix: str = "forged") -> str:
    """A new workflow id whose records land on `partition`."""
    while True:
        made = f"{prefix}-{uuid.uuid4().hex[:12]}"
        if partition_for(made.encode(), partitions) == partition:
            return made


class Forger:
    """Writes records with a producer of its own: `async with Forger(settings) as forger: ...`.

    Attributes:
        written: Every record it wrote, in order.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.written: list[Forged] = []
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)

    async def __aenter__(self) -> Forger:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    def partition_of(self, workflow_id: str) -> int:
        """The events partition of a workflow id."""
        return partition_for(workflow_id.encode(), self.settings.partitions)

    async def event(self, what: str, body: Event, *, workflow_id: str, kind: Kind, source: str, step: str | None,
                    by: KeyPair | None, says: tuple[str, ...], topic: str | None = None,
                    partition: int | None = None, workflow: str = WORKFLOW) -> Forged:
        """Write one event with `body` and these headers, signed by `by` (None: unsigned).

        Args:
            what: What it is, for messages.
            body: The payload.
            workflow_id: The record key.
            kind: Its ce_kind.
            source: Its ce_source.
            step: Its ce_step.
            by: Whose key signs it.
            says: What its dead letter must say (see Forged).
            topic: The topic; the events topic unless given.
            partition: The partition; the workflow id's unless given.
            workflow: Its ce_workflow.
        """
        envelope = Envelope.new(type=body.type_name(), source=source, workflow=workflow, workflow_id=workflow_id,
                                kind=kind, step=step)
        value = body.encode()
        return await self.raw(what, envelope.key, value, signed(by, envelope.key, value, envelope.headers()),
                              says=says, topic=topic, partition=partition)

    async def contract(self, what: str, key: str, value: bytes | None, step: str, by: KeyPair | None,
                       says: tuple[str, ...]) -> Forged:
        """A contract (None: a retirement's tombstone) under `step`'s headers, written as `announce` writes
        one: on every events partition (their dead letters say `says`) and on the registry.

        Returns:
            The registry record (the coordinator reads it there at start, and never dead-letters it).
        """
        envelope = Envelope.new(type=StepContract.type_name(), source=agent_source(WORKFLOW, step),
                                workflow=WORKFLOW, workflow_id=key, kind=Kind.OTHER, step=step)
        headers = signed(by, envelope.key, value, envelope.headers())
        for partition in range(self.settings.partitions):
            await self.raw(what, envelope.key, value, headers, says=says, partition=partition)
        return await self.raw(what, envelope.key, value, headers, says=(), topic=self.settings.registry_topic,
                              partition=0)

    async def raw(self, what: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]], *,
                  says: tuple[str, ...], topic: str | None = None, partition: int | None = None) -> Forged:
        """Write one record as it is (see `event`)."""
        topic = topic or self.settings.events_topic
        if partition is None and topic == self.settings.events_topic:
            partition = partition_for(key or b"", self.settings.partitions)
        meta = await self._producer.send_and_wait(topic, value=value, key=key, headers=list(headers),
                                                  partition=partition)
        forged = Forged(what, topic, meta.partition, meta.offset, says)
        self.written.append(forged)
        return forged


async def record_at(settings: Settings, partition: int, offset: int) -> Record:
    """The events-topic record at `offset` of `partition`."""
    tp = TopicPartition(settings.events_topic, partition)
    async for record in Kafka(settings).read([tp], start={tp: offset}, until={tp: offset + 1}):
        return record
    raise AssertionError(f"no record at {tp}@{offset}")


async def dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every dead letter in the namespace's dead-letter topic."""
    tp = TopicPartition(settings.deadletter_topic, 0)
    return [DeadLetter.of(record) async for record in Kafka(settings).read([tp])]


def effects(path: Path) -> Counter[tuple[str, str]]:
    """(workflow id, step) -> runs, from $REPORT_EFFECTS_FILE (a compensation's step is "undo:<step>")."""
    if not path.exists():
        return Counter()
    return Counter((line.split()[0], line.split()[1]) for line in path.read_text().splitlines() if line.strip())


async def goal_carrying(settings: Settings, text: str) -> str | None:
    """The workflow id of the goal whose payload contains `text`, once it is in the log."""
    tps = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
    async for record in Kafka(settings).read(tps):
        if ("ce_kind", b"goal") in record.headers and text.encode() in (record.value or b""):
            return (record.key or b"").decode()
    return None


async def sentinels_complete(client: Client, settings: Settings, partitions: Sequence[int] = ()) -> None:
    """A goal on each partition (all by default), each completed: every service has read what came before."""
    goals = [await client.publish("report", {"topic": "sentinel"}, workflow_id_on(p, settings.partitions, "sentinel"))
             for p in partitions or range(settings.partitions)]
    found = await client.wait_many(goals, 60)
    assert {w: o.status for w, o in found.items()} == {g.workflow_id: OutcomeStatus.COMPLETED for g in goals}


def believed(entries: list[HistoryEntry], forged: Iterable[Forged]) -> list[HistoryEntry]:
    """The entries that are not forgeries."""
    at = {(f.partition, f.offset) for f in forged}
    return [e for e in entries if (e.partition, e.offset) not in at]


async def assert_dead_lettered(settings: Settings, written: list[Forged]) -> None:
    """Each forgery with a promised reason has one dead letter by the coordinator saying it; there is no other."""
    expected = {(f.topic, f.partition, f.offset): f for f in written if f.says}

    async def letters() -> dict[tuple[str, int, int], list[str]] | None:
        found: dict[tuple[str, int, int], list[str]] = {}
        for letter in await dead_letters(settings):
            origin = letter.origin
            where = ("?", -1, -1) if origin is None else (origin[0].topic, origin[0].partition, origin[1])
            found.setdefault(where, []).append(f"{letter.consumer}: {letter.reason}")
        return found if expected.keys() <= found.keys() else None

    found = await eventually(letters, 30, "a dead letter of every forgery")
    assert found.keys() == expected.keys(), [found[k] for k in found.keys() - expected.keys()]
    for where, forged in expected.items():
        [letter] = found[where]
        assert letter.startswith(f"{settings.coordinator_group}: "), (forged.what, letter)
        assert all(text in letter for text in forged.says), (forged.what, forged.says, letter)
