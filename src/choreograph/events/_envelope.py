"""Event metadata carried in Kafka headers (CloudEvents Kafka binding, binary mode) and the key.

The record key is the workflow id, so every event of one workflow instance lands on one partition
in causal order. Extension attributes: ce_workflow, ce_kind, ce_step, ce_causationid; W3C traceparent.
"""

from __future__ import annotations

import enum
import hashlib
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from ..errors import DecodeError

SPEC_VERSION = b"1.0"
CONTENT_TYPE = b"application/avro"


# CloudEvents `source` of each party, defined once: readers compare these strings.
COORDINATOR_SOURCE = "choreo://coordinator"
CLIENT_SOURCE = "choreo://client"
RESTORE_SOURCE = "choreo://restore"
AGENT_SOURCE_PREFIX = "choreo://agent/"
# On the coordinator's decisions: the event id of the goal the workflow runs for (an extension).
GOAL_ID_HEADER = "ce_goalid"
# On a goal: the workflow's deadline, Unix milliseconds as decimal text (an extension).
DEADLINE_HEADER = "ce_deadline"
# On a redriven record: how many times it was redriven from the dead-letter topic (an extension).
REDRIVE_HEADER = "ce_redrive"


def agent_source(workflow: str, step: str) -> str:
    """The CloudEvents source of the agent that runs `step` of `workflow`."""
    return f"{AGENT_SOURCE_PREFIX}{workflow}/{step}"


class Kind(enum.StrEnum):
    """The role an event plays in a saga; `choreo history` shows it."""

    GOAL = "goal"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    COMPENSATION_REQUESTED = "compensation_requested"
    COMPENSATION_COMPLETED = "compensation_completed"
    COMPENSATION_FAILED = "compensation_failed"
    OUTCOME = "outcome"
    STEP_ATTEMPT_FAILED = "step_attempt_failed"
    STEP_TIMED_OUT = "step_timed_out"
    HEARTBEAT = "heartbeat"
    CANCEL_REQUESTED = "cancel_requested"
    OTHER = "other"


# Ids come from `random`, as OpenTelemetry's RandomIdGenerator does: they must be unique, not
# secret, and os.urandom costs ~8 us per uuid4 on our VMs. `random` reseeds itself after fork.
_bits = random.getrandbits


def new_event_id() -> str:
    """A random (version 4, RFC 4122 variant) UUID string."""
    h = f"{_bits(128) & _V4_MASK | _V4_BITS:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_V4_MASK = ~((0xF000 << 64) | (0xC << 60)) & ((1 << 128) - 1)
_V4_BITS = (0x4000 << 64) | (0x8 << 60)


def new_traceparent() -> str:
    """A W3C traceparent of a new trace: random trace and span ids, sampled."""
    return f"00-{_bits(128):032x}-{_bits(64):016x}-01"


def child_traceparent(parent: str | None) -> str:
    """Same trace as `parent`, new span id: each hop is one span of the workflow's trace."""
    if parent is None or len(parent) != 55:
        return new_traceparent()
    return f"{parent[:36]}{_bits(64):016x}{parent[52:]}"


_clock: tuple[int, str] = (0, "")


def utc_now() -> str:
    """ISO 8601 UTC time in milliseconds, formatted once per millisecond."""
    global _clock
    ms = time.time_ns() // 1_000_000
    if ms != _clock[0]:
        text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        _clock = (ms, text)
    return _clock[1]


