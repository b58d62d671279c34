"""Faults in real agent processes on the broker (issue 11): a handler's own asyncio.timeout fails its
step and leaves its process running (it used to cancel the consumer loop: the process exited and the
timeout never fired), and an agent killed with SIGKILL between two attempts of a step neither
repeats nor skips an attempt once restarted (the count and the due time come from the log)."""

from __future__ import annotations

import signal
from pathlib import Path

from helpers import Stack, agent_spec, coordinator_spec, eventually

from choreograph import Client, OutcomeStatus, history

FAULTY_AGENTS = '''
import asyncio
import os
from pathlib import Path

from choreograph import Agent, Event, Retry, StepContext

_FIELDS = [{"name": "n", "type": "long"}]


class FaultGoal(Event, schema={"type": "record", "name": "FaultGoal", "namespace": "faults", "fields": _FIELDS}):
    n: int


class FaultDone(Event, schema={"type": "record", "name": "FaultDone", "namespace": "faults", "fields": _FIELDS}):
    n: int


RUNS = Path(os.environ["FAULT_RUNS"])
slow = Agent(workflow="faultslow", step="slow")
flaky = Agent(workflow="faultflaky", step="flaky", retry=Retry(max_attempts=3, initial=6, multiplier=1, jitter=0))


@slow.handler
async def run_slow(ctx: StepContext, goal: FaultGoal) -> FaultDone:
    if goal.n == 1:
        async with asyncio.timeout(0.2):
            await asyncio.sleep(2)
    return FaultDone(n=goal.n)


@flaky.handler
async def run_flaky(ctx: StepContext, goal: FaultGoal) -> FaultDone:
    with RUNS.open("a") as runs:
        runs.write(f"{goal.n} {ctx.attempt}\\n")
    if ctx.attempt < 3:
        raise ConnectionError(f"flaky API (attempt {ctx.attempt})")
    return FaultDone(n=goal.n)
'''


def start(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "faulty_agents.py").write_text(FAULTY_AGENTS)
    stack.extra_env["FAULT_RUNS"] = str(tmp_path / "runs.txt")
    stack.start(coordinator_spec(), agent_spec("slow", "faulty_agents:slow"),
                agent_spec("flaky", "faulty_agents:flaky"), pythonpath=tmp_path)


async def test_a_handlers_own_timeout_fails_its_step_and_its_agent_process_keeps_running(
        stack: Stack, tmp_path: Path) -> None:
    start(stack, tmp_path)
    async with Client(stack.settings) as client:
        timed = await client.publish("faultslow", {"n": 1})
        outcome = await client.wait(timed, 30)
        assert outcome is not None
        assert outcome.status is OutcomeStatus.COMPENSATED
        assert stack.processes["slow"].poll() is None, stack.log("slow")
        entries = await history(stack.settings, timed.workflow_id, to_end=True)
        [failed] = [e for e in entries if e.kind == "step_failed"]
        assert failed.data is not None
        assert failed.data["error_type"] == "TimeoutError"
        after = await client.publish("faultslow", {"n": 2})
        done = await client.wait(after, 30)
    assert done is not None
    assert done.status is OutcomeStatus.COMPLETED


async def test_an_agent_killed_between_attempts_neither_repeats_nor_skips_one(stack: Stack, tmp_path: Path) -> None:
    start(stack, tmp_path)
    async with Client(stack.settings) as client:
        goal = await client.publish("faultflaky", {"n": 7})

        async def failed_once() -> bool:
            entries = await history(stack.settings, goal.workflow_id, to_end=True)
            return any(e.kind == "step_attempt_failed" for e in entries)

        await eventually(failed_once, timeout_s=30, what="the first attempt's failure in the log")
        stack.kill("flaky", signal.SIGKILL)  # its next attempt is due in 6 s
        stack.start(agent_spec("flaky", "faulty_agents:flaky"), pythonpath=tmp_path)
        outcome = await client.wait(goal, 60)
    assert outcome is not None
    assert outcome.status is OutcomeStatus.COMPLETED
    assert (tmp_path / "runs.txt").read_text().split("\n")[:-1] == ["7 1", "7 2", "7 3"]
    entries = await history(stack.settings, goal.workflow_id, to_end=True)
    assert [e.data["attempt"] for e in entries if e.kind == "step_attempt_failed" and e.data] == [1, 2]
