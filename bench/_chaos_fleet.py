"""The services of a chaos run: a role per process (`coordinator.0`, `report.draft.1`, ...), each
SIGKILLed and started again under the same role, restarted after dying on its own, or held down.

Agents run under bench/_chaos_agent.py (the agent as `choreo agent run` runs it, plus planned crash
points). Every death the harness causes or plans is a Kill, with its time, so that a handler run
again can be matched with the death that explains it.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from choreograph import Settings
from choreograph.runtime import ServiceSpec, discover, spawn, wait_ready
from choreograph.transport import terminate

from ._chaos_agent import CRASH_EXIT
from ._procs import ROOT

COPIES = 2  # of the coordinator and of each agent
# What the example agents raise on purpose: fail_at, and the chaos plan's transient and poison failures.
EXPECTED_ERRORS = ("DemoFailure", "FlakyUpstream", "PoisonPayload")


def report_roles(copies: int = COPIES) -> list[ServiceSpec]:
    """`copies` coordinators (one group) and `copies` of each `report` agent, the agents under the
    chaos runner."""
    roles = []
    for spec in discover(ROOT):
        if spec.name == "index":  # not under test here, and an index has one member (choreograph.index)
            continue
        argv = spec.argv
        if spec.name != "coordinator":
            argv = [sys.executable, "-m", "bench._chaos_agent", spec.argv[-1]]
        roles += [ServiceSpec(f"{spec.name}.{i}", argv) for i in range(copies)]
    return roles


@dataclass(frozen=True)
class Kill:
    """A death the harness caused (SIGKILL) or planned (a crash point): who, when, and how."""

    pid: int
    role: str
    at_ns: int
    cause: str  # "sigkill", "crash:effect", "crash:publish"
    workflow_id: str = ""  # of a planned crash: the workflow and step whose result it was
    step: str = ""


@dataclass
class Incarnation:
    """One process of a role; `ready` is the file it writes once it serves."""

    process: subprocess.Popen[bytes]
    ready: Path


class Fleet:
    """Every service of the run; `stop()` ends them all by pid. One log per role, across restarts."""

    def __init__(self, settings: Settings, workdir: Path, extra_env: dict[str, str]) -> None:
        self.settings = settings
        self.workdir = workdir
        self.extra_env = extra_env
        self.kills_file = workdir / "kills.log"  # planned deaths, written by the dying process
        self.specs: dict[str, ServiceSpec] = {}
        self.role_env: dict[str, dict[str, str]] = {}
        self.current: dict[str, Incarnation] = {}
        self.held: set[str] = set()  # roles kept down on purpose
        self.sigkills: list[Kill] = []
        self.planned: list[tuple[str, int]] = []  # (role, pid) of planned deaths seen
        self.crashes: list[tuple[str, int, int]] = []  # (role, pid, exit code) of deaths nobody caused
        self.killed: Counter[str] = Counter()

    def log(self, role: str) -> Path:
        return self.workdir / f"{role}.log"

    def start(self, specs: list[ServiceSpec], timeout_s: float = 180) -> None:
        """Start every role and return once each is ready (ConfigurationError if one is not)."""
        for spec in specs:
            self.specs[spec.name] = spec
            self._spawn(spec.name)
        self.wait_ready(list(self.current), timeout_s)

    def wait_ready(self, roles: list[str], timeout_s: float = 90) -> None:
        wait_ready({role: (self.current[role].process, self.current[role].ready, self.log(role))
                    for role in roles}, timeout_s)

    def roles(self, prefix: str = "") -> list[str]:
        return sorted(role for role in self.specs if role.startswith(prefix))

    def ready_roles(self) -> list[str]:
        """Roles whose current process is running and has joined its work (wrote its ready file)."""
        return sorted(role for role, inc in self.current.items()
                      if role not in self.held and inc.process.poll() is None and inc.ready.exists())

    def is_ready(self, role: str) -> bool:
        inc = self.current.get(role)
        return inc is not None and role not in self.held and inc.process.poll() is None and inc.ready.exists()

    def kill(self, role: str, *, restart: bool = True) -> Kill:
        """SIGKILL the role's process; start it again at once unless `restart` is False (held down)."""
        process = self.current[role].process
        process.kill()
        kill = Kill(process.pid, role, time.time_ns(), "sigkill")
        process.wait(timeout=10)
        self.sigkills.append(kill)
        self.killed[role] += 1
        if restart:
            self._note(role, f"SIGKILL to pid {process.pid} (chaos); restarting")
            self._spawn(role)
        else:
            self.held.add(role)
            self._note(role, f"SIGKILL to pid {process.pid} (chaos); held down")
        return kill

    def release(self, role: str, env: dict[str, str] | None = None) -> None:
        """Start a held-down role again (with `env` added to its environment from now on)."""
        if env is not None:
            self.role_env[role] = env
        self.held.discard(role)
        self._spawn(role)

    def revive_crashed(self) -> None:
        """Start again each role whose process exited without being killed by us."""
        for role, inc in list(self.current.items()):
            if role in self.held:
                continue
            code = inc.process.poll()
            if code is None:
                continue
            if code == CRASH_EXIT:
                self.planned.append((role, inc.process.pid))
                self._note(role, f"pid {inc.process.pid} died at a planned crash point; restarting")
            else:
                self.crashes.append((role, inc.process.pid, code))
                self._note(role, f"pid {inc.process.pid} exited with {code} on its own; restarting")
            self._spawn(role)

    def planned_kills(self) -> list[Kill]:
        """The planned deaths, as the dying processes wrote them down."""
        kills = []
        if self.kills_file.exists():
            roles = {pid: role for role, pid in self.planned}
            for line in self.kills_file.read_text(errors="replace").splitlines():
                fields = line.split()
                if len(fields) == 5 and fields[0].isdigit() and fields[4].isdigit():
                    pid = int(fields[0])
                    kills.append(Kill(pid, roles.get(pid, "?"), int(fields[4]), f"crash:{fields[1]}",
                                      fields[2], fields[3]))
        return kills

    def all_kills(self) -> list[Kill]:
        return sorted([*self.sigkills, *self.planned_kills()], key=lambda k: k.at_ns)

    def stop(self) -> None:
        terminate(*(inc.process.pid for inc in self.current.values() if inc.process.poll() is None), grace_s=10)
        for inc in self.current.values():
            inc.process.poll()  # terminate() reaped it; this lets Popen know
        self.current.clear()

    def crash_report(self) -> dict[str, Counter[str]]:
        """Per role, the unexpected exceptions its logs show a traceback for, counted."""
        report: dict[str, Counter[str]] = {}
        for role in self.specs:
            found = Counter(e for e in tracebacks(self.log(role)) if not any(x in e for x in EXPECTED_ERRORS))
            if found:
                report[role] = found
        return report

    def _spawn(self, role: str) -> None:
        ready = self.workdir / f"{role}.{uuid.uuid4().hex[:6]}.ready"
        env = {**self.extra_env, **self.role_env.get(role, {})}
        process = spawn(self.specs[role], ROOT, self.settings, ready, self.log(role), env)
        self.current[role] = Incarnation(process, ready)

    def _note(self, role: str, message: str) -> None:
        with open(self.log(role), "a") as log:
            log.write(f"[chaos {time.strftime('%H:%M:%S')}] {message}\n")


def tracebacks(log: Path) -> list[str]:
    """The exception line ending each traceback in a log ("ValueError: ..."), in order."""
    if not log.exists():
        return []
    found = []
    inside = False
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("Traceback (most recent call last):"):
            inside = True
        elif inside and line and not line[0].isspace():
            found.append(line.strip()[:200])
            inside = False
    return found
