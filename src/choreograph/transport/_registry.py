"""The registry topic (compacted, one partition): each agent announces its StepContract there.

Announcements are keyed by workflow/step; a tombstone (a null value) under a key removes that
step's contract. The registry is how the coordinator learns step graphs and every consumer learns
the writer schemas of event types it did not compile in.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping

from ..errors import DecodeError, WorkflowError
from ..events._avro import AvroSchema, SchemaStore
from ..events._envelope import Envelope, Kind
from ..events._faults import FAULT_EVENTS
from ..events._models import FRAMEWORK_EVENTS, Event, StepContract, load_schema, schema_root
from ..saga._graph import Graph
from ..security._identity import Identity, may_announce
from ..security._verify import Rejected, Verifier
from ._offsets import PartitionProgress
from ._port import Consumer, Producer, Record, TopicPartition, Transport
from ._restore import MARKER_TYPES, on_marker

log = logging.getLogger("choreograph.registry")


class Contracts:
    """Announced step contracts by workflow/step, their schemas, and the step graphs they make.

    Fed by apply(): from the registry topic (Registry), a recording or an archive. No value makes
    apply() or catalog raise.

    A contract is checked when it is read. One whose schemas cannot be parsed, or that would give
    its workflow a dependency cycle with the contracts already accepted, is refused: logged once,
    kept out of `contracts` (its schemas that parse are still learned, so its agent's events stay
    readable), and its workflow's catalog entry becomes a refusal (Graph.refusal) so that its new
    goals fail with the reason; other workflows are untouched. The refusal lasts until the same
    workflow/step is announced again with a contract that passes, or is removed by a tombstone; a
    refused contract is checked again whenever another contract of its workflow changes (of two
    contracts that close a cycle, the one read last is the one refused).

    Args:
        store: The schema store to add announced schemas to; None for a new framework_store().

    Attributes:
        store: The framework's schemas and every announced one that parses.
        contracts: "workflow/step" -> the contract accepted last.
        completions: (workflow, step) -> every event type a contract of that step, signed by its own
            agent where signatures are verified, has said it completes with: accepted or refused,
            and kept after a tombstone or a new contract (workflows started before still finish
            with the graph they started with). Who may complete with what (see completes_with).
        changes: How many times `completions` grew (readers that index it rebuild on a change).
    """

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.store = store or framework_store()
        self.contracts: dict[str, StepContract] = {}
        self.completions: dict[tuple[str, str], set[str]] = {}
        self.changes = 0
        self._refused: dict[str, tuple[StepContract, str]] = {}  # "workflow/step" -> (contract, reason)
        self._restored: set[str] = set()  # learned from history: the only ones a restored tombstone removes
        self._catalog: dict[str, Graph] | None = None

    @property
    def refused(self) -> Mapping[str, str]:
        """"workflow/step" -> why its last announcement was refused."""
        return {name: reason for name, (_, reason) in self._refused.items()}

    def apply(self, value: bytes | None, *, keep_existing: bool = False, key: bytes | None = None,
              announcer: Identity | None = None) -> str | None:
        """Learn one announced contract (a registry record or a marker on the events topic), or forget one.

        A value that is not a contract this code can read is skipped; a contract that cannot join its
        workflow's graph is refused (see the class). A null value with a `key` (a tombstone) removes
        the contract, accepted or refused, announced under that key.

        Args:
            value: The record's value; None for a tombstone.
            keep_existing: For a contract restored from an archive: learn only its schemas, and the
                step if nobody has announced it since. A restored tombstone removes only a contract
                that was restored too.
            key: The record's key ("workflow/step"); only a tombstone needs it.
            announcer: Who signed the record, where signatures are verified: an agent may announce
                only its own step, and only it or an operator may remove it (else the record is skipped).

        Returns:
            Why `announcer` may not say this (the record was skipped; the coordinator dead-letters
            it), or None.
        """
        if value is None:
            if key is not None:
                name = key.decode(errors="replace")
                if announcer is not None and (reason := may_announce(announcer, *_split(name), retire=True)):
                    log.warning("registry: skipping a tombstone of %s: %s", name, reason)
                    return reason
                self._remove(name, restored=keep_existing)
            return None
        try:
            contract = StepContract.decode(value, self.store)
        except DecodeError:
            return None  # a registry entry we cannot read is someone else's newer format; skip it
        name = f"{contract.workflow}/{contract.step}"
        if announcer is not None and (reason := may_announce(announcer, contract.workflow, contract.step)):
            log.warning("registry: skipping a contract of %s: %s", name, reason)
            return reason
        said = self.completions.setdefault((contract.workflow, contract.step), set())
        if contract.completes_with.name not in said:
            said.add(contract.completes_with.name)
            self.changes += 1
        if self.contracts.get(name) == contract:
            # A copy (each announcement is on the registry and on every events partition): its
            # schemas are known already.
            if not keep_existing:
                self._restored.discard(name)
            return None
        for schema in _schemas(contract)[0]:  # even a refused contract's: its agent's events stay readable
            self.store.add(schema)
        if keep_existing and (name in self.contracts or name in self._refused):
            return None
        if keep_existing:
            self._restored.add(name)
        else:
            self._restored.discard(name)
        self._offer(name, contract)
        self._retry(contract.workflow, but=name)
        return None

    def _offer(self, name: str, contract: StepContract) -> None:
        """Accept `contract` under `name`, or refuse it (logged when the reason is new for `name`)."""
        self._catalog = None
        problem = self._problem(name, contract)
        if problem is None:
            self.contracts[name] = contract
            if self._refused.pop(name, None) is not None:
                log.info("step contract %s accepted: goals of workflow %r may start again", name, contract.workflow)
            return
        self.contracts.pop(name, None)
        previous = self._refused.get(name)
        self._refused[name] = (contract, problem)
        if previous is None or previous[1] != problem:
            log.warning("%s; new goals of workflow %r fail until %s is announced again or removed",
                        problem, contract.workflow, name)

    def _problem(self, name: str, contract: StepContract) -> str | None:
        """Why `contract` must be refused under `name`; None if it may be accepted."""
        _, unreadable = _schemas(contract)
        if unreadable is not None:
            return f"step contract {name} refused: {unreadable}"
        candidate = {**self.contracts, name: contract}  # in the order the catalog will see them
        try:
            Graph.from_contracts(contract.workflow, candidate.values())
        except WorkflowError as exc:
            return f"step contract {name} refused: {str(exc).removeprefix(contract.workflow + ': ')}"
        return None

    def _retry(self, workflow: str, but: str = "") -> None:
        """Offer the refused contracts of `workflow` (but `but`) again: a change of another may let them in."""
        for name, (contract, _) in sorted(self._refused.items()):
            if contract.workflow == workflow and name != but:
                self._offer(name, contract)

    def _remove(self, name: str, *, restored: bool) -> None:
        """Forget the contract under `name` (a tombstone); a restored tombstone only a restored contract."""
        if restored and name not in self._restored:
            return  # announced by a running agent since the archive was taken: it stays
        self._restored.discard(name)
        accepted = self.contracts.pop(name, None)
        refused = self._refused.pop(name, None)
        gone = accepted or (refused[0] if refused is not None else None)
        if gone is None:
            return
        log.info("step contract %s removed by a tombstone", name)
        self._catalog = None
        self._retry(gone.workflow)

    def completes_with(self, workflow: str, step: str) -> set[str] | None:
        """The event types `step` of `workflow` may complete with (`completions`); None: it announced none."""
        return self.completions.get((workflow, step))

    @property
    def catalog(self) -> Mapping[str, Graph]:
        """Current step graph of every announced workflow; a refusal (Graph.refusal) for one that has none."""
        if self._catalog is None:
            workflows = {c.workflow for c in self.contracts.values()} | {c.workflow for c, _ in self._refused.values()}
            self._catalog = {w: self._graph(w) for w in sorted(workflows)}
        return self._catalog

    def _graph(self, workflow: str) -> Graph:
        """The catalog entry of `workflow` (computed once per change of the contracts)."""
        reasons = sorted(reason for c, reason in self._refused.values() if c.workflow == workflow)
        if reasons:
            return Graph.refusal(workflow, "; ".join(reasons))
        try:
            return Graph.from_contracts(workflow, self.contracts.values())
        except WorkflowError as exc:
            # Accepted contracts were checked together, but removing a step can hand a type it
            # completed with to another producer, and that can close a cycle.
            reason = f"its step contracts make no graph: {str(exc).removeprefix(workflow + ': ')}"
            log.warning("workflow %r: %s; its new goals fail until a contract changes", workflow, reason)
            return Graph.refusal(workflow, reason)


def _schemas(contract: StepContract) -> tuple[list[AvroSchema], str | None]:
    """The schemas of `contract` that parse, and what is wrong with the first that does not (None if none)."""
    schemas: list[AvroSchema] = []
    problem = None
    for event in (*contract.consumes, contract.completes_with):
        try:
            schemas.append(AvroSchema.from_json(event.avro_schema))
        except Exception as exc:  # orjson, fastavro and SchemaError alike: the schema is unusable
            problem = problem or f"unreadable schema of event type {event.name!r}: {exc}"
    return schemas, problem


class Registry(Contracts):
    """A reader of the registry topic that catches up to its end on demand: start(), catch_up(), stop().

    Between catch-ups its partition is paused: an idle consumer still fetches every few ms, and
    on Tansu every fetching consumer slows the broker's produce path (measured: acknowledged-send
    p50 1.7 ms with no other consumer, 9.9 ms with 7 consumer processes polling at 5 ms).

    Args:
        kafka: The client of the broker to read.
        store: See Contracts.
        verifier: Where signatures are verified: only signed records of a party allowed to make
            them are applied (see Contracts.apply), and a restore bracket opens or closes only at a
            marker an operator signed; None: every record.
        verify_contracts: False: contracts are applied whoever signed them, while restore markers
            are still verified (a reader that only shows history, whose contracts serve to decode
            payloads: a schema is known by its fingerprint, so a forged one displaces none).
    """

    def __init__(self, kafka: Transport, store: SchemaStore | None = None, verifier: Verifier | None = None, *,
                 verify_contracts: bool = True) -> None:
        super().__init__(store)
        self._kafka = kafka
        self.verifier = verifier
        self.verify_contracts = verify_contracts
        self._tp = TopicPartition(kafka.settings.registry_topic, 0)
        self._consumer: Consumer  # made in start(), inside the running loop
        self._progress = PartitionProgress(0)  # only its restore bracket is used

    @classmethod
    async def read(cls, kafka: Transport, verifier: Verifier | None = None) -> Registry:
        """A registry caught up to the topic's end once, its consumer stopped again (for one look).

        Args:
            kafka: The client of the broker to read.
            verifier: See the class's arguments.
        """
        registry = cls(kafka, verifier=verifier)
        await registry.start()
        try:
            await registry.catch_up()
        finally:
            await registry.stop()
        return registry

    async def start(self) -> None:
        """Start the consumer, at the beginning of the topic (paused until catch_up)."""
        self._consumer = self._kafka.consumer(group_id=None)
        await self._consumer.start()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_beginning(self._tp)
        self._consumer.pause(self._tp)

    async def stop(self) -> None:
        """Stop the consumer."""
        await self._consumer.stop()

    async def catch_up(self) -> None:
        """Read every announcement made before this call."""
        # Plain ListOffsets is exact here even on Tansu: every announcement is its own batch.
        end = (await self._consumer.end_offsets([self._tp]))[self._tp]
        if await self._consumer.position(self._tp) >= end:
            return
        self._consumer.resume(self._tp)
        try:
            while await self._consumer.position(self._tp) < end:
                batch = await self._consumer.getmany(self._tp, timeout_ms=500)
                for record in batch.get(self._tp, ()):
                    self._read(record)
        finally:
            self._consumer.pause(self._tp)

    def _read(self, record: Record) -> None:
        """Apply one registry record: a contract or tombstone, or a restore marker (see on_marker)."""
        headers = dict(record.headers)
        if (event_type := headers.get("ce_type")) in MARKER_TYPES:
            # Only an operator's: a forged marker would make every later announcement "restored".
            if self.verifier is not None and isinstance(why := self.verifier.admit_record(
                    record.key, record.value, record.headers, record.timestamp), Rejected):
                log.warning("registry: ignoring a restore marker at %s@%d: %s", self._tp.topic, record.offset, why)
                return
            on_marker(self._progress, event_type, record.value, record.offset, headers.get("ce_source"))
            return
        announcer = None
        if self.verifier is not None and self.verify_contracts:
            signer = self.verifier.signer(record.key, record.value, record.headers, record.timestamp)
            if isinstance(signer, Rejected):
                log.warning("registry: skipping %s@%d: %s", self._tp.topic, record.offset, signer)
                return
            announcer = signer
        self.apply(record.value, keep_existing=self._progress.is_history(record.timestamp), key=record.key,
                   announcer=announcer)


def _split(name: str) -> tuple[str, str]:
    workflow, _, step = name.partition("/")
    return workflow, step


def framework_store() -> SchemaStore:
    """A new schema store that knows the framework's events and StepContract, now and as they were.

    Earlier versions of framework schemas (`schemas/choreograph/past/NAME.N.avsc`) stay known as
    writer schemas, so logs, archives and recordings written before a change still decode (Avro
    resolves them to the current reader, new fields taking their defaults).
    """
    store = SchemaStore()
    events: tuple[type[Event], ...] = (*FRAMEWORK_EVENTS, *FAULT_EVENTS, StepContract)
    for event in events:
        store.add(event.avro)
    for past in _past_schemas():
        store.add(past)
    return store


@functools.cache
def _past_schemas() -> tuple[AvroSchema, ...]:
    return tuple(load_schema(path) for path in sorted((schema_root() / "choreograph" / "past").glob("*.avsc")))


async def announce(producer: Producer, registry_topic: str, events_topic: str, partitions: int,
                   contract: StepContract, source: str) -> None:
    """Publish a contract to the registry, and a copy (a marker) to every events partition.

    Returns once the broker has all of them. A marker puts the announcement in order with the goals
    of its partition: the coordinator reads it before any goal published after this returns, so
    that goal's graph includes the step, and no registry lookup is needed per goal (ListOffsets
    alone took about 7 ms on Tansu).

    Args:
        producer: A started producer.
        registry_topic: The registry topic.
        events_topic: The events topic.
        partitions: How many partitions the events topic has.
        contract: The contract.
        source: The announcing agent's CloudEvents source.
    """
    key = f"{contract.workflow}/{contract.step}"
    envelope = Envelope.new(type=StepContract.type_name(), source=source, workflow=contract.workflow,
                            workflow_id=key, kind=Kind.OTHER, step=contract.step)
    value, headers = contract.encode(), envelope.headers()
    futures = [await producer.send(registry_topic, value=value, key=envelope.key, headers=headers)]
    for partition in range(partitions):
        futures.append(await producer.send(events_topic, value=value, key=envelope.key, headers=headers,
                                           partition=partition))
    await asyncio.gather(*futures)


async def retire(producer: Producer, registry_topic: str, events_topic: str, partitions: int, workflow: str,
                 step: str, source: str) -> None:
    """Remove a step's contract: a tombstone on the registry, and a tombstone marker on every events partition.

    The marker is to a retirement what announce's copy is to an announcement: the coordinator reads
    it in order with the goals of its partition (Contracts.apply removes the contract), so a goal
    published after this returns runs without the step. Workflows already started keep the graph
    their WorkflowStarted fixed. An agent of the step that starts again announces it again.

    Args:
        producer: A started producer.
        registry_topic: The registry topic.
        events_topic: The events topic.
        partitions: How many partitions the events topic has.
        workflow: The step's workflow.
        step: The step.
        source: Who retires it (CloudEvents source).
    """
    key = f"{workflow}/{step}"
    envelope = Envelope.new(type=StepContract.type_name(), source=source, workflow=workflow, workflow_id=key,
                            kind=Kind.OTHER, step=step)
    headers = envelope.headers()
    futures = [await producer.send(registry_topic, value=None, key=envelope.key, headers=headers)]
    for partition in range(partitions):
        futures.append(await producer.send(events_topic, value=None, key=envelope.key, headers=headers,
                                           partition=partition))
    await asyncio.gather(*futures)
