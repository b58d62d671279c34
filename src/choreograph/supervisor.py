"""`choreo up` / `choreo down`: the local stack as background processes, tracked in .choreo/.

One process per service, discovered by convention: services/coordinator.py, and every public module
of a services/<workflow>/ package is an agent (module-level `agent`). No list to edit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from .broker import LocalBroker, terminate
from .errors import ConfigurationError
from .settings import Settings, run_dir


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: list[str]


def project_root() -> Path:
    """The directory holding services/: the current one or a parent, else this source checkout."""
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents, Path(__file__).resolve().parents[2]):
        if (candidate / "services" / "coordinator.py").is_file():
            return candidate
    raise ConfigurationError("cannot find services/coordinator.py here or in a parent directory")


def discover(root: Path) -> list[ServiceSpec]:
    specs = [ServiceSpec("coordinator", [sys.executable, "-m", "services.coordinator"])]
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
    env = {**os.environ, **settings.env(), "CHOREO_READY_FILE": str(ready), **(extra_env or {})}
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


def _exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit, so `finally` blocks stop what was started."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)


def ignore_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def up(timeout_s: float = 60.0) -> dict[str, int]:
    """Start broker (unless configured or running), coordinator and agents; return name -> pid."""
    state_file = run_dir() / "services.json"
    if state_file.exists():
        raise ConfigurationError("already up (see .choreo/services.json); run `choreo down` first")
    root = project_root()
    started_broker = False
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and LocalBroker().status() is None:
        LocalBroker().start()
        started_broker = True
    settings = Settings.from_env()
    logs, ready_dir = run_dir() / "logs", run_dir() / "ready"
    logs.mkdir(parents=True, exist_ok=True)
    ready_dir.mkdir(parents=True, exist_ok=True)
    processes = {}
    try:
        for spec in discover(root):
            ready = ready_dir / f"{spec.name}.{uuid.uuid4().hex[:8]}"
            log = logs / f"{spec.name}.log"
            processes[spec.name] = (spawn(spec, root, settings, ready, log), ready, log)
        pids = {name: p.pid for name, (p, _, _) in processes.items()}
        state_file.write_bytes(orjson.dumps({"broker_started": started_broker, "services": pids}))
        wait_ready(processes, timeout_s)
        return pids
    except BaseException:
        ignore_signals()
        terminate(*(process.pid for process, _, _ in processes.values()))
        if started_broker:
            LocalBroker().stop()
        state_file.unlink(missing_ok=True)
        raise


def down() -> list[str]:
    """Stop what `up` started (services, then the broker if `up` started it); return their names."""
    state_file = run_dir() / "services.json"
    try:
        state = orjson.loads(state_file.read_bytes())
    except (OSError, ValueError):
        return []
    terminate(*(int(pid) for pid in state["services"].values()), grace_s=10)
    stopped = list(state["services"])
    if state.get("broker_started"):
        LocalBroker().stop()
        stopped.append("broker")
    state_file.unlink(missing_ok=True)
    return stopped
