"""The local stack's state file, `.choreo/services.json`, and telling a recorded pid from a reused one.

The supervisor of `choreo up` rewrites the file whenever something changes (a start, an exit, a
service becoming ready), through a temporary file and a rename, so a reader never sees half of it.
It holds the supervisor's pid, whether `up` started the broker, the settings the services run with,
and per service: name, pid, started at, restarts, last exit code, ready or not, state. It outlives
a supervisor that was SIGKILLed, so `choreo down` still finds the children by their pids.

A pid is recorded with its process's start time (in clock ticks since boot, from /proc): a pid
that was reused by another process since is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import orjson

from ..transport._broker import alive
from ..transport._settings import run_dir

VERSION = 1


def state_path() -> Path:
    """The state file: `services.json` in run_dir()."""
    return run_dir() / "services.json"


def read_state(path: Path | None = None) -> dict[str, Any] | None:
    """The state file's content; None if there is none (nothing is up) or it cannot be read."""
    try:
        state = orjson.loads((path or state_path()).read_bytes())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(state: dict[str, Any], path: Path | None = None) -> None:
    """Replace the state file in one step (a reader sees the old content or the new, never a mix)."""
    target = path or state_path()
    scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    scratch.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
    os.replace(scratch, target)


def now_ms() -> int:
    """Wall-clock Unix milliseconds (for `started at`; intervals use the monotonic clock)."""
    return time.time_ns() // 1_000_000


def start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot; None without /proc or such a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2, in parentheses) may hold spaces, so count after its ")".
    return int(stat.rsplit(")", 1)[1].split()[19])


def same_process(pid: int | None, ticks: int | None) -> bool:
    """Whether `pid` runs and is still the process recorded with `ticks` (None: not recorded, trust the pid)."""
    if pid is None or not alive(pid):
        return False
    now = start_ticks(pid)
    return ticks is None or now is None or now == ticks


def stop_pids(recorded: list[tuple[int, int | None]], grace_s: float) -> None:
    """SIGTERM each recorded process that still is the one recorded, SIGKILL what outlives `grace_s`."""
    running = [(pid, ticks) for pid, ticks in recorded if same_process(pid, ticks)]
    for pid, _ in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while running and time.monotonic() < deadline:
        time.sleep(0.02)
        running = [(pid, ticks) for pid, ticks in running if same_process(pid, ticks)]
    for pid, _ in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid, _ in running) and time.monotonic() < deadline:
        time.sleep(0.02)


def children(state: dict[str, Any]) -> list[tuple[int, int | None]]:
    """(pid, start ticks) of every service process the state records."""
    return [(int(s["pid"]), s.get("pid_ticks")) for s in state.get("services", []) if s.get("pid")]
