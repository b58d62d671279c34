"""choreograph: multi-agent workflows choreographed over a Kafka log, with saga compensation.

Agents are independent stream services reacting to typed Avro events; a thin coordinator derives
each workflow's state from the log and compensates completed steps when one fails.
"""

from typing import TYPE_CHECKING, Any

from . import _compat
from .errors import (
    AgentDefinitionError,
    ArchiveError,
    BrokerUnavailable,
    ChoreographError,
    ConfigurationError,
    DecodeError,
    EventTooLarge,
    GoalRejected,
    GoalValidationError,
    GuardRejected,
    InvalidPayloadError,
    NonRetryable,
    ReplayError,
    SchemaDriftError,
    SchemaError,
    SetUpError,
    UnknownSchemaError,
    WorkflowError,
    WorkflowFinished,
)
from .events import (
    CancellationRequested,
    CompensationCompleted,
    CompensationFailed,
    CompensationRequested,
    Envelope,
    Event,
    Kind,
    OutcomeStatus,
    RestoreCompleted,
    RestoreStarted,
    Retry,
    StepAttemptFailed,
    StepContract,
    StepFailed,
    StepHeartbeat,
    StepNode,
    StepTimedOut,
    WorkflowOutcome,
    WorkflowStarted,
)
from .saga import Graph, HistoryEntry, Point, Snapshot, fold
from .transport._settings import BrokerProfile, Settings

if TYPE_CHECKING:
    from .runtime import (
        Agent,
        AgentRuntime,
        Breaker,
        Client,
        Coordinator,
        PublishedGoal,
        RateLimit,
        StepContext,
        forbid,
        max_bytes,
    )
    from .sandbox import ReplayReport, rerun
    from .timetravel import Archive, Archiver, History, Recording, history, restore
    from .transport import EmbeddedBroker

__version__ = "0.1.0"

_compat.install()  # old module paths (choreograph.settings, ...) stay importable

# Imported on first use: `import choreograph` loads no broker client (aiokafka), and a `choreo
# history` or `choreo state` process never needs the agent runtime, the coordinator or the client.
_LAZY = {
    **dict.fromkeys(
        ["Agent", "AgentRuntime", "Breaker", "Client", "Coordinator", "PublishedGoal", "RateLimit", "StepContext",
         "forbid", "max_bytes"], ".runtime"),
    **dict.fromkeys(["Archive", "Archiver", "History", "Recording", "history", "restore"], ".timetravel"),
    **dict.fromkeys(["ReplayReport", "rerun"], ".sandbox"),
    "EmbeddedBroker": ".transport",
}


def __getattr__(name: str) -> Any:
    """Import a name of `_LAZY` from its subpackage on first use (PEP 562), and keep it.

    Args:
        name: The attribute asked for.

    Returns:
        The attribute.

    Raises:
        AttributeError: `choreograph` has no attribute `name`.
    """
    if name in _LAZY:
        import importlib  # deferred for start-up speed, see _LAZY

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'choreograph' has no attribute {name!r}")

__all__ = [
    "Agent",
    "AgentDefinitionError",
    "AgentRuntime",
    "Archive",
    "ArchiveError",
    "Archiver",
    "Breaker",
    "BrokerProfile",
    "BrokerUnavailable",
    "CancellationRequested",
    "ChoreographError",
    "Client",
    "CompensationCompleted",
    "CompensationFailed",
    "CompensationRequested",
    "ConfigurationError",
    "Coordinator",
    "DecodeError",
    "EmbeddedBroker",
    "Envelope",
    "Event",
    "EventTooLarge",
    "GoalRejected",
    "GoalValidationError",
    "Graph",
    "GuardRejected",
    "History",
    "HistoryEntry",
    "InvalidPayloadError",
    "Kind",
    "NonRetryable",
    "OutcomeStatus",
    "Point",
    "PublishedGoal",
    "RateLimit",
    "Recording",
    "ReplayError",
    "ReplayReport",
    "RestoreCompleted",
    "RestoreStarted",
    "Retry",
    "SchemaDriftError",
    "SchemaError",
    "SetUpError",
    "Settings",
    "Snapshot",
    "StepAttemptFailed",
    "StepContext",
    "StepContract",
    "StepFailed",
    "StepHeartbeat",
    "StepNode",
    "StepTimedOut",
    "UnknownSchemaError",
    "WorkflowError",
    "WorkflowFinished",
    "WorkflowOutcome",
    "WorkflowStarted",
    "__version__",
    "fold",
    "forbid",
    "history",
    "max_bytes",
    "rerun",
    "restore",
]
