"""Service processes: discovered by convention, spawned with a ready file, awaited until ready.

One process per service, discovered by convention: services/coordinator.py, and every public module
of a services/<workflow>/ package is an agent (module-level `agent`). No list to edit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError
from ..transport._settings import Settings, run_dir


@dataclass(frozen=True)
class ServiceSpec:
    """A service process to start: its name and command line."""
    name: str
    argv: list[str]


def coordinator_spec() -> ServiceSpec:
    """The saga coordinator's process: part of the library, so a project needs no file for it."""
    return ServiceSpec("coordinator", [sys.executable, "-m", "choreograph", "coordinator", "run"])


def project_root() -> Path:
    """The directory holding services/: the current one or a parent, else this source checkout."""
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents, Path(__file__).resolve().parents[3]):
        if (candidate / "services" / "coordinator.py").is_file():
            return candidate
    raise ConfigurationError("cannot find services/coordinator.py here or in a parent directory")


def discover(root: Path) -> list[ServiceSpec]:
    """The services of a project: services/coordinator.py and one agent per public module of services/<workflow>/."""
    specs = [coordinator_spec()]
    for package in sorted(p for p in (root / "services").iterdir() if (p / "__init__.py").is_file()):
        for module in sorted(package.glob("*.py")):
            if not module.name.startswith("_"):
                target = f"services.{package.name}.{module.stem}:agent"
                specs.append(ServiceSpec(f"{package.name}.{module.stem}",
                                         [sys.executable, "-m", "choreograph", "agent", "run", target]))
    return specs


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
