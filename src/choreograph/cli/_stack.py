"""`choreo up` / `choreo down`: the local stack under a supervisor, tracked in .choreo/services.json.

`up` starts the broker if needed and one detached supervisor process (runtime._supervisor), which
starts the coordinator and the agents and restarts any that exits; `up` returns once every service
is ready. `down` stops the supervisor (which stops its services), then whatever the state file
still records (a supervisor that was SIGKILLed leaves its services running), then the broker if
`up` started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigurationError
from ..runtime._processes import discover, metrics_ports
from ..runtime._project import apply_defaults, find_project
from ..runtime._restarts import RestartPolicy
from ..runtime._stackstate import children, read_state, same_process, state_path, stop_pids
from ..runtime._supervisor import exit_text, log_tail
from ..transport._broker import LocalBroker
from ..transport._settings import check_env, run_dir
from ._config import cli_settings

# `down` waits this long for the supervisor, whose services have RestartPolicy.stop_grace_s (10 s)
# after SIGTERM before it SIGKILLs them; then it SIGKILLs the supervisor and stops what is left.
SUPERVISOR_GRACE_S = 15.0


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


def up(timeout_s: float = 60.0, agents: Sequence[str] = ()) -> dict[str, int]:
    """Start broker (unless configured or running) and a supervisor that runs coordinator and agents.

    Returns once every service is ready. The supervisor records everything in .choreo/services.json,
    for `ps` and `down`. If anything fails, everything started is stopped again. The agents are the
    project's (see runtime._project); the project file's namespace and broker are defaults for
    CHOREO_NAMESPACE and KAFKA_BOOTSTRAP_SERVERS.

    Args:
        timeout_s: How long to wait for every service to be ready.
        agents: MODULE:ATTR of the agents to run instead of the project's (`--agent`).

    Returns:
        Service name -> process id.

    Raises:
        ConfigurationError: A setting or the project file is bad, the stack is already up, a service
            exited before it was ready, or the services were not ready in time.
    """
    project = find_project()
    apply_defaults(project)
    check_env()  # before a broker is started: a bad setting must leave nothing running
    RestartPolicy.from_env()  # the supervisor's own settings, checked here for the same reason
    state_file = state_path()
    if state_file.exists():
        raise ConfigurationError("already up (see .choreo/services.json); run `choreo down` first")
    root = project.root
    specs = discover(root, agents)  # a bad --agent or project file: nothing started
    metrics_ports(specs)  # nor a stack too large for its metrics ports
    names = [spec.name for spec in specs]
    started_broker = False
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and LocalBroker().status() is None:
        LocalBroker().start()
        started_broker = True
    supervisor: subprocess.Popen[bytes] | None = None
    try:
        settings = cli_settings()
        logs = run_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings.env(), "CHOREO_HOME": str(run_dir())}
        argv = [sys.executable, "-m", "choreograph.runtime._supervisor", str(root),
                *(f"--agent={target}" for target in agents)]
        with open(logs / "supervisor.log", "ab") as out:
            supervisor = subprocess.Popen([*argv, *(["--broker-started"] if started_broker else [])], cwd=root,
                                          env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        return _wait_ready(supervisor, names, timeout_s)
    except BaseException:
        ignore_signals()
        _stop(supervisor.pid if supervisor else None, started_broker)
        if supervisor is not None:
            supervisor.wait()
        raise


def _wait_ready(supervisor: subprocess.Popen[bytes], names: list[str], timeout_s: float) -> dict[str, int]:
    """Until the supervisor records every service ready; a service that exits before it is ready is an error."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = read_state()
        if supervisor.poll() is not None:
            log = run_dir() / "logs" / "supervisor.log"
            raise ConfigurationError(f"the supervisor exited with {exit_text(supervisor.returncode)}:\n"
                                     f"{log_tail(log)}")
        services: list[dict[str, Any]] = state["services"] if state else []
        for service in services:
            if service["last_exit"] is not None and not service["ever_ready"]:
                raise ConfigurationError(f"service {service['name']} exited with {exit_text(service['last_exit'])}:"
                                         f"\n{log_tail(run_dir() / 'logs' / (service['name'] + '.log'), 40)}")
        if services and all(service["ready"] for service in services):
            return {service["name"]: int(service["pid"]) for service in services}
        if time.monotonic() > deadline:
            ready = {service["name"] for service in services if service["ready"]}
            raise ConfigurationError(f"services not ready after {timeout_s:.0f} s: "
                                     f"{sorted(set(names) - ready)}")
        time.sleep(0.05)


def _stop(supervisor_pid: int | None, broker_started: bool) -> None:
    """Stop the supervisor (it stops its services), then any service it left behind, then the broker."""
    before = read_state() or {}
    ticks = before.get("supervisor", {}).get("pid_ticks")
    if supervisor_pid is not None:
        stop_pids([(supervisor_pid, ticks)], grace_s=SUPERVISOR_GRACE_S)
    # What the state recorded before and after: a supervisor SIGKILLed (now or earlier) leaves both.
    stop_pids(sorted(set(children(before)) | set(children(read_state() or {}))), grace_s=10)
    if broker_started:
        LocalBroker().stop()
    state_path().unlink(missing_ok=True)


def down() -> list[str]:
    """Stop what `up` started: the supervisor, the services, the broker if `up` started it; their names.

    Nothing up: an empty list. Running it twice is harmless.
    """
    state = read_state()
    if state is None:
        state_path().unlink(missing_ok=True)  # unreadable: nothing to go by
        return []
    supervisor = state.get("supervisor", {})
    names = [str(service["name"]) for service in state.get("services", [])]
    if same_process(supervisor.get("pid"), supervisor.get("pid_ticks")):
        names.insert(0, "supervisor")
    _stop(supervisor.get("pid"), bool(state.get("broker_started")))
    return [*names, *(["broker"] if state.get("broker_started") else [])]
