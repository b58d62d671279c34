"""`choreo replay WORKFLOW_ID --sandbox NAME`: re-run chosen agents of a recorded workflow in a sandbox.

The real agent code runs in its own processes, against a copy of the workflow's events in a sandbox
namespace (`<namespace>.sandbox.<NAME>`) with its own topics, groups and coordinator; nothing in it
reaches production topics. The other agents' recorded outputs are fed back (see _feeder), and the
re-run is compared with the recording (see _compare).
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from ..errors import AgentDefinitionError, ReplayError
from ..events._envelope import COORDINATOR_SOURCE, agent_source
from ..events._models import StepContract
from ..runtime._agent import load_agent
from ..runtime._processes import ServiceSpec, discover, project_root, spawn, wait_ready
from ..runtime._stackstate import read_state
from ..saga._entries import entries_of
from ..saga._graph import Graph
from ..saga._replay import catalog_for
from ..timetravel._archive import refuse_unless_empty
from ..timetravel._history import History
from ..timetravel._recording import Recording
from ..transport._broker import terminate
from ..transport._kafka import Kafka
from ..transport._keyring import service_verifier
from ..transport._registry import announce
from ..transport._settings import Settings, run_dir
from ._compare import ReplayReport, compare
from ._feeder import feed

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def rerun_steps(graph: Graph, agents: Mapping[str, str | None] | None, from_step: str | None) -> list[str]:
    """The steps to run live in a sandbox: those named, narrowed to `from_step` and what follows it.

    Args:
        graph: The recorded workflow's step graph.
        agents: The steps to re-run (keys; values are MODULE:ATTR overrides, unused here), or None
            for every step.
        from_step: If given, keep only this step and the steps that depend on it, directly or not.

    Returns:
        The chosen steps in the graph's topological order.

    Raises:
        ReplayError: `agents` or `from_step` names a step the workflow does not have.
    """
    chosen = set(graph.nodes) if agents is None else set(agents)
    unknown = sorted(chosen - graph.nodes.keys() | ({from_step} - graph.nodes.keys() if from_step else set()))
    if unknown:
        raise ReplayError(f"workflow {graph.workflow} has no step(s) {unknown}; its steps: {list(graph.order)}")
    if from_step is not None:
        after = {from_step}
        for name in graph.order:
            if any(d in after for d in graph.nodes[name].depends_on):
                after.add(name)
        chosen &= after
    return [name for name in graph.order if name in chosen]


def _candidates(root: Path) -> list[str]:
    """MODULE:ATTR of the agents the running stack runs (`choreo up`, `choreo demo --keep`), then the project's."""
    running = [s.get("argv") or [] for s in (read_state() or {}).get("services", [])]
    discovered = [spec.argv for spec in discover(root) if spec.name != "coordinator"]
    return list(dict.fromkeys(argv[-1] for argv in [*running, *discovered] if argv[-3:-1] == ["agent", "run"]))


def _stack_root() -> Path | None:
    """The directory the running stack's services run in (where `choreo up` found its project); None if none is up."""
    root = (read_state() or {}).get("root")
    return Path(root) if isinstance(root, str) and root else None


def agent_target(root: Path, workflow: str, step: str) -> str:
    """Find the agent that runs `step` of `workflow` among the agents the stack or the project at `root` runs.

    First those the running stack runs (as its state file records them), then the same discovery as
    `choreo up` (runtime._project): `--agent` aside, a project file, entry points, services/. The
    project's modules are imported from `root`, as its services import them (they run there).

    Args:
        root: The project's directory.
        workflow: The workflow's name.
        step: The step's name.

    Returns:
        The agent's MODULE:ATTR.

    Raises:
        ReplayError: No discovered agent runs that step.
    """
    added = str(root) not in sys.path
    if added:
        sys.path.insert(0, str(root))
    try:
        for target in _candidates(root):
            try:
                agent = load_agent(target)
            except AgentDefinitionError:
                continue
            if agent.workflow == workflow and agent.step == step:
                return target
    finally:
        if added:
            sys.path.remove(str(root))
    raise ReplayError(f"no agent of {workflow}.{step} in the project at {root}; name one as {step}=MODULE:ATTR")


async def _seed(settings: Settings, contracts: Iterable[StepContract]) -> None:
    """Announce the recorded contracts of the steps that are not re-run.

    So the sandbox coordinator builds the recorded graph, though no process of those agents runs.
    """
    kafka = Kafka(settings)
    producer = kafka.producer()
    await producer.start()
    try:
        partitions = len(await producer.partitions_for(settings.events_topic))
        for contract in contracts:
            await announce(producer, settings.registry_topic, settings.events_topic, partitions, contract,
                           agent_source(contract.workflow, contract.step))
    finally:
        await producer.stop()


