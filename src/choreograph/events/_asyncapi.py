"""An AsyncAPI 3.0.0 document of the events on the wire, built from announced step contracts.

Pure: it reads the contracts it is given (`choreo asyncapi` gives it what agents announced on the
registry, see timetravel.asyncapi_report) and names topics and servers from `Topology` (which
transport.Settings is). The document has one message per event type: each type a contract consumes
or completes with, and every type the coordinator and the agents' runtime publish themselves, each
with its Avro schema as the payload, the CloudEvents Kafka headers (binary mode) and the Kafka key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import metadata
from typing import Any, Protocol

import orjson

from ..errors import WorkflowError
from ._envelope import (
    CONTENT_TYPE,
    DEADLINE_HEADER,
    GOAL_ID_HEADER,
    REDRIVE_HEADER,
    SPEC_VERSION,
    Kind,
)
from ._faults import StepAttemptFailed, StepHeartbeat, StepTimedOut
from ._models import (
    FRAMEWORK_EVENTS,
    CompensationCompleted,
    CompensationFailed,
    CompensationRequested,
    Event,
    StepContract,
    StepFailed,
    WorkflowOutcome,
    WorkflowStarted,
)

AVRO_FORMAT = "application/vnd.apache.avro+json;version=1.9.0"
KAFKA_BINDING = "0.5.0"
HEADERS = "CloudEventsHeaders"

# What the framework itself publishes on the events topic, besides announced types (contracts and
# their tombstones are copied to every events partition, in order with goals).
FRAMEWORK_TYPES: tuple[type[Event], ...] = (*FRAMEWORK_EVENTS, StepAttemptFailed, StepTimedOut, StepHeartbeat,
                                            StepContract)
# Who publishes which framework types (saga._decide, saga._timers, saga._graph; runtime._handlers).
COORDINATOR_SENDS: tuple[type[Event], ...] = (WorkflowStarted, CompensationRequested, WorkflowOutcome, StepTimedOut)
AGENT_SENDS: tuple[type[Event], ...] = (StepAttemptFailed, StepHeartbeat, StepFailed, CompensationCompleted,
                                        CompensationFailed, StepContract)

_KEY = re.compile(r"[^A-Za-z0-9._-]")


class Topology(Protocol):
    """Where the events live: transport.Settings is one."""

    @property
    def namespace(self) -> str:
        """The prefix of every topic name."""

    @property
    def bootstrap_servers(self) -> str:
        """The broker's address(es), comma separated."""

    @property
    def events_topic(self) -> str:
        """The topic of every workflow event."""

    @property
    def registry_topic(self) -> str:
        """The compacted topic of announced step contracts."""


def component_key(name: str) -> str:
    """`name` as an AsyncAPI component key (letters, digits, `.`, `-`, `_`): anything else becomes `_`."""
    return _KEY.sub("_", name) or "_"


