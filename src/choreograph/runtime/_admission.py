"""Whether the coordinator folds an event of a workflow, ignores it, or dead-letters it.

Signatures are checked before this (runtime._gate): here an authentic event can still say what its
sender may not say in its body (`forged`), or be a duplicate goal, an event of a finished workflow,
one with no goal read before it, or one that contradicts its saga's state (`refusal_of`, saga._check).
"""

from __future__ import annotations

import logging
from collections import Counter

from ..errors import DecodeError, InvalidPayloadError, UnknownSchemaError, WorkflowError
from ..events._envelope import DEADLINE_HEADER, Envelope, Kind
from ..saga._check import contradiction, impostor
from ..saga._facts import LATE_KINDS, Fact, SagaState, deadline_of, fact_of
from ..security._identity import Identity
from ..transport._port import Record
from ..transport._registry import Contracts, Registry
from ._coordinator_state import Partition
from ._tracking import Done

log = logging.getLogger("choreograph.coordinator")


def forged(envelope: Envelope, fact: Fact, contracts: Contracts, signer: Identity | None) -> str | None:
    """Why the sender of an event may not say what its body says, or None if it may.

    A signature proves who sent the headers (the policy allows them, see security.may_publish); the
    body must be theirs to say too: a failure, a failed attempt or a heartbeat of the sender's own
    step (saga._check.impostor), and a completion of a type its step's own contract completes with
    (transport.Contracts.completions; agents take no other as an input, see runtime._provenance). A
    completion of a step that announced no contract is left to the graph (saga._check.contradiction).
    Independent of the saga's state: dead-lettered even before its goal.

    Args:
        envelope: The event's envelope.
        fact: The event as a fact.
        contracts: What the coordinator knows of the announced contracts.
        signer: Who signed it; None where nothing is verified (then its source is named).

    Returns:
        The reason to dead-letter it, naming the sender and what it may not say; or None.
    """
    if (reason := impostor(envelope.source, fact)) is not None:
        return reason
    if fact.kind is Kind.STEP_COMPLETED:
        types = contracts.completes_with(envelope.workflow, envelope.step or "")
        if types is not None and envelope.type not in types:
            return (f"{signer or envelope.source} may not complete step {envelope.step} with {envelope.type}: "
                    f"its contract completes with {', '.join(sorted(types))}")
    return None


def refusal_of(part: Partition, finished: Done, ignored: Counter[str], state: SagaState | None,
               envelope: Envelope, fact: Fact) -> str | None:
    """Why the event must not be folded: "" to ignore it, a reason to dead-letter it; None to fold it.

    Args:
        part: The event's partition.
        finished: Workflows finished here (workflow id -> its goal's event id).
        ignored: Counts of ignored events by cause (updated).
        state: The workflow's saga, open or ended, if known.
        envelope: The event's envelope.
        fact: The event as a fact.

    Returns:
        None, "" or a reason.
    """
    workflow_id = envelope.workflow_id
    if fact.kind is Kind.GOAL:
        original = part.goal_ids.get(workflow_id) or finished.get(workflow_id)
        if original is None and workflow_id not in finished:
            return None
        if original == envelope.id:
            return ""  # the same goal delivered twice (a producer's retry): nothing new
        return f"duplicate workflow id: workflow {workflow_id} already has a goal (event {original or '?'})"
    if workflow_id in finished:
        if state is not None and state.finished and fact.kind in LATE_KINDS:
            return contradiction(state, fact)  # a late result: compensated (see saga._late_requests)
        ignored["finished"] += 1
        return ""
    if state is None or not state.goal_seen:
        # Every event of a workflow follows its goal on the workflow's partition: one with no
        # goal read before it is forged, misrouted, or of a workflow that finished before this
        # partition's position. Not folded; an outcome is remembered (its workflow is over).
        ignored["no goal"] += 1
        if fact.kind is Kind.OUTCOME:
            finished.add(workflow_id)
        log.debug("ignoring %s of %s: no goal read", envelope.kind.value, workflow_id)
        return ""
    return contradiction(state, fact)


async def read_fact(envelope: Envelope, record: Record, registry: Registry, signer: Identity | None) -> Fact:
    """Validate the payload against its writer schema and extract what the saga needs.

    Raises:
        DecodeError: The record is not a workflow event this coordinator can read (no key, a
            tombstone, a body that is not the type its ce_type names, an invalid payload), or
            its signer may not say what it says (see forged).
    """
    if not envelope.workflow_id:
        raise DecodeError("no key: a workflow event is keyed by its workflow id")
    value = record.value
    if value is None:
        raise DecodeError("tombstone (null value): not an event")
    store = registry.store
    try:
        data = store.decode(value)
    except UnknownSchemaError:
        await registry.catch_up()
        data = store.decode(value)
    if (written := store.writer_of(value).name) != envelope.type:
        raise DecodeError(f"ce_type is {envelope.type} but the body is a {written}")
    try:
        deadline = None
        if envelope.kind is Kind.GOAL:
            deadline = deadline_of(next((v for k, v in record.headers if k == DEADLINE_HEADER), None))
        fact = fact_of(envelope, data, record.timestamp, deadline)
    except (ValueError, WorkflowError) as exc:  # pydantic: a framework event that fails its model
        raise InvalidPayloadError(f"{envelope.type} fails validation: {exc}") from exc
    if (reason := forged(envelope, fact, registry, signer)) is not None:
        raise DecodeError(reason)
    return fact
