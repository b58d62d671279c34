"""The services of a chaos run: a role per process (`coordinator.0`, `report.draft.1`, ...), each
SIGKILLed and started again under the same role, or restarted after dying on its own."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from choreograph import Settings
from choreograph.runtime import ServiceSpec, discover, spawn, wait_ready
from choreograph.transport import terminate

from ._procs import ROOT

COPIES = 2  # of the coordinator and of each agent
EXPECTED_ERRORS = ("DemoFailure",)  # what the example agents raise on purpose (fail_at)


def report_roles(copies: int = COPIES) -> list[ServiceSpec]:
    """`copies` coordinators (one group) and `copies` of each `report` agent, as discovered."""
    return [ServiceSpec(f"{spec.name}.{i}", spec.argv) for spec in discover(ROOT) for i in range(copies)]


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
        self.specs: dict[str, ServiceSpec] = {}
        self.current: dict[str, Incarnation] = {}
        self.kills = 0
        self.killed: Counter[str] = Counter()
        self.crashes: list[tuple[str, int]] = []  # (role, exit code) of deaths we did not cause

    def log(self, role: str) -> Path:
        return self.workdir / f"{role}.log"

    def start(self, specs: list[ServiceSpec], timeout_s: float = 180) -> None:
        """Start every role and return once each is ready (ConfigurationError if one is not)."""
        for spec in specs:
            self.specs[spec.name] = spec
            self._spawn(spec.name)
        wait_ready({role: (inc.process, inc.ready, self.log(role)) for role, inc in self.current.items()},
                   timeout_s)

    def ready_roles(self) -> list[str]:
        """Roles whose current process is running and has joined its work (wrote its ready file)."""
        return sorted(role for role, inc in self.current.items() if inc.process.poll() is None and inc.ready.exists())

    def kill_and_restart(self, role: str) -> None:
        process = self.current[role].process
        process.kill()
        process.wait(timeout=10)
        self.kills += 1
        self.killed[role] += 1
        self._note(role, f"SIGKILL to pid {process.pid} (chaos); restarting")
        self._spawn(role)

    def revive_crashed(self) -> None:
        """Start again each role whose process exited without being killed by us."""
        for role, inc in list(self.current.items()):
            code = inc.process.poll()
            if code is not None:
                self.crashes.append((role, code))
                self._note(role, f"pid {inc.process.pid} exited with {code} on its own; restarting")
                self._spawn(role)

    def stop(self) -> None:
        terminate(*(inc.process.pid for inc in self.current.values()), grace_s=10)
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
        process = spawn(self.specs[role], ROOT, self.settings, ready, self.log(role), self.extra_env)
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
