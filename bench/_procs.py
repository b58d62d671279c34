"""Processes a scenario starts, each stopped by its own pid when the scenario ends."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

from choreograph.runtime import ServiceSpec, spawn, wait_ready
from choreograph.transport import Settings, terminate

ROOT = Path(__file__).resolve().parents[1]


class Processes:
    """`with Processes(settings, workdir) as p: p.start(spec, ...)`: all stopped on exit."""

    def __init__(self, settings: Settings, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.workdir = workdir
        self.extra_env = extra_env or {}
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[Path] = []
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self, *specs: ServiceSpec, timeout_s: float = 90) -> None:
        """Start the services and return once each wrote its ready file."""
        started = {}
        for spec in specs:
            tag = uuid.uuid4().hex[:6]
            ready, log = self.workdir / f"{spec.name}.{tag}.ready", self.workdir / f"{spec.name}.{tag}.log"
            process = spawn(spec, ROOT, self.settings, ready, log, self.extra_env)
            self.running[f"{spec.name}.{tag}"] = process
            self.logs.append(log)
            started[spec.name + tag] = (process, ready, log)
        wait_ready(started, timeout_s)

    def spawn_unready(self, spec: ServiceSpec) -> None:
        """Start a process that writes no ready file (a third-party framework's worker)."""
        log = self.workdir / f"{spec.name}.{uuid.uuid4().hex[:6]}.log"
        self.running[spec.name] = spawn(spec, ROOT, self.settings, self.workdir / "unused.ready", log, self.extra_env)
        self.logs.append(log)

    def refusals(self) -> int:
        """Records these services would not act on (see `refusals`)."""
        return refusals(self.logs)

    def pids(self) -> list[int]:
        return [p.pid for p in self.running.values()]

    def stop(self) -> None:
        terminate(*self.pids(), grace_s=10)
        self.running.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def refusals(logs: Iterable[Path]) -> int:
    """Records services would not act on, as their logs say: an agent's `refusing` (its gate found
    no believable signature, or a signer who may not say it) and the coordinator's `dead-lettering`.
    A signed run's figures are only worth reading at 0: a refused input is work never done, so it
    would look like speed."""
    count = 0
    for log in logs:
        with contextlib.suppress(FileNotFoundError):
            text = log.read_text(errors="replace")
            count += text.count(": refusing ") + text.count(": dead-lettering ")
    return count


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python(name: str, *args: str) -> ServiceSpec:
    return ServiceSpec(name, [sys.executable, *args])


def agent(name: str, target: str) -> ServiceSpec:
    return python(name, "-m", "choreograph", "agent", "run", target)
