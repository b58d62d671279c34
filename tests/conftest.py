"""Shared fixtures: one real broker per test session (embedded Tansu unless KAFKA_BOOTSTRAP_SERVERS
is set), a unique namespace per test (its own topics and groups), and stacks of real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from choreograph import EmbeddedBroker, Settings
from choreograph.runtime import ServiceSpec, discover, spawn, wait_ready
from choreograph.transport import PROFILES, terminate

ROOT = Path(__file__).resolve().parents[1]
# Short enough that a SIGKILLed member leaves its group in ~3 s (Tansu honours it), long enough
# that a busy 2-core machine does not expel a healthy member.
SESSION_TIMEOUT_MS = 3000


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[tuple[str, str]]:
    """(bootstrap servers, broker kind) for the whole session."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured, os.environ.get("CHOREO_BROKER", "kafka")
        return
    broker = EmbeddedBroker().start()
    try:
        yield broker.bootstrap_servers, "tansu"
    finally:
        broker.stop()


@pytest.fixture
def settings(bootstrap: tuple[str, str]) -> Settings:
    servers, kind = bootstrap
    profile = replace(PROFILES[kind], session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=1000)
    return Settings(bootstrap_servers=servers, broker=profile, namespace=f"t{uuid.uuid4().hex[:10]}")


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
            env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), str(ROOT)])
        for spec in specs:
            ready = self.workdir / f"{spec.name}.{uuid.uuid4().hex[:6]}.ready"
            log = self.workdir / f"{spec.name}.log"
            process = spawn(spec, ROOT, self.settings, ready, log, env)
            self.processes[spec.name] = process
            started[spec.name] = (process, ready, log)
        wait_ready(started, timeout_s)

    def start_examples(self) -> None:
        self.start(*discover(ROOT))

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        process.send_signal(sig)
        process.wait(timeout=15)

    def stop(self) -> None:
        terminate(*(process.pid for process in self.processes.values()), grace_s=10)
        self.processes.clear()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")


@pytest.fixture
async def stack(settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    running = Stack(settings, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def agent_spec(name: str, target: str) -> ServiceSpec:
    return ServiceSpec(name, [sys.executable, "-m", "choreograph", "agent", "run", target])


def coordinator_spec() -> ServiceSpec:
    return ServiceSpec("coordinator", [sys.executable, "-m", "services.coordinator"])


def choreo(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "choreograph", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def clean_env(home: Path) -> dict[str, str]:
    """This environment without any broker or choreograph settings, with its own run directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CHOREO_"))}
    return {**env, "CHOREO_HOME": str(home)}


@pytest.fixture
def cli_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return {**clean_env(tmp_path / "home"), **settings.env()}