async def rerun(settings: Settings, recording: Recording, sandbox: str, *,
                 agents: Mapping[str, str | None] | None = None, from_step: str | None = None,
                 timeout_s: float = 60.0, root: Path | None = None) -> ReplayReport:
    """Re-run the chosen steps of a recorded workflow in a sandbox; compare the re-run with the recording.

    The sandbox coordinator and one process per re-run step are started in the sandbox namespace
    `<settings.namespace>.sandbox.<sandbox>`; the recorded events of every other step are fed back.
    The processes are stopped once the sandbox workflow has its outcome and nothing more waits to be
    fed, or at `timeout_s`.

    Args:
        settings: The broker's settings; the sandbox gets its own namespace on the same broker.
        recording: The recorded workflow.
        sandbox: The sandbox NAME: letters, digits, - and _; it must not have been used before.
        agents: The steps to re-run, each with the MODULE:ATTR of the agent to run (None: the one
            one the project runs, as `choreo up` finds it); None for every step.
        from_step: Re-run only this step and the steps that depend on it.
        timeout_s: How long to wait for the sandbox workflow's outcome.
        root: The project's directory, where the agents run (default: the running stack's, else the
            one found from the current directory).

    Returns:
        The report: what ran, how many events were fed, and every difference from the recording.

    Raises:
        ReplayError: A bad sandbox name, no recorded step graph (or recorded contracts that make none),
            an unknown step, or no agent for a step.
        ArchiveError: The sandbox namespace already holds workflow events (the name was used before).
        ConfigurationError: The project file is bad.
    """
    if not _NAME.match(sandbox):
        raise ReplayError(f"sandbox name {sandbox!r}: use letters, digits, - and _")
    events = recording.events()
    entries = [e for _, e in events]
    graph = recording.catalog().get(recording.workflow) or catalog_for(entries).get(recording.workflow)
    if graph is None:
        raise ReplayError(f"{recording.workflow_id}: no step graph recorded (did the coordinator start it?)")
    if graph.refused is not None:
        raise ReplayError(f"{recording.workflow_id}: {graph.refused}")
    steps = rerun_steps(graph, agents, from_step)
    root = root or _stack_root() or project_root()
    targets = {s: (agents or {}).get(s) or agent_target(root, recording.workflow, s) for s in steps}
    sources = {agent_source(recording.workflow, s) for s in steps} | {COORDINATOR_SOURCE}
    # What the services would refuse is not fed.
    fed = {e.event_id for _, e in recording.believed(service_verifier()) if e.source not in sources}
    box = replace(settings, namespace=f"{settings.namespace}.sandbox.{sandbox}")
    kafka = Kafka(box)
    await kafka.ensure_topics()
    await refuse_unless_empty(kafka, box, f"sandbox {sandbox!r} is in use; choose another name")
    await _seed(box, [c for c in recording.contracts if c.step not in steps])
    processes = _start(box, root, sandbox, {"coordinator": None, **targets})
    try:
        sent = await feed(box, recording, events, fed, timeout_s)
    finally:
        _stop(processes)
    async with History(box) as reader:
        rerun_entries = entries_of([r async for r in reader.records(recording.workflow_id, to_end=True)],
                                   reader.store)
    return ReplayReport(recording.workflow_id, box.namespace, [f"{s}={t}" for s, t in targets.items()], sent,
                        entries, rerun_entries, compare(entries, rerun_entries, graph))


def _start(settings: Settings, root: Path, sandbox: str, targets: Mapping[str, str | None]
           ) -> list[subprocess.Popen[bytes]]:
    """Start the sandbox coordinator and the re-run agents, each its own process; return once ready."""
    logs = run_dir() / "sandbox" / sandbox
    logs.mkdir(parents=True, exist_ok=True)
    started: dict[str, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    try:
        for name, target in targets.items():
            argv = ([sys.executable, "-m", "choreograph", "coordinator", "run"] if target is None
                    else [sys.executable, "-m", "choreograph", "agent", "run", target])
            ready = logs / f"{name}.{uuid.uuid4().hex[:8]}.ready"
            log = logs / f"{name}.log"
            # Verification off in the sandbox: only this replay writes its namespace, and it feeds
            # recorded records the history reader believed (refused ones are not fed) and contracts
            # it re-announces without the agents' keys, which an operator replaying does not hold.
            started[name] = (spawn(ServiceSpec(name, argv), root, settings, ready, log, {"CHOREO_VERIFY": "off"}),
                             ready, log)
        wait_ready(started, 60)
    except BaseException:
        _stop([p for p, _, _ in started.values()])
        raise
    return [p for p, _, _ in started.values()]


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop the processes (SIGTERM, SIGKILL after 10 s) and reap them."""
    terminate(*(p.pid for p in processes), grace_s=10)
    for process in processes:
        process.wait()
