"""An agent process for the chaos suite: `python -m bench._chaos_agent choreograph.examples.report.draft:agent`.

It runs the agent as `choreo agent run` does, with one difference: its broker port kills the process
at a planned crash point, once per (workflow, step), as `choreograph.testing.Crash` does in memory:

- "effect": when the step's result is handed to the producer. The handler ran (its effect is in the
  effect log) and nothing was published: the next owner of the input must run it again.
- "publish": when the broker acknowledges the step's result. The result is in the log and the
  input's offset is not committed: the runtime never sees that acknowledgement (it is handed a
  future that never resolves), so it cannot release the input, and no commit can pass it. The next
  owner must find the result in the log and not run the step again.

The plan is the workflow's fault plan (src/choreograph/examples/report/_faults.py, key "crash": {step: window}).
Before exiting, the process appends "<pid> <window> <workflow id> <step> <time_ns>" to
$CHAOS_KILLS_FILE and exits with CRASH_EXIT, so the harness can tell a planned death from a crash.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from choreograph import ChoreographError, ConfigurationError, Settings
from choreograph.examples.report._faults import first_time, plan_of  # run from the project root, as services are
from choreograph.runtime import AgentRuntime, load_agent, serve
from choreograph.transport import Kafka, RecordMetadata

CRASH_EXIT = 86  # a planned death (EX_... codes stop at 78; 86 is ours)
_RESULT = b"step_completed"


def die(window: str, workflow_id: str, step: str) -> None:
    """Note the planned death in $CHAOS_KILLS_FILE (one write, so lines never interleave), then exit."""
    if path := os.environ.get("CHAOS_KILLS_FILE"):
        line = f"{os.getpid()} {window} {workflow_id} {step} {time.time_ns()}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, line)
        os.close(fd)
    os._exit(CRASH_EXIT)


class CrashingProducer:
    """aiokafka's producer, but a planned result kills the process (see the module docstring)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                   partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                   timestamp_ms: int | None = None) -> asyncio.Future[RecordMetadata]:
        window, workflow_id, step = _planned(key, headers)
        if window == "effect":
            die(window, workflow_id, step)
        future: asyncio.Future[RecordMetadata] = await self._inner.send(
            topic, value=value, key=key, partition=partition, headers=headers, timestamp_ms=timestamp_ms)
        if window != "publish":
            return future
        held: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()

        def on_ack(done: asyncio.Future[RecordMetadata]) -> None:
            if done.cancelled():  # not in the log: no crash point; the runtime sees what happened
                held.cancel()
            elif (error := done.exception()) is not None:
                held.set_exception(error)
            elif first_time(workflow_id, step, "crash-publish"):  # taken now: a death before this leaves it
                die(window, workflow_id, step)
            else:
                held.set_result(done.result())

        future.add_done_callback(on_ack)
        return held

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                            partition: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
                            timestamp_ms: int | None = None) -> RecordMetadata:
        """Through `send`, so a result sent this way meets its crash point too."""
        return await (await self.send(topic, value, key, partition=partition, headers=headers,
                                      timestamp_ms=timestamp_ms))


def _planned(key: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> tuple[str | None, str, str]:
    """(window, workflow id, step) if this record is a step result planned to crash its process; an
    "effect" crash is taken (once per run of the suite) here, a "publish" one once acknowledged."""
    kind = step = None
    for name, value in headers or ():
        if name == "ce_kind":
            kind = value
        elif name == "ce_step":
            step = value
    if kind != _RESULT or step is None or not key:
        return None, "", ""
    workflow_id, step_name = key.decode(errors="replace"), step.decode(errors="replace")
    window = plan_of(workflow_id).get("crash", {}).get(step_name)
    if window == "publish" or (window == "effect" and first_time(workflow_id, step_name, "crash-effect")):
        return window, workflow_id, step_name
    return None, "", ""


class CrashingKafka(Kafka):
    """The Kafka transport whose producers are CrashingProducers."""

    def producer(self, **overrides: Any) -> Any:
        return CrashingProducer(super().producer(**overrides))


def main(argv: list[str]) -> int:
    """Run the agent `argv[0]` (module:attr) until SIGTERM; 2 on bad settings, 1 on another library error."""
    logging.basicConfig(level=os.environ.get("CHOREO_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        agent = load_agent(argv[0])
        settings = Settings.from_env()
        ready = os.environ.get("CHOREO_READY_FILE")
        runtime = AgentRuntime(agent, settings, transport=CrashingKafka(settings),
                               ready_file=Path(ready) if ready else None)
        asyncio.run(serve(runtime))
    except ChoreographError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigurationError) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
