"""An agent instance's circuit breaker and rate limit at work, and its presence on the status topic.

While the breaker is open the instance pauses consumption of its partitions (the consumer's pause:
it stays in its group, the backlog waits in the log) and due retries wait in the queue; nothing
fails because of the breaker (a step's deadline still applies). Half-open, it lets the declared
number of probes through, and pauses again while they are queued. Each transition is a
BreakerChanged on the status topic; presence records carry the state too.

A rate limit (see _ratelimit) takes the same path: while more attempts wait for tokens than a
quarter second's worth, the instance pauses consumption; it resumes once no more than that wait.
"""

from __future__ import annotations

import logging

from ..events._faults import BreakerState
from ..transport._clock import Clock
from ..transport._member import GroupMember
from ..transport._offsets import PartitionProgress
from ._breaker import CircuitBreaker
from ._handlers import Runner
from ._presence import Presence, Snapshot

log = logging.getLogger("choreograph.agent")


class Health:
    """Applies the breaker's state to consumption, publishes its transitions, reports presence.

    Args:
        name: The agent's name (for logs).
        breaker: The breaker's state machine, if the agent declares one.
        member: The agent's group membership (its partitions and consumer).
        clock: The time of the breaker's open period.
    """

    def __init__(self, name: str, breaker: CircuitBreaker | None, member: GroupMember[PartitionProgress],
                 clock: Clock) -> None:
        self._name = name
        self.breaker = breaker
        self._member = member
        self._clock = clock
        self._paused = False
        self.runner: Runner
        self.presence: Presence

    @property
    def state(self) -> BreakerState:
        """The breaker's state (closed when there is none)."""
        return self.breaker.state if self.breaker is not None else BreakerState.CLOSED

    def changed(self, cause: str) -> None:
        """The breaker changed state: say so on the status topic; once open, wait to probe."""
        breaker = self.breaker
        if breaker is None:
            return
        log.warning("%s: breaker %s: %s", self._name, breaker.state.value, cause)
        self.runner.background(self.presence.breaker_changed(breaker.state, cause), "breaker status")
        if breaker.state is BreakerState.OPEN and breaker.probe_at is not None:
            self.runner.background(self._probe_at(breaker.probe_at), "breaker timer")

    async def _probe_at(self, when_ms: int) -> None:
        await self._clock.sleep_until(when_ms)
        if self.breaker is not None and (cause := self.breaker.tick(self._clock.now_ms())) is not None:
            self.changed(cause)
            self.runner.pump()

    def flow(self) -> None:
        """Pause consumption while open, half-open with probes queued, or saturated with attempts waiting for tokens.

        Called by the consumer loop while it handles a batch (no revocation runs meanwhile).
        """
        state, runner = self.state, self.runner
        hold = runner.saturated() or state is BreakerState.OPEN or (
            state is BreakerState.HALF_OPEN and bool(runner.queue))
        partitions = list(self._member.partitions)
        if hold:
            if partitions:
                self._member.consumer.pause(*partitions)  # again each turn: also the ones assigned since
            self._paused = True
        elif self._paused:
            if partitions:
                self._member.consumer.resume(*partitions)
            self._paused = False

    def snapshot(self) -> Snapshot:
        """Breaker state, handler runs, consumer lag (from the last fetch; -1 if none yet), throttling.

        Throttled means an attempt waits for a token now or did at some moment since the last
        snapshot (taken once per presence record), so a short wait between two records is not missed.
        """
        runner = self.runner
        throttled, runner.was_throttled = runner.throttled or runner.was_throttled, False
        lag, known = 0, False
        for tp, progress in list(self._member.partitions.items()):
            try:
                high = self._member.consumer.highwater(tp)
            except Exception:  # revoked meanwhile: not ours to count
                continue
            if high is not None:
                lag, known = lag + max(0, high - progress.next), True
        return Snapshot(self.state, len(runner.runs), lag if known else -1, throttled)
