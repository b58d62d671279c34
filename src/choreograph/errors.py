"""The exception tree: everything choreograph raises on purpose derives from ChoreographError.

The hierarchy::

    ChoreographError
    ├── ConfigurationError          bad settings, environment or CLI input
    │   └── BrokerUnavailable       no broker configured, running or reachable
    ├── SchemaError                 a schema file or model is unusable
    │   └── SchemaDriftError        a pydantic model and its .avsc disagree
    ├── DecodeError                 bytes that are not an event we can read (dead-lettered)
    │   ├── UnknownSchemaError      a fingerprint no known schema has
    │   └── InvalidPayloadError     decoded, but fails the model's validation
    ├── WorkflowError               a workflow cannot be started or is malformed
    │   └── GoalValidationError     goal data does not fit the workflow's goal schema
    ├── AgentDefinitionError        an Agent declaration is incomplete or inconsistent
    ├── ArchiveError                an archive cannot be written, read or restored as asked
    └── ReplayError                 a recording or sandbox re-run cannot be made as asked
"""

from __future__ import annotations


class ChoreographError(Exception):
    """Base of every error choreograph raises deliberately."""


class ConfigurationError(ChoreographError):
    """Settings, environment or command-line input that cannot work."""


class BrokerUnavailable(ConfigurationError):
    """No Kafka broker is configured, running, or reachable."""


class SchemaError(ChoreographError):
    """A schema cannot be loaded, parsed or bound to a model."""


class SchemaDriftError(SchemaError):
    """A pydantic event model no longer mirrors its Avro schema."""


class DecodeError(ChoreographError):
    """Bytes on a topic are not an event this consumer can read; the record is dead-lettered."""


class UnknownSchemaError(DecodeError):
    """The single-object header names a schema fingerprint no known schema has."""


class InvalidPayloadError(DecodeError):
    """The payload decoded but fails the event model's validation."""


class WorkflowError(ChoreographError):
    """A workflow cannot be started, or its declared step graph is malformed."""


class GoalValidationError(WorkflowError):
    """Goal data does not fit the workflow's goal schema."""


class AgentDefinitionError(ChoreographError):
    """An Agent declaration is incomplete or inconsistent."""


class ArchiveError(ChoreographError):
    """An archive directory cannot be written, read or restored as asked."""


class ReplayError(ChoreographError):
    """A workflow cannot be recorded, or re-run in a sandbox, as asked."""
