"""A record of the events topic as the index reads it: believed or not, decoded or skipped.

Only what the services would act on is folded (`Verifier.admit_record`, as `choreo state` folds; with
CHOREO_VERIFY=off every record). The envelope comes from the headers; a payload is decoded only for
the framework events whose fields the summary reads (WorkflowStarted, failures, timeouts,
compensation requests, outcomes), with the framework's schemas: an agent's own events are never
decoded, so the index needs no registry reader. Restore markers and step contracts (announced on the
events topic too) are no workflow's events.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from ..errors import DecodeError
from ..events._avro import SchemaStore
from ..events._envelope import Envelope
from ..events._models import StepContract
from ..security._verify import Rejected, Verifier
from ..transport._restore import MARKER_TYPES
from ._summary import WORKFLOW_STARTED, IndexedEvent

# Kinds whose payload the summary reads (see _summary._apply); others are folded from their headers.
_DECODED_KINDS = frozenset(("step_failed", "step_timed_out", "compensation_requested", "outcome"))
# Records on the events topic that are no workflow's: keyed by "workflow/step" or by partition.
_NOT_WORKFLOWS = frozenset((StepContract.type_name(), *(t.decode() for t in MARKER_TYPES)))


class Skip(enum.Enum):
    """Why a record is not folded."""

    NOT_AN_EVENT = "not_an_event"
    """Its envelope headers are missing or malformed (the coordinator dead-letters it)."""
    UNDECODABLE = "undecodable"
    """A payload the summary needs could not be decoded."""
    REFUSED = "refused"
    """The services refuse it: unsigned, badly signed, or its signer may not say it."""
    NOT_A_WORKFLOW = "not_a_workflow"
    """A record of no workflow: a restore marker, a step contract announced (or retired) on the topic."""


def indexed_event(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]], timestamp: int,
                  store: SchemaStore, verifier: Verifier | None) -> IndexedEvent | Skip:
    """The record as the index folds it, or why it is skipped.

    Args:
        key: The record key (the workflow id).
        value: The record value (a single-object Avro payload).
        headers: Its headers (the CloudEvents envelope, the signature).
        timestamp: Its log timestamp, Unix ms.
        store: The framework's schemas (transport.framework_store).
        verifier: The policy's verifier; None: every record is believed (CHOREO_VERIFY=off).

    Returns:
        The event, or the reason it is skipped. Never raises for a record's content.
    """
    try:
        envelope = Envelope.from_record(key, headers)
    except DecodeError:
        return Skip.NOT_AN_EVENT
    if envelope.type in _NOT_WORKFLOWS or not envelope.workflow_id:
        return Skip.NOT_A_WORKFLOW
    if verifier is not None and isinstance(
            verifier.admit(envelope, key, value, headers, timestamp), Rejected):
        return Skip.REFUSED
    data: dict[str, Any] | None = None
    if envelope.kind.value in _DECODED_KINDS or envelope.type == WORKFLOW_STARTED:
        try:
            data = store.decode(value or b"")
        except DecodeError:
            return Skip.UNDECODABLE
    return IndexedEvent(envelope.workflow_id, envelope.workflow, envelope.kind.value, envelope.type,
                        envelope.step, timestamp, data)
