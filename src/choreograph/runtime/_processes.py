"""Service processes: discovered, spawned with a ready file, awaited until ready.

One process per service: the library's coordinator and workflow indexer, and each instance of each
agent the project runs (see _project: `--agent`, a project file, entry points, or services/).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError
from ..transport._settings import Settings, metrics_address, run_dir
from ._project import agents_of, find_project


@dataclass(frozen=True)
class ServiceSpec:
    """A service process to start: its name and command line."""
    name: str
    argv: list[str]


def coordinator_spec() -> ServiceSpec:
    """The saga coordinator's process: part of the library, so a project needs no file for it."""
    return ServiceSpec("coordinator", [sys.executable, "-m", "choreograph", "coordinator", "run"])


def index_spec() -> ServiceSpec:
    """The workflow indexer's process (`choreo ls` reads its file): part of the library, like the coordinator."""
    return ServiceSpec("index", [sys.executable, "-m", "choreograph", "index", "run"])


LIBRARY_SERVICES = ("coordinator", "index")
"""The names of the services every project runs, whatever its agents: not agents."""


def project_root() -> Path:
    """The project's directory: the nearest with a project file or services/, else the current one."""
    return find_project().root


def discover(root: Path, agents: Iterable[str] = ()) -> list[ServiceSpec]:
    """The services of a project: the library's coordinator and indexer, then each agent's instances.

    Args:
        root: The project's directory (see project_root).
        agents: MODULE:ATTR of the agents to run instead of those the project names (`--agent`).

    Returns:
        The coordinator's and the indexer's specs, then one per agent instance (`name`, then `name-2`, `name-3`, ...).

    Raises:
        ConfigurationError: An agent is not MODULE:ATTR, or the project file is bad.
    """
    for target in agents:
        if ":" not in target:
            raise ConfigurationError(f"agent {target!r}: expected MODULE:ATTR")
    specs = [coordinator_spec(), index_spec()]
    for entry in agents_of(find_project(root), agents):
        for n in range(1, entry.instances + 1):
            specs.append(ServiceSpec(entry.name if n == 1 else f"{entry.name}-{n}",
                                     [sys.executable, "-m", "choreograph", "agent", "run", entry.target]))
    return specs


def metrics_ports(specs: list[ServiceSpec]) -> dict[str, int]:
    """The CHOREO_METRICS_PORT of each service of a stack: the stack's port plus the service's index.

    With CHOREO_METRICS_PORT=9464, `choreo up` gives the coordinator 9464, the indexer 9465, then each
    agent instance the next port, in `discover`'s order (an agent's instances one after another), so
    several instances of one agent on one host each have their own endpoint. A restarted service keeps its port.

    Args:
        specs: The stack's services, in `discover`'s order.

    Returns:
        Port by service name; empty when metrics are off.

    Raises:
        ConfigurationError: A CHOREO_METRICS_* value is bad, or the last service's port would pass 65535.
    """
    address = metrics_address()
    if address is None:
        return {}
    base = address[1]
    if base + len(specs) - 1 > 65535:
        raise ConfigurationError(f"CHOREO_METRICS_PORT={base}: {len(specs)} services need ports {base} to "
                                 f"{base + len(specs) - 1}; expected a port up to {65536 - len(specs)}")
    return {spec.name: base + index for index, spec in enumerate(specs)}


def spawn(spec: ServiceSpec, root: Path, settings: Settings, ready: Path, log: Path,
          extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start one service in its own session with the stack's settings in its environment."""
    # Services run in `root`: a relative CHOREO_HOME (the default ./.choreo) is made absolute first,
    # so they find the caller's policy and keys, not another directory's.
    env = {**os.environ, "CHOREO_HOME": str(run_dir()), **settings.env(), "CHOREO_READY_FILE": str(ready),
           **(extra_env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(root)]))
    with open(log, "ab") as out:
        return subprocess.Popen(spec.argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_ready(processes: dict[str, tuple[subprocess.Popen[bytes], Path, Path]], timeout_s: float) -> None:
    """Until every service wrote its ready file; a service that exits first is an error with its log."""
    deadline = time.monotonic() + timeout_s
    waiting = dict(processes)
    while waiting:
        for name, (process, ready, log) in list(waiting.items()):
            if ready.exists():
                del waiting[name]
            elif process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise ConfigurationError(f"service {name} exited with {process.returncode}:\n{tail}")
        if waiting and time.monotonic() > deadline:
            raise ConfigurationError(f"services not ready after {timeout_s:.0f} s: {sorted(waiting)}")
        time.sleep(0.05)
