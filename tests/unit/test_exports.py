"""The public faces of choreograph and its subpackages: pinned names, and docstrings on all of them.

Every module behind these packages is private (`_x.py`), so ruff's D1xx rules, which only look at
public modules, never ask for a docstring on what the packages export. These tests do: an exported
class or function, and every public method or property choreograph defines on an exported class,
must carry a docstring with a one-line summary (Google style).

Adding or removing an exported name is a deliberate change: edit the list here with it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

EXPORTS: dict[str, list[str]] = {
    "choreograph": [
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
    ],
    "choreograph.cli": [
        "app",
        "main",
    ],
    "choreograph.examples": [],
    "choreograph.events": [
        "AGENT_SOURCE_PREFIX",
        "AgentPresence",
        "AvroSchema",
        "BreakerChanged",
        "BreakerState",
        "CLIENT_SOURCE",
        "COORDINATOR_SOURCE",
        "CancellationRequested",
        "CompensationCompleted",
        "CompensationFailed",
        "CompensationRequested",
        "ConsumedRecord",
        "DEADLINE_HEADER",
        "Envelope",
        "Event",
        "EventSchema",
        "FAULT_EVENTS",
        "FRAMEWORK_EVENTS",
        "Kind",
        "NO_RETRY",
        "OutcomeStatus",
        "REDACTED",
        "REDRIVE_HEADER",
        "RESTORE_SOURCE",
        "RestoreCompleted",
        "RestoreStarted",
        "Retry",
        "RetryPolicy",
        "SchemaStore",
        "StepAttemptFailed",
        "StepContract",
        "StepFailed",
        "StepHeartbeat",
        "StepNode",
        "StepTimedOut",
        "StoredRecord",
        "WorkflowOutcome",
        "WorkflowStarted",
        "agent_source",
        "derived_id",
        "load_schema",
        "new_event_id",
        "new_workflow_id",
        "redact",
        "schema_root",
        "workflow_time_ms",
    ],
    "choreograph.index": [
        "COMPENSATING",
        "IndexStore",
        "IndexedEvent",
        "Indexer",
        "Listing",
        "RUNNING",
        "SCHEMA_VERSION",
        "Skip",
        "StepRun",
        "StepStats",
        "Summary",
        "fold",
        "index_path",
        "indexed_event",
        "list_workflows",
        "status_counts",
        "step_stats",
        "workflow_row",
    ],
    "choreograph.runtime": [
        "Agent",
        "AgentRuntime",
        "Breaker",
        "Client",
        "Coordinator",
        "LIBRARY_SERVICES",
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
    ],
    "choreograph.saga": [
        "Decision",
        "Fact",
        "Graph",
        "HistoryEntry",
        "Mismatch",
        "Point",
        "SagaState",
        "Snapshot",
        "catalog_for",
        "check",
        "diff",
        "entries_of",
        "entry_of",
        "evolve",
        "fact_of",
        "fold",
        "goal_types",
        "handle",
        "is_outcome",
        "settle",
    ],
    "choreograph.sandbox": [
        "ReplayReport",
        "rerun",
        "rerun_steps",
    ],
    "choreograph.timetravel": [
        "Archive",
        "Archiver",
        "History",
        "Recording",
        "history",
        "record",
        "restore",
        "state_report",
        "write_segment",
    ],
    "choreograph.security": [
        "COORDINATOR",
        "Entry",
        "Identity",
        "KEY_ID_HEADER",
        "KeyPair",
        "Policy",
        "PolicyFile",
        "Rejected",
        "Role",
        "SIGNATURE_HEADER",
        "Signer",
        "TrustedKey",
        "Verifier",
        "key_id",
        "key_path",
        "local_key",
        "may_announce",
        "may_publish",
        "parse_public",
        "public_text",
        "signed_message",
        "write_policy",
    ],
    "choreograph.telemetry": [
        "AgentMetrics",
        "CoordinatorMetrics",
        "CountingProducer",
        "MetricsServer",
        "ServiceMetrics",
        "Tracing",
        "disable_metrics",
        "enable_metrics",
        "exporter_names",
        "message_attributes",
        "serve_metrics",
        "service_meter",
        "setup_tracing",
        "span_name",
        "tracing",
        "use_tracer_provider",
    ],
    "choreograph.testing": [
        "COORDINATOR",
        "Crash",
        "KitError",
        "SagaKit",
    ],
    "choreograph.ui": [
        "Agents",
        "Filters",
        "Markup",
        "Overview",
        "Source",
        "StepsView",
        "WorkflowView",
        "escape",
        "fold_entries",
        "make_app",
        "render",
        "serve",
    ],
    "choreograph.transport": [
        "BrokerProfile",
        "CommitFailedError",
        "Consumer",
        "Contracts",
        "EmbeddedBroker",
        "GroupMember",
        "Kafka",
        "KafkaConsumer",
        "KafkaTransport",
        "LocalBroker",
        "MemoryConsumer",
        "MemoryLog",
        "MemoryProducer",
        "MemoryRecord",
        "MemoryTransport",
        "OffsetAndTimestamp",
        "PROFILES",
        "Producer",
        "RebalanceListener",
        "Record",
        "RecordMetadata",
        "RecordTooLargeError",
        "Registry",
        "Settings",
        "SigningProducer",
        "TopicPartition",
        "Transport",
        "Trust",
        "announce",
        "framework_store",
        "keys_dir",
        "murmur2",
        "operator_identity",
        "partition_for",
        "policy_path",
        "publisher_identity",
        "service_key",
        "service_policy",
        "service_verifier",
        "terminate",
        "verification_off",
    ],
}

PACKAGES = sorted(EXPORTS)


def _module(package: str) -> ModuleType:
    return importlib.import_module(package)


def test_every_public_subpackage_is_pinned() -> None:
    import choreograph

    subpackages = {f"choreograph.{info.name}" for info in pkgutil.iter_modules(choreograph.__path__)
                   if info.ispkg and not info.name.startswith("_")}
    assert sorted(subpackages - set(EXPORTS)) == [], "public subpackages with no pinned list"
    assert sorted(set(EXPORTS) - subpackages - {"choreograph"}) == [], "pinned packages that are gone"


@pytest.mark.parametrize("package", PACKAGES)
def test_pinned_lists_are_sorted_and_unique(package: str) -> None:
    assert EXPORTS[package] == sorted(set(EXPORTS[package]))


@pytest.mark.parametrize("package", PACKAGES)
def test_exported_names_are_pinned(package: str) -> None:
    exported = _module(package).__all__
    assert len(exported) == len(set(exported)), f"{package}.__all__ lists a name twice"
    assert sorted(exported) == EXPORTS[package]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package: str) -> None:
    module = _module(package)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package} exports names it cannot resolve: {missing}"


# --- docstrings -------------------------------------------------------------------------------


def _own(obj: Any) -> bool:
    """Whether `obj` is choreograph's code, not a library's."""
    return str(getattr(obj, "__module__", "")).split(".")[0] == "choreograph"


def _exported_objects() -> Iterator[tuple[str, Any]]:
    """(dotted name, object) of every exported class and function, each object once."""
    seen: set[int] = set()
    for package in PACKAGES:
        module = _module(package)
        for name in EXPORTS[package]:
            obj = getattr(module, name)
            # Constants, type aliases, TypeVars, instances (cli.app, a Typer) and modules have no docstring
            # of their own to check.
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or id(obj) in seen:
                continue
            seen.add(id(obj))
            yield f"{obj.__module__}.{obj.__qualname__} (exported by {package})", obj


def _own_docstring(obj: Any) -> str | None:
    """The docstring written on `obj` itself: not inherited, not generated."""
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__")
        # dataclasses and NamedTuples make one up from the signature: `Name(field: type, ...)`.
        if isinstance(doc, str) and doc.startswith(f"{obj.__name__}("):
            return None
        return doc if isinstance(doc, str) else None
    return getattr(obj, "__doc__", None)


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """Public methods and properties choreograph defines on `cls` or on its own base classes."""
    fields: set[str] = set(getattr(cls, "model_fields", None) or ())
    seen: set[str] = set()
    for owner in cls.__mro__:
        if not _own(owner):
            continue  # object, BaseModel, Exception, tuple, Protocol, StrEnum: inherited from elsewhere
        for name, value in vars(owner).items():
            if name.startswith("_") or name in seen or name in fields or name.startswith("model_"):
                continue
            seen.add(name)
            if isinstance(value, (classmethod, staticmethod)):
                member: Any = value.__func__
            elif isinstance(value, (property, functools.cached_property)) or inspect.isfunction(value):
                member = value
            else:
                continue  # fields, class attributes, enum members, pydantic's generated members
            code = member.fget if isinstance(member, property) else getattr(member, "func", member)
            if code is not None and not _own(code):
                continue  # put on the class by a library (a decorator's wrapper, say)
            yield f"{owner.__module__}.{owner.__qualname__}.{name}", member


def _documented() -> Iterator[tuple[str, str | None]]:
    """(name, docstring or None) of every exported class and function and of their public members."""
    reported: set[str] = set()
    for label, obj in _exported_objects():
        yield label, _own_docstring(obj)
        if inspect.isclass(obj):
            for name, member in _members(obj):
                if name not in reported:
                    reported.add(name)
                    yield name, _own_docstring(member)


def test_exported_names_and_their_public_members_have_docstrings() -> None:
    missing = sorted(name for name, doc in _documented() if not (doc and doc.strip()))
    assert not missing, f"{len(missing)} exported names or public members have no docstring:\n  " + "\n  ".join(
        missing)


def test_docstrings_open_with_a_one_line_summary() -> None:
    """Google style: a summary line ending in punctuation, then a blank line before any description."""
    malformed: list[str] = []
    for name, doc in sorted(_documented(), key=lambda item: item[0]):
        if not (doc and doc.strip()):
            continue  # reported by the test above
        lines = inspect.cleandoc(doc).splitlines()
        if not lines[0].rstrip().endswith((".", "?", "!")) or (len(lines) > 1 and lines[1].strip()):
            malformed.append(f"{name}: {lines[0]!r}")
    assert not malformed, f"{len(malformed)} docstrings lack a one-line summary:\n  " + "\n  ".join(malformed)
