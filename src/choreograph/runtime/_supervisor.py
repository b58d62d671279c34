"""The supervisor of `choreo up`: starts the services of a project and keeps them running.

Runs detached (its own session; output in .choreo/logs/supervisor.log) as
`python -m choreograph.runtime._supervisor ROOT [--broker-started]`, with the stack's settings in
its environment. A service that exits, whatever its exit code (SIGKILL included), is started again
after a backoff (see RestartPolicy); a crash loop is logged loudly and shown by `choreo ps`. The
state is in .choreo/services.json (see _stackstate).

SIGTERM or SIGINT stops it: its services get SIGTERM, then SIGKILL after the grace period; once
they are gone it removes its state and exits 0. Nothing is restarted meanwhile.

It sleeps in select() on a self-pipe that signal handlers write to (SIGCHLD included), so an exit
is seen at once without polling; it polls (every 0.1 s) only for ready files of services that are
starting.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..transport._logs import configure
from ..transport._settings import Settings, run_dir
from ._processes import ServiceSpec, discover, metrics_ports, spawn
from ._restarts import CRASH_LOOP, RESTARTING, RUNNING, STOPPED, RestartPolicy, Restarts
from ._stackstate import VERSION, now_ms, start_ticks, state_path, write_state

log = logging.getLogger("choreograph.supervisor")

TAIL_LINES = 20


def exit_text(code: int | None) -> str:
    """An exit status as people read it: `1`, or `SIGKILL` for a process killed by a signal."""
    if code is None:
        return "-"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return str(code)


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a log file ('' if it cannot be read)."""
    try:
        with open(path, "rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 16_384))
            text = file.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Slot:
    """One supervised service: its spec, its current process (if any) and its restart history."""

    spec: ServiceSpec
    log_path: Path
    restarts: Restarts
    process: subprocess.Popen[bytes] | None = None
    ready_file: Path | None = None
    started: float = 0.0  # monotonic
    started_at: int | None = None  # Unix ms
    ticks: int | None = None
    ready: bool = False
    ever_ready: bool = False
    agent: str | None = None  # what the service wrote to its ready file: the agent's name
    metrics_port: int | None = None  # its CHOREO_METRICS_PORT (see metrics_ports), if metrics are on
    last_exit: int | None = None
    state: str = RUNNING
    due: float | None = None  # monotonic time of the next start, while it is down
    due_at: int | None = None  # the same, Unix ms

    def json(self) -> dict[str, Any]:
        """The service's entry in the state file."""
        return {
            "name": self.spec.name, "pid": self.process.pid if self.process else None, "pid_ticks": self.ticks,
            "started_at": self.started_at if self.process else None, "restarts": self.restarts.count,
            "last_exit": self.last_exit, "ready": self.ready, "ever_ready": self.ever_ready, "state": self.state,
            "agent": self.agent, "next_start_at": self.due_at, "log": str(self.log_path), "argv": self.spec.argv,
            "metrics_port": self.metrics_port,
        }


@dataclass
class Supervisor:
    """Starts every service of `specs` and restarts any that exits, until stop is asked.

    Args:
        specs: The services.
        root: The project directory (the services' working directory).
        settings: What the services connect to.
        policy: The restart policy.
        broker_started: Whether `up` started the broker (recorded for `down`).
    """

    specs: list[ServiceSpec]
    root: Path
    settings: Settings
    policy: RestartPolicy
    broker_started: bool = False
    stopping: bool = False
    slots: list[Slot] = field(default_factory=list)
    _started_at: int = field(default_factory=now_ms)

    def __post_init__(self) -> None:
        self._logs = run_dir() / "logs"
        self._ready_dir = run_dir() / "ready"
        self._logs.mkdir(parents=True, exist_ok=True)
        self._ready_dir.mkdir(parents=True, exist_ok=True)
        ports = metrics_ports(self.specs)
        self.slots = [Slot(spec, self._logs / f"{spec.name}.log", Restarts(self.policy),
                           metrics_port=ports.get(spec.name)) for spec in self.specs]
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # signals -------------------------------------------------------------------------------

    def _on_stop(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            log.info("%s: stopping every service", signal.Signals(signum).name)
        self.stopping = True

    def install_signals(self) -> None:
        """SIGTERM, SIGINT and SIGHUP stop; SIGCHLD wakes the loop (through the self-pipe)."""
        signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_stop)
        # A handler, not SIG_IGN: ignoring SIGCHLD would let the kernel reap children before we see
        # their exit codes. Handlers are reset to the default in a child at exec, so services
        # inherit nothing from here.
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)

    def _sleep(self, timeout_s: float) -> None:
        if self.stopping:
            return
        select.select([self._wake_r], [], [], max(0.0, timeout_s))
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        """Start everything, then watch until stop is asked; always stops every service and removes the state."""
        try:
            self._write()  # before any child: from now on `down` finds what is started
            for slot in self.slots:
                if self.stopping:
                    break
                self._start(slot)
            while not self.stopping:
                self._sleep(self._timeout())
                if self._tick():
                    self._write()
        finally:
            self._shutdown()

    def _timeout(self) -> float:
        """How long the loop may sleep: until the next start due, a ready file to look for, a run to call stable."""
        now = time.monotonic()
        waits = [1.0]
        for slot in self.slots:
            if slot.process is None and slot.due is not None:
                waits.append(slot.due - now)
            elif slot.process is not None and not slot.ready:
                waits.append(0.1)
            elif slot.process is not None and (slot.restarts.streak or slot.restarts.crash_loop):
                waits.append(slot.started + self.policy.stable_s - now)
        return min(waits)

    def _tick(self) -> bool:
        """Notice exits, ready files and stable runs; start what is due. Whether the state changed."""
        changed = False
        now = time.monotonic()
        for slot in self.slots:
            if self.stopping:
                break
            if slot.process is not None and (code := slot.process.poll()) is not None:
                self._exited(slot, code, now)
                changed = True
            elif slot.process is not None:
                if not slot.ready and slot.ready_file is not None and slot.ready_file.exists():
                    slot.ready = slot.ever_ready = True
                    slot.agent = slot.ready_file.read_text(errors="replace").strip() or None
                    log.info("%s (pid %d) ready", slot.spec.name, slot.process.pid)
                    changed = True
                if now - slot.started >= self.policy.stable_s and slot.restarts.stable():
                    log.info("%s (pid %d) has run %.0f s: backoff reset", slot.spec.name, slot.process.pid,
                             self.policy.stable_s)
                    slot.state = RUNNING
                    changed = True
            elif slot.due is not None and now >= slot.due:
                slot.restarts.count += 1
                self._start(slot)
                changed = True
        return changed

    def _start(self, slot: Slot) -> None:
        """Start the service's process (or, if it cannot be started, count that as an exit)."""
        slot.ready_file = self._ready_dir / f"{slot.spec.name}.{uuid.uuid4().hex[:8]}"
        slot.due = slot.due_at = None
        attempt = f"restart {slot.restarts.count}" if slot.restarts.count else "start"
        with open(slot.log_path, "ab") as out:  # so the log says which run a traceback belongs to
            out.write(f"--- supervisor: {attempt} at {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
        try:
            port = {} if slot.metrics_port is None else {"CHOREO_METRICS_PORT": str(slot.metrics_port)}
            slot.process = spawn(slot.spec, self.root, self.settings, slot.ready_file, slot.log_path, port)
        except OSError as exc:
            log.error("%s: cannot start: %s", slot.spec.name, exc)
            slot.process = None
            self._exited(slot, 127, time.monotonic(), ran=False)
            return
        slot.started, slot.started_at = time.monotonic(), now_ms()
        slot.ticks = start_ticks(slot.process.pid)
        slot.state = slot.restarts.state
        log.info("%s: %s, pid %d", slot.spec.name, attempt, slot.process.pid)
        self._write()  # at once: a pid must be on record before anything else can happen

    def _exited(self, slot: Slot, code: int, now: float, *, ran: bool = True) -> None:
        """Record an exit and schedule the next start."""
        pid = slot.process.pid if slot.process else None
        ran_s = now - slot.started if ran else 0.0
        slot.process, slot.ready, slot.ticks, slot.last_exit = None, False, None, code
        if slot.ready_file is not None:
            slot.ready_file.unlink(missing_ok=True)
        delay, began = slot.restarts.exited(now, ran_s)
        slot.due, slot.due_at = now + delay, now_ms() + int(delay * 1000)
        slot.state = CRASH_LOOP if slot.restarts.crash_loop else RESTARTING
        log.warning("%s (pid %s) exited with %s after %.1f s; restart %d in %.3g s", slot.spec.name, pid,
                    exit_text(code), ran_s, slot.restarts.count + 1, delay)
        if began:
            log.error("CRASH LOOP: %s exited %d times within %.0f s (last exit: %s); retrying every %.0f s. "
                      "Last lines of %s:\n%s", slot.spec.name, self.policy.loop_exits, self.policy.loop_window_s,
                      exit_text(code), self.policy.max_s, slot.log_path, log_tail(slot.log_path))

    def _shutdown(self) -> None:
        """SIGTERM every service, SIGKILL what outlives the grace, reap them all, remove the state."""
        self.stopping = True
        running = [slot for slot in self.slots if slot.process is not None]
        for slot in running:
            assert slot.process is not None
            slot.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.policy.stop_grace_s
        while any(s.process.poll() is None for s in running if s.process) and time.monotonic() < deadline:
            time.sleep(0.02)
        for slot in running:
            assert slot.process is not None
            if slot.process.poll() is None:
                log.warning("%s (pid %d) still running after %.0f s: SIGKILL", slot.spec.name, slot.process.pid,
                            self.policy.stop_grace_s)
                slot.process.kill()
            slot.process.wait()
            slot.last_exit, slot.state = slot.process.returncode, STOPPED
            if slot.ready_file is not None:
                slot.ready_file.unlink(missing_ok=True)
        state_path().unlink(missing_ok=True)
        log.info("stopped: %s", " ".join(slot.spec.name for slot in running) or "nothing was running")

    def _write(self) -> None:
        write_state({
            "version": VERSION,
            "supervisor": {"pid": os.getpid(), "pid_ticks": start_ticks(os.getpid()), "started_at": self._started_at,
                           "log": str(self._logs / "supervisor.log")},
            "broker_started": self.broker_started, "root": str(self.root), "settings": self.settings.env(),
            "services": [slot.json() for slot in self.slots],
        })


def main(argv: list[str] | None = None) -> None:
    """Entry point: supervise the services of a project until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="choreograph.runtime._supervisor")
    parser.add_argument("root", type=Path)
    parser.add_argument("--broker-started", action="store_true")
    parser.add_argument("--agent", action="append", default=[], help="MODULE:ATTR (see _project)")
    args = parser.parse_args(argv)
    # INFO whatever CHOREO_LOG_LEVEL says: restarts and exits are what its log is for.
    configure("supervisor", "%(asctime)s %(levelname)s supervisor: %(message)s")
    logging.getLogger().setLevel(logging.INFO)
    supervisor = Supervisor(discover(args.root, args.agent), args.root, Settings.from_env(), RestartPolicy.from_env(),
                            broker_started=args.broker_started)
    supervisor.install_signals()
    supervisor.run()


if __name__ == "__main__":
    main()
