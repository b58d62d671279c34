"""What tests share besides fixtures: paths, polling, services in this process or as processes, the CLI.

Fixtures live in the conftest.py files (tests/conftest.py: the broker; tests/e2e/conftest.py: stacks
of processes and the CLI's environment); tests import everything else from here, never from a conftest.
Assertions about a saga's recorded history are in helpers.sagas.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from choreograph import Settings
from choreograph.runtime import (
    LIBRARY_SERVICES,
    AgentRuntime,
    Coordinator,
    ServiceSpec,
    coordinator_spec,
    discover,
    load_agent,
    spawn,
    wait_ready,
)
from choreograph.security import Identity
from choreograph.transport import Producer, Trust, terminate

__all__ = [
    "GOLDEN",
    "ROOT",
    "SESSION_TIMEOUT_MS",
    "Stack",
    "agent_spec",
    "choreo",
    "clean_env",
    "coordinator_spec",
    "eventually",
    "example_services",
    "serving",
    "sign",
    "signing",
]

ROOT = Path(__file__).resolve().parents[2]
# Recorded runs of the real coordinator (tests/golden/generate.py), replayed by tests/unit/test_replay.py.
GOLDEN = ROOT / "tests" / "golden"
# Short enough that a SIGKILLed member leaves its group in ~3 s (Tansu honours it), long enough
# that a busy 2-core machine does not expel a healthy member.
SESSION_TIMEOUT_MS = 3000


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 30.0, what: str = "") -> Any:
    """Poll `check` until it returns something truthy, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what or check}")
        await asyncio.sleep(0.1)


# Services in this process (integration tests) -----------------------------------------------------

Service = AgentRuntime | Coordinator


def example_services(settings: Settings, *, coordinator: bool = True) -> list[Service]:
    """The example agents of services/ (and the coordinator), to run in this process with `serving`."""
    found: list[Service] = [AgentRuntime(load_agent(spec.argv[-1]), settings)
                            for spec in discover(ROOT) if spec.name not in LIBRARY_SERVICES]
    return [*found, Coordinator(settings)] if coordinator else found


@asynccontextmanager
async def serving(*services: Service) -> AsyncIterator[None]:
    """Services running as tasks of this event loop: all started (joined, announced) on entry, asked
    to stop, awaited and stopped on exit. A service whose run() failed fails the block."""
    outcomes = await asyncio.gather(*(service.start() for service in services), return_exceptions=True)
    started = [s for s, outcome in zip(services, outcomes, strict=True) if not isinstance(outcome, BaseException)]
    runs = [asyncio.create_task(service.run()) for service in started]
    try:
        if len(started) < len(services):
            raise next(o for o in outcomes if isinstance(o, BaseException))
        yield
    finally:
        for service in started:
            service.request_stop()
        ended = await asyncio.gather(*runs, return_exceptions=True)
        await asyncio.gather(*(service.stop() for service in started))
    failed = [e for e in ended if isinstance(e, BaseException)]
    if failed:
        raise failed[0]


def signing(identity: str, producer: Producer) -> Producer:
    """`producer`, signing what it sends as `identity` with its key in this test's CHOREO_HOME (made
    and trusted there if it is new): what a genuine party of that identity would write."""
    return Trust.from_env(Identity.parse(identity)).producer(producer)


def sign(identity: str, key: bytes | None, value: bytes | None,
         headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """`headers` signed as `identity` would sign a record of this key and value (see `signing`)."""
    signer = Trust.from_env(Identity.parse(identity)).signer
    assert signer is not None, "CHOREO_VERIFY=off in a test"
    return signer.sign(key, value, headers)


# Services as processes (end-to-end tests) ---------------------------------------------------------


@dataclass
class Stack:
    """Services of one test, each its own OS process, all in the test's namespace."""

    settings: Settings
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, *specs: ServiceSpec, pythonpath: Path | None = None, timeout_s: float = 60) -> None:
        started = {}
        env = dict(self.extra_env)
        if pythonpath is not None:
            # The caller's PYTHONPATH stays (a worktree's src/ must win over the editable install).
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), str(ROOT),
                                                              os.environ.get("PYTHONPATH")]))
        for spec in specs:
            ready = self.workdir / f"{spec.name}.{uuid.uuid4().hex[:6]}.ready"
            log = self.workdir / f"{spec.name}.log"
            process = spawn(spec, ROOT, self.settings, ready, log, env)
            self.processes[spec.name] = process
            started[spec.name] = (process, ready, log)
        wait_ready(started, timeout_s)

    def start_examples(self, index: bool = False) -> None:
        """The coordinator and the example agents (and the indexer if asked: most tests need no index,
        and every process costs a 2-core machine)."""
        self.start(*(spec for spec in discover(ROOT) if index or spec.name != "index"))

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        process.send_signal(sig)
        process.wait(timeout=15)

    def stop(self) -> None:
        terminate(*(process.pid for process in self.processes.values()), grace_s=10)
        for process in self.processes.values():
            # terminate() reaps by pid; wait() tells each Popen (else its __del__ warns "still running").
            process.wait(timeout=15)
        self.processes.clear()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")


def agent_spec(name: str, target: str) -> ServiceSpec:
    return ServiceSpec(name, [sys.executable, "-m", "choreograph", "agent", "run", target])


def choreo(*args: str, env: dict[str, str], timeout: float = 120, cwd: Path = ROOT
           ) -> subprocess.CompletedProcess[str]:
    """`choreo ARGS...` as a user runs it: its own process, from the project root (or `cwd`)."""
    return subprocess.run([sys.executable, "-m", "choreograph", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def clean_env(home: Path) -> dict[str, str]:
    """This environment without any broker or choreograph settings, with its own run directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CHOREO_"))}
    return {**env, "CHOREO_HOME": str(home)}