def package_version() -> str:
    """The installed choreograph's version; "0.0.0" when it is run from a source tree that is not installed."""
    try:
        return metadata.version("choreograph")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class _Messages:
    """Message components by key: one per distinct (type name, schema).

    A type announced with two schemas (two versions running side by side) gets `<name>`, then `<name>-2`, ...
    """

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}
        self._keys: dict[tuple[str, bytes], str] = {}

    def add(self, name: str, schema: Any, summary: str, key: str = "the workflow id") -> str:
        """The key of the message of type `name` with Avro schema `schema`, added if new."""
        identity = (name, orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
        if (known := self._keys.get(identity)) is not None:
            return known
        base = component_key(name)
        taken = sum(1 for n, _ in self._keys if n == name)
        ref = base if taken == 0 else f"{base}-{taken + 1}"
        self._keys[identity] = ref
        self.components[ref] = {
            "name": ref, "title": name, "summary": summary, "contentType": CONTENT_TYPE.decode(),
            "headers": {"allOf": [{"$ref": f"#/components/schemas/{HEADERS}"},
                                  {"type": "object", "properties": {"ce_type": {"type": "string", "const": name}}}]},
            "payload": {"schemaFormat": AVRO_FORMAT, "schema": schema},
            "bindings": {"kafka": {"key": {"type": "string", "description": key}, "bindingVersion": KAFKA_BINDING}},
        }
        return ref

    def framework(self, event: type[Event], key: str = "the workflow id") -> str:
        """The key of the message of the framework's type `event`, added if new."""
        doc = (event.__doc__ or event.type_name()).strip().splitlines()[0]
        return self.add(event.type_name(), event.avro.source, doc, key)


def asyncapi_document(contracts: Iterable[StepContract], settings: Topology, workflow: str | None = None,
                      version: str | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the events topic (and the registry) as the contracts describe them.

    Args:
        contracts: The announced step contracts (of every workflow).
        settings: The namespace, the broker's address and the topics' names.
        workflow: Only this workflow's steps and event types (the framework's types are always listed).
        version: The document's `info.version`; choreograph's version when None.

    Returns:
        The document, as JSON data: channels `events` and `registry`, one message per event type,
        one `receive` and one `send` operation per step, and the coordinator's.

    Raises:
        WorkflowError: `workflow` is given and no step of it is announced.
    """
    chosen = sorted((c for c in contracts if workflow in (None, c.workflow)), key=lambda c: (c.workflow, c.step))
    if workflow is not None and not chosen:
        raise WorkflowError(f"no step of workflow {workflow!r} is announced")
    messages = _Messages()
    operations: dict[str, Any] = {}
    completions = {(c.workflow, c.completes_with.name) for c in chosen}
    for contract in chosen:
        consumed = []
        for event in contract.consumes:
            what = "a step's completion" if (contract.workflow, event.name) in completions else "a goal"
            consumed.append(messages.add(event.name, orjson.loads(event.avro_schema),
                                         f"{what} of workflow {contract.workflow}"))
        done = messages.add(contract.completes_with.name, orjson.loads(contract.completes_with.avro_schema),
                            "a step's completion of workflow " + contract.workflow)
        if contract.compensable:
            consumed.append(messages.framework(CompensationRequested))
        name = component_key(f"{contract.workflow}.{contract.step}")
        operations[f"{name}.receive"] = _operation(
            "receive", consumed, f"step {contract.step} of {contract.workflow} (agent {contract.agent}) consumes")
        operations[f"{name}.send"] = _operation(
            "send", [done, *(messages.framework(e) for e in AGENT_SENDS if e is not StepContract)],
            f"step {contract.step} of {contract.workflow} (agent {contract.agent}) completes with, or fails")
    for framework in FRAMEWORK_TYPES:
        messages.framework(framework, "workflow/step" if framework is StepContract else "the workflow id")
    operations["coordinator.send"] = _operation(
        "send", [messages.framework(e) for e in COORDINATOR_SENDS], "the saga coordinator decides")
    operations["coordinator.receive"] = _operation("receive", list(messages.components),
                                                   "the saga coordinator reads every event")
    operations["agents.announce"] = {
        "action": "send", "channel": {"$ref": "#/channels/registry"}, "summary": "each agent announces its step",
        "messages": [{"$ref": "#/channels/registry/messages/StepContract"}]}
    contract_key = messages.framework(StepContract, "workflow/step")
    return {
        "asyncapi": "3.0.0",
        "info": {"title": f"choreograph {settings.namespace}", "version": version or package_version(),
                 "description": "Workflow events as the running agents announce them on "
                                f"{settings.registry_topic}" + (f" (workflow {workflow})" if workflow else "") + "."},
        "defaultContentType": CONTENT_TYPE.decode(),
        "servers": _servers(settings.bootstrap_servers),
        "channels": {
            "events": {"address": settings.events_topic, "title": "workflow events, keyed by workflow id",
                       "messages": {k: {"$ref": f"#/components/messages/{k}"} for k in messages.components},
                       "bindings": {"kafka": {"topic": settings.events_topic, "bindingVersion": KAFKA_BINDING}}},
            "registry": {"address": settings.registry_topic, "title": "announced step contracts (compacted)",
                         "messages": {"StepContract": {"$ref": f"#/components/messages/{contract_key}"}},
                         "bindings": {"kafka": {"topic": settings.registry_topic,
                                                "topicConfiguration": {"cleanup.policy": ["compact"]},
                                                "bindingVersion": KAFKA_BINDING}}},
        },
        "operations": operations,
        "components": {"messages": messages.components, "schemas": {HEADERS: cloudevents_headers()}},
    }


def _operation(action: str, keys: list[str], summary: str) -> dict[str, Any]:
    return {"action": action, "channel": {"$ref": "#/channels/events"}, "summary": summary,
            "messages": [{"$ref": f"#/channels/events/messages/{k}"} for k in dict.fromkeys(keys)]}


def _servers(bootstrap: str) -> dict[str, Any]:
    hosts = [h.strip() for h in bootstrap.split(",") if h.strip()] or [bootstrap]
    return {("kafka" if i == 0 else f"kafka-{i + 1}"): {"host": host, "protocol": "kafka"}
            for i, host in enumerate(hosts)}


def cloudevents_headers() -> dict[str, Any]:
    """The Kafka headers of every event, as a JSON schema (CloudEvents Kafka binding, binary mode)."""
    def text(description: str, **more: Any) -> dict[str, Any]:
        return {"type": "string", "description": description, **more}

    return {
        "type": "object",
        "required": ["ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "content-type", "ce_workflow",
                     "ce_kind"],
        "properties": {
            "ce_specversion": text("CloudEvents version", const=SPEC_VERSION.decode()),
            "ce_id": text("the event id (a UUID)"),
            "ce_type": text("the Avro full name of the payload's writer schema"),
            "ce_source": text("who published it: choreo://coordinator, choreo://client, choreo://restore, "
                              "choreo://agent/<workflow>/<step>"),
            "ce_time": text("when it was published, ISO 8601 UTC in milliseconds", format="date-time"),
            "content-type": text("the value's encoding: Avro single-object encoding",
                                 const=CONTENT_TYPE.decode()),
            "ce_workflow": text("the workflow's name"),
            "ce_kind": text("the event's role in the saga", enum=[k.value for k in Kind]),
            "ce_step": text("the step it belongs to"),
            "ce_causationid": text("the id of the event that caused it"),
            "traceparent": text("W3C trace context"),
            GOAL_ID_HEADER: text("on the coordinator's decisions: the id of the goal the workflow runs for"),
            DEADLINE_HEADER: text("on a goal: the workflow's deadline, Unix milliseconds as decimal text"),
            "ce_keyid": text("the signer's key id, 16 hex digits"),
            "ce_signature": text("base64 of the Ed25519 signature"),
            REDRIVE_HEADER: text("on a redriven record: how many times it was redriven from the dead-letter topic"),
        },
    }
