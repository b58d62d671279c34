"""Avro single-object encoding, schema resolution, drift between models and .avsc, bad bytes."""

from __future__ import annotations

import struct

import pytest
from helpers import ROOT

from choreograph import (
    DecodeError,
    Event,
    OutcomeStatus,
    SchemaDriftError,
    UnknownSchemaError,
    WorkflowOutcome,
)
from choreograph.events import FAULT_EVENTS, FRAMEWORK_EVENTS, AvroSchema, SchemaStore, StepContract, schema_root


def crc64_avro(data: bytes) -> int:
    """The fingerprint algorithm exactly as the Avro specification gives it."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_reference_fingerprint_matches_the_spec_vector() -> None:
    assert crc64_avro(b'"null"') == 7195948357588979594


def test_single_object_header_is_magic_plus_little_endian_fingerprint() -> None:
    payload = WorkflowOutcome(workflow="w", status=OutcomeStatus.COMPLETED, completed_steps=[],
                              compensated_steps=[]).encode()
    from fastavro.schema import to_parsing_canonical_form

    canonical = to_parsing_canonical_form(dict(WorkflowOutcome.avro.source)).encode()
    assert payload[:2] == b"\xc3\x01"
    assert payload[2:10] == struct.pack("<Q", crc64_avro(canonical))


@pytest.mark.parametrize("event", [*FRAMEWORK_EVENTS, *FAULT_EVENTS, StepContract], ids=lambda e: e.__name__)
def test_every_framework_schema_is_a_file_in_schemas(event: type[Event]) -> None:
    assert (ROOT / "schemas").resolve() == schema_root().resolve()
    names = {AvroSchema.from_json(p.read_text()).name for p in (ROOT / "schemas").rglob("*.avsc")}
    assert event.type_name() in names


def test_every_shipped_model_mirrors_its_schema() -> None:
    # Drift raises at class creation, so importing every model module is the check.
    import choreograph.examples.report._events as report

    models: list[type[Event]] = [*FRAMEWORK_EVENTS, *FAULT_EVENTS, StepContract, *(v for v in vars(report).values()
                                                                   if isinstance(v, type) and issubclass(v, Event)
                                                                   and v is not Event)]
    assert len(models) >= 13
    # schemas/archive/ holds the archive's file format, which is not an event and has no model;
    # schemas/choreograph/past/ earlier versions of framework schemas, kept to read old logs.
    schemas = {AvroSchema.from_json(p.read_text()).name for p in (ROOT / "schemas").rglob("*.avsc")
               if p.parent.name not in ("archive", "past")}
    assert {m.type_name() for m in models} == schemas, "every .avsc has a model and every model a .avsc"


GOAL_V1 = {"type": "record", "name": "Goal", "namespace": "t",
           "fields": [{"name": "topic", "type": "string"}]}
GOAL_V2 = {"type": "record", "name": "Goal", "namespace": "t",
           "fields": [{"name": "topic", "type": "string"},
                      {"name": "priority", "type": ["null", "long"], "default": None}]}


@pytest.mark.parametrize("drifted", [
    {"topic": int},                                   # type changed
    {"topic": str, "extra": str},                     # field only in the model
    {},                                               # field only in the schema
    {"topic": str | None},                            # optional in the model only
])
def test_a_model_that_drifts_from_its_schema_fails_at_definition(drifted: dict[str, object]) -> None:
    with pytest.raises(SchemaDriftError):
        type("Drifted", (Event,), {"__annotations__": drifted, "__module__": __name__}, schema=GOAL_V1)


class GoalV1(Event, schema=GOAL_V1):
    topic: str


class GoalV2(Event, schema=GOAL_V2):
    topic: str
    priority: int | None = None


def store_of(*events: type[Event]) -> SchemaStore:
    store = SchemaStore()
    for event in events:
        store.add(event.avro)
    return store


def test_a_reader_resolves_a_writer_with_an_added_optional_field_both_ways() -> None:
    store = store_of(GoalV1, GoalV2)
    assert GoalV1.decode(GoalV2(topic="a", priority=3).encode(), store) == GoalV1(topic="a")
    assert GoalV2.decode(GoalV1(topic="a").encode(), store) == GoalV2(topic="a", priority=None)


@pytest.mark.parametrize(("payload", "error"), [
    (b"", DecodeError),
    (b"\x00\x01garbage-bytes", DecodeError),
    (b"\xc3\x01" + bytes(8) + b"\x02a", UnknownSchemaError),
    (GoalV2(topic="abc", priority=7).encode()[:-1], DecodeError),          # truncated
    (GoalV1(topic="abc").encode() + b"\x00", DecodeError),                 # trailing bytes
])
def test_bytes_that_are_not_a_readable_event_raise_decode_errors(payload: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        GoalV1.decode(payload, store_of(GoalV1, GoalV2))


def test_envelope_follows_the_cloudevents_kafka_binding_and_round_trips() -> None:
    from choreograph import Envelope, Kind

    goal = Envelope.new(type="report.ReportGoal", source="choreo://cli", workflow="report", workflow_id="wf-1",
                        kind=Kind.GOAL)
    step = Envelope.new(type="report.ResearchCompleted", source="choreo://agent/report/research", workflow="report",
                        workflow_id="wf-1", kind=Kind.STEP_COMPLETED, step="research", cause=goal)
    headers = dict(step.headers())
    assert {"ce_id", "ce_type", "ce_source", "ce_time", "ce_specversion", "content-type"} <= headers.keys()
    assert headers["ce_specversion"] == b"1.0"
    assert headers["content-type"] == b"application/avro"
    assert headers["ce_causationid"] == goal.id.encode()
    assert step.key == b"wf-1"
    # W3C trace context: same trace as the cause, a new span.
    assert step.traceparent
    assert goal.traceparent
    assert step.traceparent.split("-")[1] == goal.traceparent.split("-")[1]
    assert step.traceparent.split("-")[2] != goal.traceparent.split("-")[2]
    assert Envelope.from_record(step.key, step.headers()) == step
    with pytest.raises(DecodeError, match="ce_id"):
        Envelope.from_record(b"wf-1", [h for h in step.headers() if h[0] != "ce_id"])
