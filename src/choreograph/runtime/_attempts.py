"""Attempts of a step (or of its compensation): the one under way per workflow, and retry timers.

Where the retry timer lives, and why: in the agent. The coordinator never tells an agent to do
forward work, and only the agent has the inputs at hand; so the agent that saw an attempt fail keeps
the timer of the next one (`clock.sleep_until`, no handler slot held). The log keeps the count: each
failed attempt is a StepAttemptFailed record, the agent's own tracking record (attempt number, when
the next is due, the offsets of its inputs), or a StepTimedOut from the coordinator. Once it is in
the log the inputs are released, so a long backoff pins no commit. A restarted agent (or the next
owner of the partition) rebuilds the pending attempt from those records during its look-back and
reads the inputs back by offset: a kill between attempts neither repeats nor skips one.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..errors import DecodeError
from ..events._avro import SchemaStore
from ..events._envelope import Envelope, text_of
from ..events._faults import StepTimedOut
from ..transport._clock import Clock
from ..transport._port import Record
from ._joins import Input
from ._tracking import COMPENSATION, Done

if TYPE_CHECKING:
    from ._acks import Pending
    from ._handlers import Runner

log = logging.getLogger("choreograph.agent")


class State(enum.Enum):
    """Where an attempt is."""

    QUEUED = "queued"  # waiting for a handler slot (or for the breaker), or its task has not started yet
    RUNNING = "running"  # its handler runs
    FINISHED = "finished"  # its handler returned or raised; its record is being published
    WAITING = "waiting"  # a retry: waiting for its due time
    DROPPED = "dropped"  # will not run (timed out, or forgotten, while queued)


class Attempt:
    """One attempt of a step (key: the workflow id) or of its compensation (key: id + COMPENSATION).

    Args:
        key: The tracking key.
        workflow_id: The workflow.
        number: The attempt's number, from 1.
        inputs: The handler's inputs by event type (the request, for a compensation).
        cause: The envelope its results are caused by.
        partition: The workflow's partition.
        pinned: Whether the inputs' offsets are pinned on this attempt's behalf (its first, live run).
        due: When it is due (a retry), Unix milliseconds.
    """

    __slots__ = ("cause", "compensation", "due", "inputs", "key", "last_beat", "number", "partition", "pinned",
                 "probe", "state", "task", "timed_out", "timer", "workflow_id")

    def __init__(self, key: str, workflow_id: str, number: int, inputs: dict[bytes, Input], cause: Envelope,
                 partition: int, *, pinned: bool, due: int = 0) -> None:
        self.key = key
        self.workflow_id = workflow_id
        self.compensation = len(key) != len(workflow_id)
        self.number = number
        self.inputs = inputs
        self.cause = cause
        self.partition = partition
        self.pinned = pinned
        self.due = due
        self.state = State.QUEUED
        self.task: asyncio.Task[None] | None = None  # the handler run
        self.timer: asyncio.Task[None] | None = None  # the wait for `due`
        self.timed_out = False  # the coordinator's StepTimedOut for it was seen: it publishes no failure
        self.probe = False  # admitted by a half-open breaker
        self.last_beat: int | None = None

    def following(self, due: int) -> Attempt:
        """The next attempt, due at `due`, with the same inputs (no longer pinned)."""
        return Attempt(self.key, self.workflow_id, self.number + 1, self.inputs, self.cause, self.partition,
                       pinned=False, due=due)

    def offsets(self) -> list[int]:
        """The inputs' offsets on the workflow's partition."""
        return sorted(item.offset for item in self.inputs.values())

    def take_pins(self) -> tuple[Input, ...]:
        """The inputs whose pins are now the caller's to release (none after the first attempt's record)."""
        if not self.pinned:
            return ()
        self.pinned = False
        return tuple(self.inputs.values())

    def release(self) -> None:
        """Let the commit move past the inputs (the attempt's record is in the log)."""
        for item in self.take_pins():
            item.release()

    def __repr__(self) -> str:
        return f"Attempt({self.key!r} #{self.number} {self.state.value})"


class Attempts:
    """The work under way per tracking key, and what moves it on: acks, timers, timeouts, outcomes.

    Args:
        name: The agent's name (for logs).
        step: The agent's step.
        runner: Starts attempts.
        clock: The time retries wait for.
        done: Tracking keys of results in the log.
        ended: Workflows with an outcome.
        owned: Whether a partition of the events topic is this instance's (set up and not revoked).
        store: Schemas to decode the coordinator's StepTimedOut with.

    Attributes:
        running: Tracking keys with an attempt queued, running, publishing its record, or waiting to
            retry (the consumer loop skips their redelivered inputs).
    """

    def __init__(self, name: str, step: str, runner: Runner, clock: Clock, done: Done, ended: Done,
                 owned: Callable[[int], bool], store: SchemaStore) -> None:
        self._name, self._step = name, step
        self._runner, self._clock = runner, clock
        self._done, self._ended, self._owned, self._store = done, ended, owned, store
        self.running: dict[str, Attempt] = {}

    def start(self, attempt: Attempt) -> Coroutine[Any, Any, None] | None:
        """Start (or queue) an attempt; a coroutine to await when the handler slots are all taken."""
        self.running[attempt.key] = attempt
        runner = self._runner
        runner.admit(attempt)
        return runner.wait_for_room() if runner.congested() else None

    def settle(self, pending: Pending) -> None:
        """A record of `pending.key` is in the log: the step is done, or its retry starts waiting."""
        for item in pending.inputs:
            item.release()
        key, retry = pending.key, pending.retry
        if retry is None:
            self.forget(key)  # a late result of a timed-out attempt ends its retry too
            self._done.add(key)
        elif (now := self.running.get(key)) is not None and now.number == retry.number - 1 and (
                now.state is State.FINISHED):
            self.arm(retry)

    def arm(self, attempt: Attempt) -> None:
        """Wait for a retry's due time on a timer (no handler slot held), then start it."""
        if attempt.workflow_id in self._ended:
            self.running.pop(attempt.key, None)
            self._done.add(attempt.key)
            return
        if not self._owned(attempt.partition):
            self.running.pop(attempt.key, None)  # revoked: its next owner rebuilds it from the log
            return
        attempt.state = State.WAITING
        self.running[attempt.key] = attempt
        attempt.timer = self._runner.background(self._when_due(attempt), "retry timer")

    async def _when_due(self, attempt: Attempt) -> None:
        await self._clock.sleep_until(attempt.due)
        attempt.timer = None
        if self.running.get(attempt.key) is attempt and attempt.state is State.WAITING:
            self._runner.admit(attempt)

    def forget(self, key: str, *, release: bool = True) -> None:
        """Drop the work under way for `key` that has not started (a waiting retry, a queued attempt)."""
        attempt = self.running.pop(key, None)
        if attempt is None:
            return
        if attempt.timer is not None:
            attempt.timer.cancel()
            attempt.timer = None
        if attempt.state is State.QUEUED:
            attempt.state = State.DROPPED
            if release:
                attempt.release()

    def drop_partitions(self, numbers: set[int]) -> None:
        """Revoked partitions: their retries and queued attempts are their next owner's (from the log)."""
        for key, attempt in list(self.running.items()):
            if attempt.partition in numbers and attempt.state in (State.WAITING, State.QUEUED):
                # Pins stay: the commit must not pass a queued attempt's inputs (its next owner runs it).
                self.forget(key, release=False)

    def on_outcome(self, workflow_id: str) -> None:
        """The workflow ended: its retries (and attempts not started) will not run."""
        for key in (workflow_id, workflow_id + COMPENSATION):
            if (attempt := self.running.get(key)) is not None and attempt.state in (State.WAITING, State.QUEUED):
                self.forget(key)
                self._done.add(key)

    def on_timed_out(self, record: Record) -> None:
        """The coordinator's StepTimedOut: cancel that attempt's run; retry it when it says, or stop."""
        workflow_id = text_of(record.key)
        if workflow_id is None or (attempt := self.running.get(workflow_id)) is None:
            return
        try:
            timed_out = StepTimedOut.decode(record.value or b"", self._store)
        except DecodeError as exc:
            log.warning("%s: unreadable StepTimedOut at %d: %s", self._name, record.offset, exc)
            return
        due, number = timed_out.next_attempt_at, timed_out.attempt
        if timed_out.step != self._step:
            return
        if attempt.number == number and attempt.state in (State.QUEUED, State.RUNNING, State.WAITING):
            log.info("%s: attempt %d of %s timed out (%s)", self._name, number, workflow_id, timed_out.reason)
            attempt.timed_out = True
            attempt.release()  # the StepTimedOut is the attempt's record
            if attempt.state is State.RUNNING and attempt.task is not None:
                self._runner.record(attempt, failed=True)  # only a run says something about the dependency
                attempt.task.cancel()
            else:  # not started: waiting for its time, a slot or the breaker
                if attempt.timer is not None:
                    attempt.timer.cancel()
                    attempt.timer = None
                attempt.state = State.DROPPED
            if due is None:
                self.running.pop(workflow_id, None)
                self._done.add(workflow_id)
            else:
                self.arm(attempt.following(due))
        elif attempt.number == number + 1 and attempt.state is State.WAITING and due is None:
            self.forget(workflow_id)  # the coordinator failed the step: no more attempts
            self._done.add(workflow_id)
