"""The nastiest records a misbehaving producer can write to a namespace (issue 10), and the treatment each
must meet.

Every constructor returns a `Case`: the records to write, in order (the nasty ones, and the context some
need: the goal a forged completion contradicts), each with the treatment issue 10 expects. Records are
built with the real encoders (Envelope, fixed_headers, Avro single-object bodies of the example workflow
"report"), for the events topic of `settings.namespace` (and its registry topic for contracts).

The same corpus serves the fuzz suite on the memory log (tests/unit/test_fuzz_records.py, which writes a
case with `write_memory`) and the real-broker suite against real processes, which writes each record
with a plain producer (a 5 MB record needs a topic whose `max.message.bytes` and a producer whose
`max_request_size` allow it: a misbehaving producer with its own settings) and then checks, for each
record and after restarting the services in `Case.affects`:

- `Treatment.DEAD_LETTER`: `<namespace>.deadletter` holds it (`dlq_topic`, `dlq_partition`,
  `dlq_offset` name it; `dlq_reason` says why; an oversized one as a truncated copy with its size and
  digest). At least the coordinator, which reads every record, dead-letters it.
- `Treatment.DEAD_LETTER_OR_SKIP`: dead-lettered, or skipped by the rule README's "Events on the wire"
  states for it; never acted on.
- `Treatment.DEAD_LETTER_OR_HANDLED`: dead-lettered, or handled by a stated rule.
- `Treatment.SKIP`: ignored (and counted) by rule; not used, not dead-lettered.
- `Treatment.REFUSED`: a step contract that would make its workflow's graph invalid: refused when read
  (logged once); that workflow's new goals fail with a clear reason, other workflows are untouched.
- `Treatment.HANDLED`: well formed (context, or a valid goal): handled as work.

For every case: every service keeps running and is ready again after a restart (no crash loop, no
wedge), and a good goal published right after completes.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import orjson

from choreograph import Settings
from choreograph.events import (
    CLIENT_SOURCE,
    COORDINATOR_SOURCE,
    Envelope,
    Event,
    EventSchema,
    Kind,
    RestoreStarted,
    StepContract,
    StepNode,
    WorkflowStarted,
    agent_source,
    new_workflow_id,
)
from choreograph.examples.report._events import (
    AnalysisCompleted,
    ChartCompleted,
    DraftCompleted,
    ReportGoal,
    ResearchCompleted,
    ReviewCompleted,
)
from choreograph.testing import SagaKit
from choreograph.transport import MemoryLog, MemoryRecord, RecordTooLargeError, TopicPartition, partition_for

MiB = 1 << 20
WORKFLOW = "report"
STEPS = ("research", "analyze", "chart", "draft", "review")
COMPLETES_WITH: dict[str, type[Event]] = {
    "research": ResearchCompleted, "analyze": AnalysisCompleted, "chart": ChartCompleted,
    "draft": DraftCompleted, "review": ReviewCompleted,
}
REQUIRED_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_time", "ce_workflow", "ce_kind")
"""The CloudEvents headers without which a record is no event (Envelope.from_record)."""
FORGER_SOURCE = "choreo://forger"
"""The source of forged records that claim to be nobody's (neither the client, an agent nor the coordinator)."""
NOT_UTF8 = b"\xff\xfe\xc3(hostile)\x80"
"""Bytes that are not UTF-8 (a lone continuation byte, an invalid start byte)."""


class Treatment(enum.StrEnum):
    """What issue 10 expects the services to do with a record (see the module docstring)."""

    HANDLED = "handled"
    DEAD_LETTER = "dead_letter"
    DEAD_LETTER_OR_SKIP = "dead_letter_or_skip"
    DEAD_LETTER_OR_HANDLED = "dead_letter_or_handled"
    SKIP = "skip"
    REFUSED = "refused"


