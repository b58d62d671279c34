"""Whether the coordinator folds an event of a workflow, ignores it, or dead-letters it.

Signatures are checked before this (runtime._gate): here an authentic event can still say what its
sender may not say in its body (`forged`), or be a duplicate goal, an event of a finished workflow,
one with no goal read before it, or one that contradicts its saga's state (`refusal_of`, saga._check).
"""

from __future__ import annotations

import logging
from collections import Counter

from ..events._envelope import Envelope, Kind
from ..saga._check import contradiction, impostor
from ..saga._facts import LATE_KINDS, Fact, SagaState
from ..security._identity import Identity
from ..transport._registry import Contracts
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
