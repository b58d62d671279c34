"""Typed events: pydantic v2 models bound to Avro record schemas, plus the framework's own events.

`schemas/*.avsc` is the source of truth. A model names its schema at class definition
(`class X(Event, schema=path_or_dict)`); a model that drifts from its schema is an import error.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Self, get_args

from pydantic import BaseModel, ConfigDict

from ..errors import InvalidPayloadError, SchemaDriftError, SchemaError
from . import _schema_check
from ._avro import AvroSchema, SchemaStore
from ._policy import RetryPolicy
from ._redact import has_sensitive, redact

SchemaSource = str | Path | Mapping[str, Any]


def schema_root() -> Path:
    """Where the bundled schemas live: inside the wheel, or `schemas/` of a source checkout."""
    bundled = Path(str(resources.files("choreograph"))) / "_schemas"
    if bundled.is_dir():
        return bundled
    return Path(__file__).resolve().parents[3] / "schemas"


def load_schema(source: SchemaSource) -> AvroSchema:
    """Load a record schema.

    Args:
        source: The schema as JSON data, as JSON text (a string starting with `{`), or the path of an
            .avsc file.

    Returns:
        The parsed schema.

    Raises:
        SchemaError: The file cannot be read, or the schema is not a valid Avro record.
    """
    if isinstance(source, Mapping):
        return AvroSchema.from_json(source)
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return AvroSchema.from_json(source)
    path = Path(source)
    try:
        return AvroSchema.from_json(path.read_text())
    except OSError as exc:
        raise SchemaError(f"cannot read schema {path}: {exc}") from exc


class Event(BaseModel):
    """Base of every event payload: a frozen pydantic model bound to an Avro record schema.

    Subclass with `schema=` naming its .avsc file (or giving the schema as a dict or JSON text);
    the class statement fails with SchemaError without one, and with SchemaDriftError when the
    model's fields do not mirror the schema's (names, types, optionality).
    """

    # Validators are built on first use, not at import: a command line starts ~40 ms sooner.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    avro: ClassVar[AvroSchema]
    _flat: ClassVar[bool] = False
    _sensitive: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        kwargs.pop("schema", None)  # consumed by __pydantic_init_subclass__, once fields exist
        super().__init_subclass__(**kwargs)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        source = kwargs.get("schema")
        if source is None:
            raise SchemaError(f"{cls.__qualname__}: an Event subclass must name its schema (schema=...)")
        cls.avro = load_schema(source)
        cls._flat = not any(_holds_model(f.annotation) for f in cls.model_fields.values())
        problems = _schema_check.drift(cls, cls.avro.source)
        if problems:
            raise SchemaDriftError(f"{cls.__qualname__} drifted from {cls.avro.name}: " + "; ".join(problems))
        cls._sensitive = has_sensitive(cls.avro)
        if cls._sensitive:  # a validation error would quote the value (defer_build: read at first use)
            cls.model_config = {**cls.model_config, "hide_input_in_errors": True}

    def __repr_args__(self) -> Any:
        """Fields as repr and str show them: a sensitive field's value (see _redact) as REDACTED."""
        if not self._sensitive:
            return super().__repr_args__()
        dumped = self.model_dump()
        shown = redact(self.avro, dumped)  # copies only what holds a mark: the rest keeps its own repr
        return [(name, value if name is None or shown.get(name) is dumped.get(name) else shown[name])
                for name, value in super().__repr_args__()]

    @classmethod
    def type_name(cls) -> str:
        """The Avro full name, which is also the CloudEvents `type` of this event."""
        return cls.avro.name

    def encode(self) -> bytes:
        """This event as an Avro single-object payload of its schema."""
        # A model without nested models is its own field dict; model_dump() would copy it (~2 us).
        return self.avro.encode(self.__dict__ if self._flat else self.model_dump())

    @classmethod
    def decode(cls, payload: bytes, store: SchemaStore) -> Self:
        """Decode a single-object payload written with any schema the store knows, read as this event.

        Args:
            payload: The single-object encoded bytes.
            store: The known writer schemas.

        Returns:
            The event.

        Raises:
            DecodeError: The payload cannot be decoded, or its writer schema is unknown
                (UnknownSchemaError).
            InvalidPayloadError: The decoded record fails this model's validation.
        """
        record = store.decode(payload, cls.avro)
        try:
            return cls.model_validate(record)
        except ValueError as exc:
            raise InvalidPayloadError(f"{cls.type_name()} fails validation: {exc}") from exc


