"""Where a workflow stands, read from its partition before a client asks to change it (Client.cancel).

The workflow id is the record key, so its goal and its outcome are on one partition; a UUIDv7 id
says when its goal was published, so reading starts there (less a slack) instead of at the
partition's start, as `choreo history` does (timetravel._history). Only what the services believe
counts: a forged goal or outcome (refused by the verifier) neither makes a workflow known nor ends it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DecodeError
from ..events._avro import SchemaStore
from ..events._envelope import GOAL_ID_HEADER, Envelope, Kind, workflow_time_ms
from ..events._models import WorkflowOutcome
from ..security._verify import Rejected, Verifier
from ..transport._port import Record, TopicPartition, Transport
from ..transport._reading import seek_time

# How far before the id's time to start reading: the clocks of the client that made the id and of
# the broker that indexes the goal may differ (the same slack as timetravel._history.SEEK_SLACK_MS).
SEEK_SLACK_MS = 1_000


@dataclass(frozen=True)
class Standing:
    """A workflow as its partition shows it, read to the partition's end.

    Attributes:
        workflow_id: The workflow instance's id.
        partition: Its partition of the events topic.
        end: The partition's end when it was read: anything logged since is at or after it.
        workflow: Its workflow's name, from its goal ("" without one).
        goal_id: Its goal's event id; None: no goal of it was found (an unknown id).
        outcome: Its outcome, if it has one.
    """

    workflow_id: str
    partition: int
    end: int
    workflow: str = ""
    goal_id: str | None = None
    outcome: WorkflowOutcome | None = None


async def standing(transport: Transport, topic: str, workflow_id: str, store: SchemaStore,
                   verifier: Verifier | None) -> Standing:
    """Read the workflow's partition to its end: its goal and its outcome, believed as the services would.

    Args:
        transport: The broker port.
        topic: The events topic.
        workflow_id: The workflow instance's id.
        store: The writer schemas (an outcome is decoded with them).
        verifier: What a goal and an outcome are checked against; None: every record is believed.

    Returns:
        Where it stands.
    """
    key = workflow_id.encode()
    tp = TopicPartition(topic, transport.partition_for(key, await transport.partition_count(topic)))
    at = workflow_time_ms(workflow_id)
    async with transport.reader([tp]) as consumer:
        end = (await transport.true_ends(consumer, [tp]))[tp]
        found = Standing(workflow_id, tp.partition, end)
        await seek_time(consumer, [tp], {tp: end}, None if at is None else max(0, at - SEEK_SLACK_MS))
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=200)
            for record in batch.get(tp, ()):
                if record.offset >= end:
                    return found
                if record.key == key:
                    found = _fold(found, record, store, verifier)
                    if found.outcome is not None:
                        return found
    return found


def _fold(found: Standing, record: Record, store: SchemaStore, verifier: Verifier | None) -> Standing:
    """What one record of the workflow adds: its first believed goal, or its believed outcome."""
    try:
        envelope = Envelope.from_record(record.key, record.headers)
    except DecodeError:
        return found  # not an event
    kind = envelope.kind
    if kind is not Kind.GOAL and kind is not Kind.OUTCOME:
        return found
    if kind is Kind.GOAL and found.goal_id is not None:
        return found  # a second goal with this id: the coordinator dead-letters it
    if verifier is not None and isinstance(
            verifier.admit(envelope, record.key, record.value, record.headers, record.timestamp), Rejected):
        return found
    if kind is Kind.GOAL:
        return Standing(found.workflow_id, found.partition, found.end, envelope.workflow, envelope.id)
    runs_for = next((v for name, v in record.headers if name == GOAL_ID_HEADER), None)
    if found.goal_id is not None and runs_for is not None and runs_for != found.goal_id.encode():
        return found  # the outcome of another goal with this id
    try:
        outcome = WorkflowOutcome.decode(record.value or b"", store)
    except DecodeError:
        return found
    return Standing(found.workflow_id, found.partition, found.end, found.workflow or envelope.workflow,
                    found.goal_id, outcome)
