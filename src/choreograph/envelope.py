"""Event metadata carried in Kafka headers (CloudEvents Kafka binding, binary mode) and the key.

The record key is the workflow id, so every event of one workflow instance lands on one partition
in causal order. Extension attributes: ce_workflow, ce_kind, ce_step, ce_causationid; W3C traceparent.
"""

from __future__ import annotations

import enum
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from .errors import DecodeError

SPEC_VERSION = b"1.0"
CONTENT_TYPE = b"application/avro"


class Kind(enum.StrEnum):
    """The role an event plays in a saga; `choreo history` shows it."""

    GOAL = "goal"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    COMPENSATION_REQUESTED = "compensation_requested"
    COMPENSATION_COMPLETED = "compensation_completed"
    COMPENSATION_FAILED = "compensation_failed"
    OUTCOME = "outcome"
    OTHER = "other"


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def child_traceparent(parent: str | None) -> str:
    """Same trace as `parent`, new span id: each hop is one span of the workflow's trace."""
    if parent is None or len(parent) != 55:
        return new_traceparent()
    return f"{parent[:36]}{secrets.token_hex(8)}{parent[52:]}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """Everything about an event but its payload."""

    id: str
    type: str
    source: str
    time: str
    workflow: str
    workflow_id: str
    kind: Kind
    step: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None

    @classmethod
    def new(cls, *, type: str, source: str, workflow: str, workflow_id: str, kind: Kind,
            step: str | None = None, cause: Envelope | None = None, id: str | None = None) -> Envelope:
        return cls(
            id=id or str(uuid.uuid4()), type=type, source=source,
            time=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            workflow=workflow, workflow_id=workflow_id, kind=kind, step=step,
            causation_id=cause.id if cause else None,
            traceparent=child_traceparent(cause.traceparent if cause else None),
        )

    def with_id(self, id: str) -> Envelope:
        return replace(self, id=id)

    @property
    def key(self) -> bytes:
        return self.workflow_id.encode()

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            ("ce_specversion", SPEC_VERSION), ("ce_id", self.id.encode()), ("ce_type", self.type.encode()),
            ("ce_source", self.source.encode()), ("ce_time", self.time.encode()),
            ("content-type", CONTENT_TYPE), ("ce_workflow", self.workflow.encode()),
            ("ce_kind", self.kind.value.encode()),
        ]
        if self.step is not None:
            headers.append(("ce_step", self.step.encode()))
        if self.causation_id is not None:
            headers.append(("ce_causationid", self.causation_id.encode()))
        if self.traceparent is not None:
            headers.append(("traceparent", self.traceparent.encode()))
        return headers

    @classmethod
    def from_record(cls, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> Envelope:
        """Read the envelope back; DecodeError when a required attribute is missing or mangled."""
        h = dict(headers)
        try:
            step = h.get("ce_step")
            cause = h.get("ce_causationid")
            trace = h.get("traceparent")
            return cls(
                id=h["ce_id"].decode(), type=h["ce_type"].decode(), source=h["ce_source"].decode(),
                time=h["ce_time"].decode(), workflow=h["ce_workflow"].decode(),
                workflow_id=(key or b"").decode(), kind=Kind(h["ce_kind"].decode()),
                step=step.decode() if step is not None else None,
                causation_id=cause.decode() if cause is not None else None,
                traceparent=trace.decode() if trace is not None else None,
            )
        except KeyError as exc:
            raise DecodeError(f"missing CloudEvents header {exc.args[0]}") from exc
        except (UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(f"malformed envelope header: {exc}") from exc


def derived_id(workflow_id: str, *parts: str) -> str:
    """A deterministic event id, so a decision re-emitted after a crash is deduplicated downstream."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "choreograph:" + "/".join((workflow_id, *parts))))