class Envelope(NamedTuple):
    """Everything about an event but its payload, as CloudEvents Kafka headers and the record key carry it.

    Immutable; a NamedTuple because one is built for every event in and out, and a frozen dataclass
    took ~4 us of that.

    Attributes:
        id: The event id (ce_id).
        type: The Avro full name of the payload's schema (ce_type).
        source: Who published it (ce_source), e.g. COORDINATOR_SOURCE or agent_source(...).
        time: When it was published, ISO 8601 UTC in milliseconds (ce_time).
        workflow: The workflow's name (ce_workflow).
        workflow_id: The workflow instance's id: the record key.
        kind: The role of the event in the saga (ce_kind).
        step: The step it belongs to, if any (ce_step).
        causation_id: The id of the event that caused it, if any (ce_causationid).
        traceparent: The W3C trace context (traceparent).
    """

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
        """An envelope stamped now, caused by `cause` if given (its id, and a span of its trace).

        Args:
            type: The Avro full name of the payload's schema.
            source: Who publishes the event.
            workflow: The workflow's name.
            workflow_id: The workflow instance's id.
            kind: The role of the event in the saga.
            step: The step the event belongs to, if any.
            cause: The envelope of the event that caused this one, if any.
            id: The event id; None for a new random one (see derived_id for a deterministic one).

        Returns:
            The envelope.
        """
        return cls(id or new_event_id(), type, source, utc_now(), workflow, workflow_id, kind, step,
                   None if cause is None else cause.id,
                   child_traceparent(None if cause is None else cause.traceparent))

    def with_id(self, id: str) -> Envelope:
        """A copy with the event id `id`."""
        return self._replace(id=id)

    @property
    def key(self) -> bytes:
        """The record key: the workflow id, UTF-8 encoded."""
        return self.workflow_id.encode()

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers that carry this envelope (CloudEvents binary mode, and traceparent)."""
        return self.headers_with(fixed_headers(self.source, self.workflow, self.kind, self.step))

    def headers_with(self, fixed: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """headers(), with the attributes shared by all events of one stamp given pre-encoded."""
        headers = [("ce_id", self.id.encode()), ("ce_type", self.type.encode()), ("ce_time", self.time.encode()),
                   *fixed]
        if self.causation_id is not None:
            headers.append(("ce_causationid", self.causation_id.encode()))
        if self.traceparent is not None:
            headers.append(("traceparent", self.traceparent.encode()))
        return headers

    @classmethod
    def from_record(cls, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> Envelope:
        """Read an envelope back from a record's key and headers.

        Args:
            key: The record key (the workflow id).
            headers: The record's headers.

        Returns:
            The envelope.

        Raises:
            DecodeError: A required header is missing, or a header is malformed.
        """
        h = dict(headers)
        try:
            kind = _KINDS.get(h["ce_kind"])
            if kind is None:
                raise DecodeError(f"malformed envelope header: unknown ce_kind {h['ce_kind']!r}")
            step, cause, trace = h.get("ce_step"), h.get("ce_causationid"), h.get("traceparent")
            return cls(h["ce_id"].decode(), h["ce_type"].decode(), h["ce_source"].decode(), h["ce_time"].decode(),
                       h["ce_workflow"].decode(), (key or b"").decode(), kind,
                       None if step is None else step.decode(), None if cause is None else cause.decode(),
                       None if trace is None else trace.decode())
        except KeyError as exc:
            raise DecodeError(f"missing CloudEvents header {exc.args[0]}") from exc
        except UnicodeDecodeError as exc:
            what = "record key" if key is not None and exc.object == key else "envelope header"
            raise DecodeError(f"malformed {what}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        except (ValueError, AttributeError, TypeError) as exc:  # a header with a null value
            raise DecodeError(f"malformed envelope header: {exc}") from exc


_KINDS = {kind.value.encode(): kind for kind in Kind}


def text_of(data: bytes | None) -> str | None:
    """A key or header value as text; None for none, an empty one, or one that is not UTF-8.

    A record whose key gives None is not a workflow event: agents, clients and the coordinator's
    look-back skip it (the coordinator dead-letters it when it reads it as an event).
    """
    if not data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def fixed_headers(source: str, workflow: str, kind: Kind, step: str | None) -> list[tuple[str, bytes]]:
    """The headers every event of one source, workflow, kind and step shares; encode once, reuse."""
    fixed = [("ce_specversion", SPEC_VERSION), ("ce_source", source.encode()), ("content-type", CONTENT_TYPE),
             ("ce_workflow", workflow.encode()), ("ce_kind", kind.value.encode())]
    if step is not None:
        fixed.append(("ce_step", step.encode()))
    return fixed


_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes
_VARIANT = {f"{i:x}": f"{i & 0x3 | 0x8:x}" for i in range(16)}  # RFC 4122 variant nibble
_sha1 = hashlib.sha1


def derived_id(workflow_id: str, *parts: str) -> str:
    """A deterministic event id: the uuid5 of the workflow id and `parts`.

    Decisions and agent results use it, so an event re-emitted after a crash, or re-produced by a
    sandbox re-run, has the id of the original and deduplicates downstream. Same value as
    uuid.uuid5(uuid.NAMESPACE_URL, "choreograph:<workflow_id>/<part>/..."), at a fifth of its cost.
    """
    name = "choreograph:" + "/".join((workflow_id, *parts))
    h = _sha1(_URL_NAMESPACE + name.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def new_workflow_id() -> str:
    """A new workflow id: a UUIDv7 (RFC 9562), 48 bits of Unix milliseconds first.

    So the id says when its goal was published, and `choreo history` can seek to that time instead
    of scanning the partition (see workflow_time_ms).
    """
    n = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | _bits(12) << 64 | 0x2 << 62 | _bits(62)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def workflow_time_ms(workflow_id: str) -> int | None:
    """The publication time a UUIDv7 workflow id carries, or None for any other id."""
    h = workflow_id.replace("-", "")
    if len(h) != 32 or h[12] != "7":
        return None
    try:
        return int(h[:12], 16)
    except ValueError:
        return None
