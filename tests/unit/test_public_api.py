"""The public surface is curated: adding or removing a name is a deliberate change to this list."""

import choreograph

EXPORTED = [
    "Agent", "AgentDefinitionError", "AgentRuntime", "BrokerProfile", "BrokerUnavailable",
    "ChoreographError", "Client", "CompensationCompleted", "CompensationFailed", "CompensationRequested",
    "ConfigurationError", "Coordinator", "DecodeError", "EmbeddedBroker", "Envelope", "Event",
    "GoalValidationError", "Graph", "HistoryEntry", "InvalidPayloadError", "Kind", "OutcomeStatus",
    "PublishedGoal", "SchemaDriftError", "SchemaError", "Settings", "StepContext", "StepContract",
    "StepFailed", "StepNode", "UnknownSchemaError", "WorkflowError", "WorkflowOutcome", "WorkflowStarted",
    "__version__", "history",
    # issue 4: history, state, recordings, archive, sandbox re-runs
    "Archive", "ArchiveError", "Archiver", "History", "Point", "Recording", "ReplayError", "ReplayReport",
    "RestoreCompleted", "RestoreStarted", "Snapshot", "fold", "rerun", "restore",
]


def test_exported_names_are_pinned() -> None:
    assert sorted(choreograph.__all__) == sorted(EXPORTED)
    for name in EXPORTED:
        assert getattr(choreograph, name) is not None


def test_every_error_derives_from_choreograph_error() -> None:
    errors = [getattr(choreograph, n) for n in EXPORTED if n.endswith(("Error", "Unavailable"))]
    assert all(issubclass(e, choreograph.ChoreographError) for e in errors)


def test_module_paths_from_before_the_packages_still_import() -> None:
    import importlib

    from choreograph._compat import MOVED  # the alias table itself is what is under test

    for old, new in MOVED.items():
        assert importlib.import_module(f"choreograph.{old}") is importlib.import_module(f"choreograph.{new}")
    settings_module = importlib.import_module("choreograph.settings")  # as `from choreograph.settings import` did
    assert settings_module.Settings is choreograph.Settings
    assert "tansu" in settings_module.PROFILES
