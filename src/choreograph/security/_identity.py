"""Who may speak: the identities of services and people, and what each may publish.

An identity is one of:
- `coordinator`: decides graphs (WorkflowStarted), compensation requests, timeouts and outcomes.
- `agent:<workflow>/<step>`: every copy of one step's agent; publishes that step's results,
  attempts, heartbeats, compensations, its contract and its presence, and nothing else.
- `publisher:<name>`: publishes goals, of the workflows the policy allows it (see Policy), and
  cancellations of those workflows.
- `operator:<name>`: a person's tools: restore markers, redrives and cancellations of any workflow.

`may_publish` is the rule, a pure function of the identity and what a record says it is (its
envelope headers); checks that need the payload or the workflow's contracts (a StepFailed naming
another step, a completion of the wrong type) are made by the services that read them
(saga._check.impostor and runtime._admission.forged in the coordinator, runtime._provenance in agents).
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from typing import NamedTuple

from ..errors import ConfigurationError
from ..events._envelope import (
    AGENT_SOURCE_PREFIX,
    COORDINATOR_SOURCE,
    RESTORE_SOURCE,
    Kind,
    agent_source,
)
from ..events._faults import AgentPresence, BreakerChanged
from ..events._models import CancellationRequested, RestoreCompleted, RestoreStarted, StepContract, WorkflowStarted


class Role(enum.StrEnum):
    """What kind of party an identity is."""

    COORDINATOR = "coordinator"
    AGENT = "agent"
    PUBLISHER = "publisher"
    OPERATOR = "operator"


class Identity(NamedTuple):
    """A party that signs what it publishes.

    Attributes:
        role: Its role.
        workflow: An agent's workflow ("" for other roles).
        name: An agent's step, or a publisher's or operator's name ("" for the coordinator).
    """

    role: Role
    workflow: str = ""
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> Identity:
        """Read an identity from its text form (`agent:report/draft`, `coordinator`, ...).

        Raises:
            ConfigurationError: Not an identity.
        """
        role, _, rest = text.partition(":")
        try:
            kind = Role(role)
        except ValueError:
            raise ConfigurationError(f"not an identity: {text!r} (coordinator, agent:W/S, publisher:N, "
                                     "operator:N)") from None
        if kind is Role.COORDINATOR:
            if rest:
                raise ConfigurationError(f"not an identity: {text!r} (the coordinator has no name)")
            return cls(kind)
        if kind is Role.AGENT:
            workflow, _, step = rest.partition("/")
            if not _word(workflow) or not _word(step):
                raise ConfigurationError(f"not an agent identity: {text!r} (agent:<workflow>/<step>)")
            return cls(kind, workflow, step)
        if not _word(rest):
            raise ConfigurationError(f"not an identity: {text!r} ({role}:<name>)")
        return cls(kind, "", rest)

    @classmethod
    def agent(cls, workflow: str, step: str) -> Identity:
        """The identity of a step's agent."""
        return cls(Role.AGENT, workflow, step)

    @classmethod
    def operator(cls, name: str) -> Identity:
        """The identity of a person's tools, `operator:<name>`.

        Raises:
            ConfigurationError: `name` is not a name (letters, digits, `_`, `-`, `.`).
        """
        return cls.parse(f"{Role.OPERATOR.value}:{name}")

    def __str__(self) -> str:
        if self.role is Role.COORDINATOR:
            return "coordinator"
        if self.role is Role.AGENT:
            return f"agent:{self.workflow}/{self.name}"
        return f"{self.role.value}:{self.name}"

    @property
    def file_stem(self) -> str:
        """A file name for its key: `agent-report-draft`, `coordinator`, `publisher-local`."""
        return str(self).replace(":", "-").replace("/", "-")


COORDINATOR = Identity(Role.COORDINATOR)

# The kinds each role publishes on the events topic.
_AGENT_KINDS = frozenset({Kind.STEP_COMPLETED, Kind.STEP_FAILED, Kind.STEP_ATTEMPT_FAILED, Kind.HEARTBEAT,
                          Kind.COMPENSATION_COMPLETED, Kind.COMPENSATION_FAILED})
_COORDINATOR_KINDS = frozenset({Kind.COMPENSATION_REQUESTED, Kind.OUTCOME, Kind.STEP_TIMED_OUT})
WORKFLOW_STARTED = WorkflowStarted.type_name()
STEP_CONTRACT = StepContract.type_name()
AGENT_STATUS = frozenset({AgentPresence.type_name(), BreakerChanged.type_name()})
RESTORE_MARKERS = frozenset({RestoreStarted.type_name(), RestoreCompleted.type_name()})
CANCELLATION = CancellationRequested.type_name()


