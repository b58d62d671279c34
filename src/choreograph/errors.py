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
    │   ├── GoalValidationError     goal data does not fit the workflow's goal schema
    │   ├── GoalRejected            the coordinator refused a published goal (dead-lettered)
    │   └── WorkflowFinished        a workflow asked to change (cancel) has its outcome already
    ├── EventTooLarge               an event over the namespace's maximum event size
    ├── SetUpError                  a service could not set up its assigned partitions
    ├── NonRetryable                raised by a handler: fail the step now, no retry
    ├── GuardRejected               a step's result failed one of its guards (a failed attempt)
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


class GoalRejected(WorkflowError):
    """The coordinator dead-lettered a published goal (e.g. a duplicate workflow id): it never runs."""


class WorkflowFinished(WorkflowError):
    """A workflow asked to change (Client.cancel) has its outcome already: nothing was published.

    Attributes:
        workflow_id: The workflow instance's id.
        status: Its outcome's status (an OutcomeStatus value).
    """

    def __init__(self, workflow_id: str, status: str) -> None:
        """Say which workflow ended, and how."""
        super().__init__(f"{workflow_id} is already {status}; nothing published")
        self.workflow_id = workflow_id
        self.status = status


class EventTooLarge(ChoreographError):
    """An event is larger than the namespace's maximum event size (Settings.max_event_bytes).

    Attributes:
        size: The event's size in bytes (key, value and headers).
        limit: The maximum.
    """

    def __init__(self, what: str, size: int, limit: int) -> None:
        """Say what is too large (e.g. "the result of step 'draft'"), its size and the limit."""
        super().__init__(f"{what} is {size} bytes, over the maximum event size of {limit} bytes")
        self.size = size
        self.limit = limit


class SetUpError(ChoreographError):
    """A service could not set up the partitions it was assigned; it stops rather than wait forever."""


class NonRetryable(ChoreographError):
    """Raise it from a handler (or a compensation) to fail at once, whatever the retry policy says.

    `raise NonRetryable("card declined") from exc`: the step fails with this message; its
    error_type is the cause's class name when there is a cause.
    """


class GuardRejected(ChoreographError):
    """A step's result failed one of its guards (`@agent.guard`): the attempt fails, nothing is published.

    It is a failed attempt like a handler's exception: retried per the step's `Retry` (list
    GuardRejected in `Retry(non_retryable=...)` to fail at once), then StepFailed with this message.

    Attributes:
        guard: The guard's name.
        reason: Why it rejected the result (for a guard that raised: the exception).
    """

    def __init__(self, guard: str, reason: str) -> None:
        """Say which guard rejected the result, and why."""
        super().__init__(f"guard {guard} rejected the result: {reason}")
        self.guard = guard
        self.reason = reason


class AgentDefinitionError(ChoreographError):
    """An Agent declaration is incomplete or inconsistent."""


class ArchiveError(ChoreographError):
    """An archive directory cannot be written, read or restored as asked."""


class ReplayError(ChoreographError):
    """A workflow cannot be recorded, or re-run in a sandbox, as asked."""
