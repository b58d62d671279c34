"""choreograph: multi-agent workflows choreographed over a Kafka log, with saga compensation.

Agents are independent stream services reacting to typed Avro events; a thin coordinator derives
each workflow's state from the log and compensates completed steps when one fails.
"""

from typing import TYPE_CHECKING, Any

from .envelope import Envelope, Kind
from .errors import (
    AgentDefinitionError,
    ArchiveError,
    BrokerUnavailable,
    ChoreographError,
    ConfigurationError,
    DecodeError,
    GoalValidationError,
    InvalidPayloadError,
    ReplayError,
    SchemaDriftError,
    SchemaError,
    UnknownSchemaError,
    WorkflowError,
)
from .events import (
    CompensationCompleted,
    CompensationFailed,
    CompensationRequested,
    Event,
    OutcomeStatus,
    RestoreCompleted,
    RestoreStarted,
    StepContract,
    StepFailed,
    StepNode,
    WorkflowOutcome,
    WorkflowStarted,
)
from .graph import Graph
from .history import History, HistoryEntry, history
from .replay import Point, Snapshot, fold
from .settings import BrokerProfile, Settings

if TYPE_CHECKING:
    from ._runtime import AgentRuntime
    from .agent import Agent, StepContext
    from .archive import Archive, restore
    from .archiver import Archiver
    from .broker import EmbeddedBroker
    from .client import Client, PublishedGoal
    from .coordinator import Coordinator
    from .recording import Recording
    from .sandbox import ReplayReport, rerun

__version__ = "0.1.0"

# Imported on first use: a `choreo history` or `choreo state` process never needs the agent runtime,
# the coordinator or the client, and a command line should start fast.
_LAZY = {"Agent": ".agent", "StepContext": ".agent", "AgentRuntime": "._runtime", "EmbeddedBroker": ".broker",
         "Client": ".client", "PublishedGoal": ".client", "Coordinator": ".coordinator",
         "Archive": ".archive", "restore": ".archive", "Archiver": ".archiver", "Recording": ".recording",
         "ReplayReport": ".sandbox", "rerun": ".sandbox"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

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
    "BrokerProfile",
    "BrokerUnavailable",
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
    "GoalValidationError",
    "Graph",
    "History",
    "HistoryEntry",
    "InvalidPayloadError",
    "Kind",
    "OutcomeStatus",
    "Point",
    "PublishedGoal",
    "Recording",
    "ReplayError",
    "ReplayReport",
    "RestoreCompleted",
    "RestoreStarted",
    "SchemaDriftError",
    "SchemaError",
    "Settings",
    "Snapshot",
    "StepContext",
    "StepContract",
    "StepFailed",
    "StepNode",
    "UnknownSchemaError",
    "WorkflowError",
    "WorkflowOutcome",
    "WorkflowStarted",
    "__version__",
    "fold",
    "history",
    "rerun",
    "restore",
]