def _holds_model(annotation: Any) -> bool:
    """Whether a field type is, or contains, a pydantic model (then encoding needs model_dump)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(arg) for arg in get_args(annotation))


def _framework(name: str) -> Path:
    """The bundled .avsc file of the framework event `name`."""
    return schema_root() / "choreograph" / f"{name}.avsc"


class StepFailed(Event, schema=_framework("step_failed")):
    """A step's handler raised: the saga coordinator starts compensating.

    Attributes:
        step: The step that failed.
        reason: The exception's message.
        error_type: The exception's class name.
    """

    step: str
    reason: str
    error_type: str
    attempts: int = 1


class CompensationRequested(Event, schema=_framework("compensation_requested")):
    """The coordinator asks the agent of a completed step to undo it.

    Attributes:
        step: The step to undo.
        failed_step: The step whose failure made the workflow compensate.
        reason: Why that step failed.
    """

    step: str
    failed_step: str
    reason: str


class CompensationCompleted(Event, schema=_framework("compensation_completed")):
    """An agent undid its step.

    Attributes:
        step: The step undone.
    """

    step: str


class CompensationFailed(Event, schema=_framework("compensation_failed")):
    """An agent could not undo its step: the workflow ends failed and needs a person.

    Attributes:
        step: The step that could not be undone.
        reason: The exception's message.
        error_type: The exception's class name.
    """

    step: str
    reason: str
    error_type: str


class StepNode(BaseModel):
    """One step of a workflow's step graph, as WorkflowStarted records it.

    Attributes:
        name: The step's name.
        depends_on: The steps whose completion events it consumes.
        compensable: Whether its agent can undo it.
        retry: How its failed attempts are retried; None: not at all.
        timeout_ms: The deadline of each attempt, from the moment all its inputs are in the log.
        heartbeat_timeout_ms: The longest silence between heartbeats of a running attempt.
    """

    model_config = ConfigDict(frozen=True, defer_build=True)
    name: str
    depends_on: list[str]
    compensable: bool
    retry: RetryPolicy | None = None
    timeout_ms: int | None = None
    heartbeat_timeout_ms: int | None = None

    @property
    def max_attempts(self) -> int:
        """Attempts in all, the first included."""
        return 1 if self.retry is None else self.retry.max_attempts


class WorkflowStarted(Event, schema=_framework("workflow_started")):
    """The coordinator fixed the step graph this workflow instance runs with, for its whole life.

    Attributes:
        workflow: The workflow's name.
        steps: Its steps, in a topological order.
    """

    workflow: str
    steps: list[StepNode]


class OutcomeStatus(enum.StrEnum):
    """How a workflow instance ended: completed, compensated, failed, timed out, or cancelled.

    Compensated after a step failed; timed out at its deadline; cancelled by a CancellationRequested
    (its completed steps compensated).
    """

    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class CancellationRequested(Event, schema=_framework("cancellation_requested")):
    """A request to cancel a running workflow (`choreo cancel`, Client.cancel), keyed by its workflow id.

    Believed only from a publisher the policy lets publish the workflow's goals, or an operator (see
    security.may_publish). Who asked is its signer (its ce_keyid header) and its ce_source, as for a
    goal: a name in the body would be a claim nobody checks. The coordinator ends the workflow as a
    failure would: completed steps compensated in reverse dependency order, results of steps still
    running compensated when they arrive, and the outcome `cancelled` with `reason` (saga._decide).

    Attributes:
        reason: Why; the outcome's reason.
    """

    reason: str


class WorkflowOutcome(Event, schema=_framework("workflow_outcome")):
    """The final word on a workflow instance.

    Attributes:
        workflow: The workflow's name.
        status: How it ended.
        failed_step: The step whose failure ended it, if one did.
        reason: Why it failed or was compensated, if it did not complete.
        completed_steps: The steps that completed, sorted.
        compensated_steps: The steps that were undone, sorted.
    """

    workflow: str
    status: OutcomeStatus
    failed_step: str | None = None
    reason: str | None = None
    completed_steps: list[str]
    compensated_steps: list[str]


class EventSchema(BaseModel):
    """An event type as announced on the registry: its Avro full name and schema JSON."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    name: str
    avro_schema: str

    @classmethod
    def of(cls, event: type[Event]) -> EventSchema:
        """The announcement of the event type `event`."""
        return cls(name=event.type_name(), avro_schema=event.avro.json())


class StepContract(Event, schema=_framework("step_contract")):
    """What an agent announces on the registry topic: the step it runs and the event types it speaks.

    Attributes:
        workflow: The workflow's name.
        step: The step the agent runs.
        agent: The agent's name.
        consumes: The event types it consumes; those no step completes with are the workflow's goals.
        completes_with: The event type it completes its step with.
        compensable: Whether it can undo its step.
        retry: How its failed attempts are retried; None: not at all.
        timeout_ms: The deadline of each attempt, from the moment all its inputs are in the log.
        heartbeat_timeout_ms: The longest silence between heartbeats of a running attempt.
    """

    workflow: str
    step: str
    agent: str
    consumes: list[EventSchema]
    completes_with: EventSchema
    compensable: bool
    retry: RetryPolicy | None = None
    timeout_ms: int | None = None
    heartbeat_timeout_ms: int | None = None


class RestoreStarted(Event, schema=_framework("restore_started")):
    """Opens a restore bracket on a partition (see choreograph.transport._restore).

    The records that follow it, up to RestoreCompleted and stamped no later than `until_timestamp`,
    are history re-published from an archive, not new work.

    Attributes:
        restore_id: The restore's id, shared by its markers on every partition.
        archive: The archive directory restored.
        records: How many records the restore re-publishes on this partition.
        until_timestamp: The newest restored record's timestamp (ms).
    """

    restore_id: str
    archive: str
    records: int
    until_timestamp: int


class RestoreCompleted(Event, schema=_framework("restore_completed")):
    """Closes the restore bracket RestoreStarted opened on this partition.

    Attributes:
        restore_id: The restore's id.
        records: How many records the restore re-published on this partition.
    """

    restore_id: str
    records: int


FRAMEWORK_EVENTS: tuple[type[Event], ...] = (
    StepFailed, CompensationRequested, CompensationCompleted, CompensationFailed,
    WorkflowStarted, WorkflowOutcome, RestoreStarted, RestoreCompleted, CancellationRequested,
)