def may_publish(identity: Identity, *, type: str, kind: Kind, source: str, workflow: str,
                step: str | None, goals: Collection[str] = ()) -> str | None:
    """Why `identity` may not publish a record that says it is this; None if it may.

    Args:
        identity: Who signed the record.
        type: Its ce_type (the payload's Avro full name).
        kind: Its ce_kind.
        source: Its ce_source.
        workflow: Its ce_workflow.
        step: Its ce_step.
        goals: The workflows a publisher may publish goals of ("*": any).

    Returns:
        A reason naming the identity and what it may not do, or None.
    """
    role = identity.role
    said = f"{kind.value} ({type}) from {source!r} for {workflow}/{step or '-'}"
    if kind is Kind.CANCEL_REQUESTED or type == CANCELLATION:
        return _may_cancel(identity, type, kind, source, workflow, goals, said)
    if type in RESTORE_MARKERS:
        return None if role is Role.OPERATOR and source == RESTORE_SOURCE else \
            f"{identity} may not publish restore markers: only an operator does ({said})"
    if role is Role.COORDINATOR:
        if source == COORDINATOR_SOURCE and (kind in _COORDINATOR_KINDS or type == WORKFLOW_STARTED):
            return None
        return f"coordinator may publish only graphs, timeouts, compensation requests and outcomes ({said})"
    if role is Role.AGENT:
        own = (workflow == identity.workflow and step == identity.name
               and source == agent_source(identity.workflow, identity.name))
        if own and (kind in _AGENT_KINDS or type == STEP_CONTRACT or type in AGENT_STATUS):
            return None
        return (f"{identity} may publish only its own step's results, attempts, compensations, contract "
                f"and status ({said})")
    if role is Role.PUBLISHER:
        reserved = source in (COORDINATOR_SOURCE, RESTORE_SOURCE) or source.startswith(AGENT_SOURCE_PREFIX)
        if kind is Kind.GOAL and not reserved and ("*" in goals or workflow in goals):
            return None
        allowed = "any workflow" if "*" in goals else (", ".join(sorted(goals)) or "no workflow")
        return f"{identity} may publish only goals of {allowed} ({said})"
    if type == STEP_CONTRACT and kind is Kind.OTHER:
        return None  # a retirement's marker (`choreo agents retire`); its value is checked by may_announce
    return f"{identity} may publish only restore markers, contract retirements, redrives and cancellations ({said})"


def _may_cancel(identity: Identity, type: str, kind: Kind, source: str, workflow: str, goals: Collection[str],
                said: str) -> str | None:
    """Why `identity` may not ask to cancel a workflow of `workflow`; None if it may.

    Whoever may start a workflow may stop it: a publisher of its goals (the policy's `goals`), and an
    operator for any workflow; never under a service's source, and only as a CancellationRequested of
    kind cancel_requested (the kind and the type go together).
    """
    role = identity.role
    reserved = source in (COORDINATOR_SOURCE, RESTORE_SOURCE) or source.startswith(AGENT_SOURCE_PREFIX)
    allowed = role is Role.OPERATOR or (role is Role.PUBLISHER and ("*" in goals or workflow in goals))
    if allowed and not reserved and kind is Kind.CANCEL_REQUESTED and type == CANCELLATION:
        return None
    return (f"{identity} may not cancel a {workflow!r} workflow: only a publisher of its goals or an operator "
            f"may, with a CancellationRequested of kind cancel_requested ({said})")


def may_announce(identity: Identity, workflow: str, step: str, *, retire: bool = False) -> str | None:
    """Why `identity` may not announce (or, with `retire`, remove) the contract of `workflow`/`step`; None if it may.

    An agent announces only its own step (the contract's payload names it, whatever the headers
    say); a contract is removed by an operator (`choreo agents retire`) or by its own agent.

    Args:
        identity: Who signed the registry record or contract marker.
        workflow: The contract's workflow.
        step: The contract's step.
        retire: A tombstone rather than an announcement.

    Returns:
        A reason naming the identity and the step, or None.
    """
    own = identity.role is Role.AGENT and (identity.workflow, identity.name) == (workflow, step)
    if own or (retire and identity.role is Role.OPERATOR):
        return None
    what = "remove" if retire else "announce"
    return f"{identity} may not {what} the contract of {workflow}/{step}"


def _word(text: str) -> bool:
    return bool(text) and text.replace("_", "").replace("-", "").replace(".", "").isalnum()
