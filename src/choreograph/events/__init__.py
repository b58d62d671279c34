"""Typed events: the models, the framework's own events, the CloudEvents envelope and the Avro codec.

Events travel Avro single-object encoded, their metadata in CloudEvents Kafka headers. Pure: no
broker, no I/O beyond reading bundled schemas.
"""

from ._avro import AvroSchema, SchemaStore
from ._envelope import (
    AGENT_SOURCE_PREFIX,
    CLIENT_SOURCE,
    COORDINATOR_SOURCE,
    RESTORE_SOURCE,
    Envelope,
    Kind,
    agent_source,
    derived_id,
    new_event_id,
    new_workflow_id,
    workflow_time_ms,
)
from ._models import (
    FRAMEWORK_EVENTS,
    CompensationCompleted,
    CompensationFailed,
    CompensationRequested,
    Event,
    EventSchema,
    OutcomeStatus,
    RestoreCompleted,
    RestoreStarted,
    StepContract,
    StepFailed,
    StepNode,
    WorkflowOutcome,
    WorkflowStarted,
    load_schema,
    schema_root,
)
from ._records import ConsumedRecord, StoredRecord

__all__ = [
    "AGENT_SOURCE_PREFIX",
    "CLIENT_SOURCE",
    "COORDINATOR_SOURCE",
    "FRAMEWORK_EVENTS",
    "RESTORE_SOURCE",
    "AvroSchema",
    "CompensationCompleted",
    "CompensationFailed",
    "CompensationRequested",
    "ConsumedRecord",
    "Envelope",
    "Event",
    "EventSchema",
    "Kind",
    "OutcomeStatus",
    "RestoreCompleted",
    "RestoreStarted",
    "SchemaStore",
    "StepContract",
    "StepFailed",
    "StepNode",
    "StoredRecord",
    "WorkflowOutcome",
    "WorkflowStarted",
    "agent_source",
    "derived_id",
    "load_schema",
    "new_event_id",
    "new_workflow_id",
    "schema_root",
    "workflow_time_ms",
]