@dataclass(frozen=True, repr=False)
class Raw:
    """One record as a producer writes it.

    Attributes:
        topic: The full topic name (`<namespace>.events` or `<namespace>.registry`).
        key: The key (None: no key; partitioned round robin, or by `partition`).
        value: The value (None: a tombstone).
        headers: The headers, in order (duplicates kept).
        partition: An explicit partition, else by key as every producer does (murmur2).
        treatment: What issue 10 expects of it.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None
    treatment: Treatment = Treatment.HANDLED

    @property
    def size(self) -> int:
        """Key, value and headers, in bytes (Kafka's framing aside)."""
        return (len(self.key or b"") + len(self.value or b"")
                + sum(len(name) + len(value) for name, value in self.headers))

    def header(self, name: str) -> bytes | None:
        """The last value of header `name` (as a dict of the headers keeps it), or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found

    def __repr__(self) -> str:
        return self.describe()

    def describe(self, limit: int = 60) -> str:
        """A short, printable description (values elided past `limit` bytes)."""

        def cut(data: bytes | None) -> str:
            if data is None:
                return "None"
            return repr(data[:limit]) + (f"...({len(data)} bytes)" if len(data) > limit else "")

        headers = ", ".join(f"{name}={cut(value)}" for name, value in self.headers)
        return (f"Raw(topic={self.topic!r}, partition={self.partition}, key={cut(self.key)}, "
                f"value={cut(self.value)}, headers=[{headers}], treatment={self.treatment.value})")


@dataclass(frozen=True)
class Case:
    """A named hostile case: its records, what the issue expects, and the services it used to break.

    Attributes:
        name: The case's name.
        records: The records to write, in order.
        expect: The treatment issue 10 expects, in words.
        affects: Services that read it and used to fail on it ("coordinator" or a step's name): restart
            these after it, to see no crash loop and no wedge.
        workflow_id: The workflow the case is about, if one (a forged completion's, a duplicate's).
    """

    name: str
    records: tuple[Raw, ...]
    expect: str
    affects: tuple[str, ...] = ("coordinator",)
    workflow_id: str | None = None
    notes: tuple[str, ...] = field(default=())


# building blocks ----------------------------------------------------------------------------------


def headers_of(*, type: str, source: str, kind: Kind | str, workflow: str = WORKFLOW, workflow_id: str = "",
               step: str | None = None, id: str | None = None) -> tuple[tuple[str, bytes], ...]:
    """The CloudEvents headers a well-behaved producer would send: a new event id, stamped now, a new trace.

    With `id`, that event id and a fixed time, no trace: the same headers every call (for a generator that
    must be deterministic). A `kind` that is no Kind value is written as given (an unknown ce_kind).
    """
    known = kind if isinstance(kind, Kind) else Kind.OTHER
    if id is None:
        envelope = Envelope.new(type=type, source=source, workflow=workflow, workflow_id=workflow_id, kind=known,
                                step=step)
    else:
        envelope = Envelope(id, type, source, "2026-01-01T00:00:00.000Z", workflow, workflow_id, known, step)
    headers = envelope.headers()
    if not isinstance(kind, Kind):
        headers = [(name, kind.encode() if name == "ce_kind" else value) for name, value in headers]
    return tuple(headers)


def event(settings: Settings, body: Event, *, kind: Kind, workflow_id: str | None, step: str | None = None,
          source: str | None = None, type: str | None = None, treatment: Treatment = Treatment.HANDLED,
          key: bytes | str | None = "", workflow: str = WORKFLOW) -> Raw:
    """A record of `body` on the events topic, keyed by `workflow_id` (or `key`, when given as bytes/None).

    Args:
        settings: The namespace.
        body: The payload, Avro single-object encoded.
        kind: Its ce_kind.
        workflow_id: The workflow id (the key, UTF-8).
        step: Its ce_step.
        source: Its ce_source; the client's for a goal, else the step's agent's.
        type: Its ce_type; the body's own type unless given (a mismatch).
        treatment: What the issue expects of it.
        key: The raw key instead of the workflow id's UTF-8 bytes (bytes or None).
        workflow: Its ce_workflow.
    """
    if source is None:
        source = CLIENT_SOURCE if kind is Kind.GOAL else agent_source(workflow, step or "research")
    wid = workflow_id or ""
    headers = headers_of(type=type or body.type_name(), source=source, kind=kind, workflow=workflow,
                         workflow_id=wid, step=step)
    raw_key = wid.encode() if isinstance(key, str) else key
    return Raw(settings.events_topic, raw_key, body.encode(), headers, treatment=treatment)


def goal(settings: Settings, workflow_id: str | None = None, *, topic: str = "hostile",
         treatment: Treatment = Treatment.HANDLED) -> Raw:
    """A well-formed goal of the report workflow, as the client publishes it."""
    return event(settings, ReportGoal(topic=topic), kind=Kind.GOAL, workflow_id=workflow_id or new_workflow_id(),
                 treatment=treatment)


def completion(step: str, *, topic: str = "hostile", marker: str = "forged") -> Event:
    """A valid completion event of a report step (its fields name `marker`, so a use of it shows)."""
    match step:
        case "research":
            return ResearchCompleted(topic=topic, sources=[marker])
        case "analyze":
            return AnalysisCompleted(topic=topic, findings=[marker])
        case "chart":
            return ChartCompleted(topic=topic, chart_uri=marker)
        case "draft":
            return DraftCompleted(topic=topic, text=marker)
    return ReviewCompleted(topic=topic, approved=True, notes=marker)


def contract_records(settings: Settings, contract: StepContract, *, treatment: Treatment = Treatment.REFUSED,
                     source: str | None = None) -> tuple[Raw, ...]:
    """A contract as `transport._registry.announce` writes it: on the registry, and a marker per events partition."""
    key = f"{contract.workflow}/{contract.step}"
    headers = headers_of(type=StepContract.type_name(), source=source or agent_source(contract.workflow,
                                                                                      contract.step),
                         kind=Kind.OTHER, workflow=contract.workflow, workflow_id=key, step=contract.step)
    value = contract.encode()
    markers = tuple(Raw(settings.events_topic, key.encode(), value, headers, partition=p,
                        treatment=Treatment.DEAD_LETTER_OR_SKIP if treatment is Treatment.REFUSED else treatment)
                    for p in range(settings.partitions))
    return (Raw(settings.registry_topic, key.encode(), value, headers, treatment=treatment), *markers)


def schema_json(name: str, namespace: str = "hostile") -> str:
    """A small valid Avro record schema, as JSON text."""
    return orjson.dumps({"type": "record", "name": name, "namespace": namespace,
                         "fields": [{"name": "n", "type": "int"}]}).decode()


def filler(size: int, seed: bytes = b"hostile") -> bytes:
    """`size` bytes that are deterministic but not all alike (no compression would hide them)."""
    block = hashlib.sha256(seed).digest() * 64  # 2 KiB
    return (block * (size // len(block) + 1))[:size]


# the corpus ---------------------------------------------------------------------------------------


def tombstone(settings: Settings, *, with_headers: bool = True, workflow_id: str | None = None) -> Case:
    """A null value on the events topic, with a goal's CloudEvents headers or none."""
    wid = workflow_id or new_workflow_id()
    headers = headers_of(type=ReportGoal.type_name(), source=CLIENT_SOURCE, kind=Kind.GOAL,
                         workflow_id=wid) if with_headers else ()
    record = Raw(settings.events_topic, wid.encode(), None, headers, treatment=Treatment.DEAD_LETTER_OR_SKIP)
    return Case(f"tombstone{'' if with_headers else '_without_headers'}", (record,),
                "Killed the coordinator and the agents that read it (TypeError: object of type 'NoneType' has "
                "no len() in the codec), a crash loop while a saga is open on its partition. Expected: "
                "dead-lettered or skipped by the stated rule for tombstones; nobody dies.",
                affects=("coordinator", "research"), workflow_id=wid)


def huge_value(settings: Settings, size: int = 5 * MiB, *, workflow_id: str | None = None) -> Case:
    """A 5 MB value that is no event body, under a goal's headers (read by the coordinator and research)."""
    wid = workflow_id or new_workflow_id()
    headers = headers_of(type=ReportGoal.type_name(), source=CLIENT_SOURCE, kind=Kind.GOAL, workflow_id=wid)
    record = Raw(settings.events_topic, wid.encode(), filler(size), headers, treatment=Treatment.DEAD_LETTER)
    return Case("huge_value", (record,),
                "Killed the service that dead-letters it (MessageSizeTooLargeError: the copy is as big). "
                "Expected: dead-lettered as a truncated copy with its size and a digest of the original.",
                affects=("coordinator", "research"), workflow_id=wid)


def huge_goal(settings: Settings, size: int = 5 * MiB, *, workflow_id: str | None = None) -> Case:
    """A valid report goal of 5 MB (its topic field): larger than the namespace's max_event_bytes."""
    wid = workflow_id or new_workflow_id()
    record = goal(settings, wid, topic="x" * size, treatment=Treatment.DEAD_LETTER_OR_HANDLED)
    return Case("huge_goal", (record,),
                "Larger than max_event_bytes: dead-lettered as oversized (a truncated copy, size, digest), or "
                "handled: then research's result is too big and its step fails with EventTooLarge; never a "
                "crash.", affects=("coordinator", "research"), workflow_id=wid)


def oversized_result_goal(settings: Settings, size: int = 300_000, *, workflow_id: str | None = None) -> Case:
    """A valid 300 KB goal whose research result grows past 1 MiB (three sources repeat the topic)."""
    wid = workflow_id or new_workflow_id()
    record = goal(settings, wid, topic="y" * size)
    return Case("oversized_result_goal", (record,),
                "Killed research (its result is over 1 MiB) and, its input pinned, every restart. Expected: "
                "research's step fails with EventTooLarge (size and limit in the reason); the workflow is "
                "compensated.", affects=("research",), workflow_id=wid)


def non_utf8_key(settings: Settings, under: str = "client", *, step: str = "chart",
                 workflow_id: str | None = None) -> Case:
    """A key that is not UTF-8, under the client's source (a goal), another agent's (research's result,
    which analyze reads) or an agent's OWN (`choreo://agent/report/<step>`, kind step_completed)."""
    key = NOT_UTF8 + under.encode() + (workflow_id or "").encode()  # still not UTF-8, one per workflow id
    if under == "client":
        record = event(settings, ReportGoal(topic="bad key"), kind=Kind.GOAL, workflow_id=None, key=key,
                       treatment=Treatment.DEAD_LETTER_OR_SKIP)
        affects: tuple[str, ...] = ("coordinator", "research")
    elif under == "agent":
        record = event(settings, completion("research"), kind=Kind.STEP_COMPLETED, workflow_id=None,
                       step="research", key=key, treatment=Treatment.DEAD_LETTER_OR_SKIP)
        affects = ("coordinator", "analyze")
    elif under == "own":
        record = event(settings, completion(step), kind=Kind.STEP_COMPLETED, workflow_id=None, step=step,
                       source=agent_source(WORKFLOW, step), key=key, treatment=Treatment.DEAD_LETTER_OR_SKIP)
        affects = ("coordinator", step)
    else:
        raise ValueError(f"under must be client, agent or own, not {under!r}")
    return Case(f"non_utf8_key_{under}" + (f"_{step}" if under == "own" else ""), (record,),
                "Killed agents (UnicodeDecodeError where keys are decoded) and the client's wait; under an "
                "agent's own source it wedged that agent on restart (the failure is in the partition set-up). "
                "Expected: dead-lettered or skipped by the stated rule; the agent starts again.",
                affects=affects)


def null_key_goals(settings: Settings, count: int = 2, *, workflow_id: str | None = None) -> Case:
    """Goals with no key: the first ran as workflow id '', every later one was dropped without a trace."""
    records = tuple(replace(goal(settings, "", topic=f"null key {i}", treatment=Treatment.DEAD_LETTER_OR_SKIP),
                            key=None) for i in range(count))
    return Case("null_key_goals", records,
                "Expected: each is dead-lettered (or skipped by the stated rule), the same way; none runs as "
                "workflow id ''.", affects=("coordinator", "research"))


def type_body_mismatch(settings: Settings, *, workflow_id: str | None = None) -> Case:
    """A goal whose ce_type names ReportGoal while its body is ResearchCompleted's Avro."""
    wid = workflow_id or new_workflow_id()
    record = event(settings, completion("research"), kind=Kind.GOAL, workflow_id=wid, source=CLIENT_SOURCE,
                   type=ReportGoal.type_name(), treatment=Treatment.DEAD_LETTER)
    return Case("type_body_mismatch", (record,),
                "Started a saga in the coordinator (which never checked the body against the type) that then "
                "waited forever, pinning its commit. Expected: dead-lettered (body does not match ce_type).",
                affects=("coordinator", "research"), workflow_id=wid)


def unknown_step_completion(settings: Settings, *, workflow_id: str | None = None, step: str = "ghost") -> Case:
    """A goal, then at once a completion of a step that is not in the workflow's graph (while it is open)."""
    wid = workflow_id or new_workflow_id()
    forged = event(settings, ReviewCompleted(topic="ghost", approved=True, notes="ghost"),
                   kind=Kind.STEP_COMPLETED, workflow_id=wid, step=step, source=agent_source(WORKFLOW, step),
                   treatment=Treatment.DEAD_LETTER)
    return Case("unknown_step_completion", (goal(settings, wid), forged),
                "Was listed in the outcome's completed steps. Expected: dead-lettered as contradicting the "
                "graph; the outcome lists only the graph's steps.", workflow_id=wid)


def completion_before_goal(settings: Settings, *, workflow_id: str | None = None) -> Case:
    """research's completion of a workflow (from nobody's source) before that workflow's goal."""
    wid = workflow_id or new_workflow_id()
    early = event(settings, completion("research", marker="forged-before-goal"), kind=Kind.STEP_COMPLETED,
                  workflow_id=wid, step="research", source=FORGER_SOURCE, treatment=Treatment.SKIP)
    return Case("completion_before_goal", (early, goal(settings, wid)),
                "Was used as input (analyze ran on it, then ignored research's real result). Expected: the "
                "coordinator ignores (and counts) completions of workflows it has no goal for; the workflow "
                "runs on its real results.", affects=("coordinator", "analyze"), workflow_id=wid)


def duplicate_workflow_id(settings: Settings, *, workflow_id: str | None = None) -> Case:
    """Two goals with one workflow id (two event ids)."""
    wid = workflow_id or new_workflow_id()
    return Case("duplicate_workflow_id",
                (goal(settings, wid, topic="first"),
                 goal(settings, wid, topic="second", treatment=Treatment.DEAD_LETTER)),
                "The second was ignored without telling anyone. Expected: dead-lettered with 'duplicate "
                "workflow id' (and the client waiting on it gets an error).", workflow_id=wid)


def missing_header(settings: Settings, name: str, *, workflow_id: str | None = None) -> Case:
    """A goal without one of the required CloudEvents headers."""
    wid = workflow_id or new_workflow_id()
    record = goal(settings, wid)
    record = replace(record, headers=tuple(h for h in record.headers if h[0] != name),
                     treatment=Treatment.DEAD_LETTER)
    return Case(f"missing_{name}", (record,), "Expected: dead-lettered (missing CloudEvents header).",
                affects=("coordinator", "research"), workflow_id=wid)


def no_headers(settings: Settings, *, workflow_id: str | None = None) -> Case:
    """A valid goal body with no headers at all: nobody's event."""
    wid = workflow_id or new_workflow_id()
    record = replace(goal(settings, wid), headers=(), treatment=Treatment.DEAD_LETTER)
    return Case("no_headers", (record,), "Expected: dead-lettered by the coordinator (no envelope).",
                workflow_id=wid)


def malformed_header(settings: Settings, name: str, value: bytes = NOT_UTF8, *,
                     workflow_id: str | None = None) -> Case:
    """A goal whose header `name` is replaced by bytes that are not UTF-8 (or by `value`)."""
    wid = workflow_id or new_workflow_id()
    record = goal(settings, wid)
    record = replace(record, headers=tuple((h, value if h == name else v) for h, v in record.headers),
                     treatment=Treatment.DEAD_LETTER)
    return Case(f"malformed_{name}", (record,), "Expected: dead-lettered (malformed CloudEvents header).",
                affects=("coordinator", "research"), workflow_id=wid)


def duplicated_header(settings: Settings, name: str = "ce_type", second: bytes | None = None, *,
                      workflow_id: str | None = None) -> Case:
    """A goal carrying header `name` twice, the second value different (by default: another event's type)."""
    wid = workflow_id or new_workflow_id()
    record = goal(settings, wid)
    other = second if second is not None else {
        "ce_type": ResearchCompleted.type_name().encode(), "ce_kind": Kind.STEP_COMPLETED.value.encode(),
        "ce_source": agent_source(WORKFLOW, "research").encode(), "ce_workflow": b"elsewhere",
    }.get(name, b"second value")
    record = replace(record, headers=(*record.headers, (name, other)),
                     treatment=Treatment.DEAD_LETTER_OR_HANDLED)
    return Case(f"duplicated_{name}", (record,),
                "Readers disagreed on which value counts only by accident (a dict keeps the last). Expected: "
                "one rule for every reader (dead-lettered, or the stated value counts); never a crash.",
                affects=("coordinator", "research"), workflow_id=wid)


def unknown_kind(settings: Settings, kind: str = "bogus", *, workflow_id: str | None = None) -> Case:
    """A ReportGoal body whose ce_kind is no kind choreograph knows."""
    wid = workflow_id or new_workflow_id()
    record = event(settings, ReportGoal(topic="bogus kind"), kind=Kind.GOAL, workflow_id=wid)
    record = replace(record, headers=tuple((h, kind.encode() if h == "ce_kind" else v) for h, v in record.headers),
                     treatment=Treatment.DEAD_LETTER)
    return Case("unknown_kind", (record,), "Expected: dead-lettered (unknown ce_kind).",
                affects=("coordinator", "research"), workflow_id=wid)


def bad_body(settings: Settings, how: str = "garbage", *, workflow_id: str | None = None) -> Case:
    """A goal's headers over a body that cannot be read: garbage, truncated, empty, or an unknown fingerprint."""
    wid = workflow_id or new_workflow_id()
    valid = ReportGoal(topic="a topic long enough to cut", fail_at=None).encode()
    value = {"garbage": b"\x00\x01 not avro at all", "truncated": valid[:-5], "empty": b"",
             "unknown_fingerprint": b"\xc3\x01" + bytes(8) + b"\x02x", "trailing": valid + b"\x00\x00"}[how]
    record = replace(goal(settings, wid), value=value, treatment=Treatment.DEAD_LETTER)
    return Case(f"{how}_body", (record,), "Expected: dead-lettered with the decode error.",
                affects=("coordinator", "research"), workflow_id=wid)


def cyclic_workflow_started(settings: Settings, *, workflow_id: str | None = None) -> Case:
    """A goal, then at once a WorkflowStarted (coordinator's source) whose steps form a cycle."""
    wid = workflow_id or new_workflow_id()
    steps = [StepNode(name="research", depends_on=["review"], compensable=True),
             StepNode(name="review", depends_on=["research"], compensable=True)]
    forged = event(settings, WorkflowStarted(workflow=WORKFLOW, steps=steps), kind=Kind.OTHER, workflow_id=wid,
                   source=COORDINATOR_SOURCE, treatment=Treatment.DEAD_LETTER)
    return Case("cyclic_workflow_started", (goal(settings, wid), forged),
                "Crash-looped the coordinator while its saga is open (WorkflowError escapes where only "
                "ValueError is caught). Expected: dead-lettered; the saga runs on the graph the coordinator "
                "fixed.", workflow_id=wid)


def cyclic_contract(settings: Settings, workflow: str = "hostileloop", *, workflow_id: str | None = None) -> Case:
    """Two contracts of a workflow of their own whose dependencies form a cycle (a -> b -> a)."""
    a, b = EventSchema(name="hostile.LoopA", avro_schema=schema_json("LoopA")), \
        EventSchema(name="hostile.LoopB", avro_schema=schema_json("LoopB"))
    first = StepContract(workflow=workflow, step="a", agent=f"{workflow}.a", consumes=[b], completes_with=a,
                         compensable=False)
    second = StepContract(workflow=workflow, step="b", agent=f"{workflow}.b", consumes=[a], completes_with=b,
                          compensable=False)
    return Case("cyclic_contract", (*contract_records(settings, first), *contract_records(settings, second)),
                "Crash-looped the coordinator for good on the next goal of any workflow. Expected: refused "
                "when read (logged once); that workflow's goals fail with a clear reason; report is untouched.")


def cyclic_report_contract(settings: Settings, *, workflow_id: str | None = None) -> Case:
    """A contract that closes a cycle in report itself: step "loop" consumes ReviewCompleted and completes
    with ReportGoal, on which research depends."""
    contract = StepContract(workflow=WORKFLOW, step="loop", agent="report.loop",
                            consumes=[EventSchema.of(ReviewCompleted)], completes_with=EventSchema.of(ReportGoal),
                            compensable=False)
    return Case("cyclic_report_contract", contract_records(settings, contract),
                "Expected: refused when read; report's new goals fail with a clear reason (or the contract "
                "is ignored and report keeps its graph); no service dies.")


def unreadable_schema_contract(settings: Settings, workflow: str = "hostileschema", *,
                               schema: str = "{not json", workflow_id: str | None = None) -> Case:
    """A contract of a workflow of its own whose consumed schema is not valid JSON (or not Avro)."""
    contract = StepContract(workflow=workflow, step="s", agent=f"{workflow}.s",
                            consumes=[EventSchema(name="hostile.Bad", avro_schema=schema)],
                            completes_with=EventSchema(name="hostile.Done", avro_schema=schema_json("Done")),
                            compensable=False)
    suffix = "" if schema == "{not json" else "_not_avro"
    return Case(f"unreadable_schema_contract{suffix}", contract_records(settings, contract),
                "Crash-looped the coordinator for good. Expected: refused when read (logged once); that "
                "workflow's goals fail with a clear reason; report is untouched.",
                affects=("coordinator", "research"))


def unclosed_restore_marker(settings: Settings, *, workflow_id: str | None = None) -> Case:
    """On every events partition, a RestoreStarted from nobody's source, never closed, whose bracket reaches far
    into the future.

    Not in issue 10's list: found by the fuzz suite. Every later record of the partition counts as restored
    history, so a good goal there is silently dropped by every service (and the bracket pins every commit).
    """
    marker = RestoreStarted(restore_id="forged", archive="/nowhere", records=0, until_timestamp=2**62)
    record = event(settings, marker, kind=Kind.OTHER, workflow_id="restore-forged", source=FORGER_SOURCE,
                   treatment=Treatment.DEAD_LETTER_OR_SKIP)
    return Case("unclosed_restore_marker",
                tuple(replace(record, partition=p) for p in range(settings.partitions)),
                "Expected (proposed): a restore marker not from choreo://restore is dead-lettered, or a bracket "
                "is bounded; later goals of the partition are still work.")


MakeCase = Callable[..., Case]
"""`make(settings, *, workflow_id=None) -> Case`: the workflow id of the case's records, where it has one."""


def makers() -> dict[str, MakeCase]:
    """Every case of the corpus by name: each makes its records for a namespace, with fresh workflow ids
    unless `workflow_id` is given (contracts and keyless cases ignore it)."""
    found: list[MakeCase] = [
        tombstone, partial(tombstone, with_headers=False), huge_value, huge_goal, oversized_result_goal,
        partial(non_utf8_key, under="client"), partial(non_utf8_key, under="agent"),
        *(partial(non_utf8_key, under="own", step=step) for step in STEPS),
        null_key_goals, type_body_mismatch, unknown_step_completion, completion_before_goal, duplicate_workflow_id,
        *(partial(missing_header, name=name) for name in REQUIRED_HEADERS), no_headers,
        *(partial(malformed_header, name=name) for name in REQUIRED_HEADERS),
        partial(duplicated_header, name="ce_type"), partial(duplicated_header, name="ce_kind"), unknown_kind,
        *(partial(bad_body, how=how) for how in ("garbage", "truncated", "empty", "unknown_fingerprint", "trailing")),
        cyclic_workflow_started, cyclic_contract, cyclic_report_contract,
        unreadable_schema_contract, partial(unreadable_schema_contract, schema='{"type": "record"}'),
        unclosed_restore_marker,
    ]
    small = Settings(bootstrap_servers="memory", namespace="names", partitions=1)
    return {_name_of(make, small): make for make in found}


def _name_of(make: MakeCase, settings: Settings) -> str:
    """A case's name, without building its big values."""
    size = {"size": 16} if getattr(make, "func", make) in (huge_value, huge_goal, oversized_result_goal) else {}
    return make(settings, **size).name


def corpus(settings: Settings) -> list[Case]:
    """One of every case, fresh workflow ids each call (the real-broker suite writes each, then restarts)."""
    return [make(settings) for make in makers().values()]


# writing to the memory log ------------------------------------------------------------------------


def signed(kit: SagaKit, record: Raw) -> Raw:
    """`record` as the party its `ce_source` claims would write it with its real key: the hostile
    record comes from a trusted but misbehaving producer, the hardest case (unsigned records are
    refused before any rule here is reached)."""
    return replace(record, headers=tuple(kit.signed(record.key, record.value, record.headers)))


def write_memory(log: MemoryLog, record: Raw) -> MemoryRecord:
    """Append `record` to the memory log as a producer of its own would, past the producer size limit.

    The memory log refuses a record over 1 MiB as aiokafka's producer does; one larger is stored as a
    broker whose topic allows it stores a misbehaving producer's record.
    """
    try:
        return log.append(record.topic, record.value, record.key, record.partition, record.headers, None)
    except RecordTooLargeError:
        pass  # planted below
    partitions = log.partitions_of(record.topic)
    partition = record.partition
    if partition is None:
        partition = partition_for(record.key, partitions) if record.key is not None else 0
    stored = log.partition(TopicPartition(record.topic, partition))
    planted = MemoryRecord(record.topic, partition, stored.end, log.clock(), record.key, record.value,
                           record.headers)
    stored.records.append(planted)
    stored.end += 1
    log.wake()
    return planted
