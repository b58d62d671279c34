"""`choreo up` / `choreo down`: the local stack as background processes, tracked in .choreo/."""

from __future__ import annotations

import os
import signal
import uuid

import orjson

from ..errors import ConfigurationError
from ..runtime._processes import discover, project_root, spawn, wait_ready
from ..transport._broker import LocalBroker, terminate
from ..transport._settings import Settings, check_env, run_dir


def _exit(signum: int, _frame: object) -> None:
    """Signal handler: exit with status 128 + the signal's number."""
    raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit, so `finally` blocks stop what was started."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)


def ignore_signals() -> None:
    """Ignore SIGTERM, SIGHUP and SIGINT, so a second signal does not cut a cleanup short."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def up(timeout_s: float = 60.0) -> dict[str, int]:
    """Start broker (unless configured or running), coordinator and agents; return name -> pid.

    What was started is recorded in .choreo/services.json, for `down`. If anything fails, what was
    started is stopped again.

    Args:
        timeout_s: How long to wait for every service to be ready.

    Returns:
        Service name -> process id.

    Raises:
        ConfigurationError: A setting is bad, the stack is already up, or no services/ directory can be found.
    """
    check_env()  # before a broker is started: a bad setting must leave nothing running
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
