"""Running workflows: agents, the saga coordinator, the client, and service processes.

The agent declaration and its runtime, the saga coordinator service, the client that publishes
goals and follows outcomes, and running any of them as an OS process.
"""

from ._agent import Agent, StepContext, load_agent
from ._agent_runtime import AgentRuntime
from ._breaker import Breaker
from ._client import Client, Progress, PublishedGoal
from ._coordinator import Coordinator
from ._guards import forbid, max_bytes
from ._processes import (
    LIBRARY_SERVICES,
    ServiceSpec,
    coordinator_spec,
    discover,
    index_spec,
    project_root,
    spawn,
    wait_ready,
)
from ._ratelimit import RateLimit
from ._service import run_agent, run_coordinator, serve

__all__ = [
    "LIBRARY_SERVICES",
    "Agent",
    "AgentRuntime",
    "Breaker",
    "Client",
    "Coordinator",
    "Progress",
    "PublishedGoal",
    "RateLimit",
    "ServiceSpec",
    "StepContext",
    "coordinator_spec",
    "discover",
    "forbid",
    "index_spec",
    "load_agent",
    "max_bytes",
    "project_root",
    "run_agent",
    "run_coordinator",
    "serve",
    "spawn",
    "wait_ready",
]
