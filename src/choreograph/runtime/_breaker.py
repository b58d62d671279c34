"""Circuit breakers: an agent that keeps failing stops taking work until its dependency recovers."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import timedelta

from ..errors import AgentDefinitionError
from ..events._faults import BreakerState


@dataclass(frozen=True)
class Breaker:
    """A circuit breaker, declared with the agent: `Agent("trip", "car", breaker=Breaker(...))`.

    Closed, it counts the outcomes of the last `window` attempts; when at least `min_calls` were
    counted and the share of failures reaches `failure_ratio`, it opens. Open, the agent pauses
    consumption (the backlog waits in Kafka and due retries wait) for `open_for`; then it lets
    `half_open_probes` attempts through: all succeed and it closes, one fails and it opens again.
    Each transition is a BreakerChanged event on the status topic.

    Attributes:
        failure_ratio: The share of failed attempts in the window that opens it (0 to 1].
        window: How many recent attempts are counted.
        min_calls: Attempts counted before it may open.
        open_for: Seconds (or a timedelta) it stays open before probing.
        half_open_probes: Attempts let through while half-open.
    """

    failure_ratio: float = 0.5
    window: int = 20
    min_calls: int = 5
    open_for: float | timedelta = 30.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.failure_ratio <= 1:
            raise AgentDefinitionError(f"Breaker.failure_ratio must be in (0, 1], got {self.failure_ratio}")
        if self.window < 1 or self.min_calls < 1 or self.half_open_probes < 1:
            raise AgentDefinitionError("Breaker.window, min_calls and half_open_probes must be at least 1")

    @property
    def open_for_ms(self) -> int:
        """`open_for` in milliseconds."""
        seconds = self.open_for.total_seconds() if isinstance(self.open_for, timedelta) else self.open_for
        return round(seconds * 1000)


class CircuitBreaker:
    """The state machine of one agent instance's breaker: pure, driven by outcomes and the time given.

    Closed, it counts the outcomes of the last `window` attempts. Open, it admits nothing until
    `probe_at`; `tick()` at or after that moves it to half-open, which admits `half_open_probes`
    attempts: all of them succeeding closes it, one failing opens it again. Outcomes of attempts that
    were not probes are ignored while it is open or half-open (they started before it opened).

    Args:
        declared: The agent's Breaker declaration.
    """

    __slots__ = ("_declared", "_outcomes", "_probes_left", "_successes", "probe_at", "state")

    def __init__(self, declared: Breaker) -> None:
        self._declared = declared
        self.state = BreakerState.CLOSED
        self.probe_at: int | None = None  # when open: when it moves to half-open
        self._outcomes: deque[bool] = deque(maxlen=declared.window)  # True: the attempt failed
        self._probes_left = 0
        self._successes = 0

    def admit(self) -> bool:
        """Whether an attempt may start now; in half-open, taking one of the probes."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN and self._probes_left > 0:
            self._probes_left -= 1
            return True
        return False

    def give_back(self) -> None:
        """A probe admitted but never run (its attempt was dropped first): another attempt may probe."""
        if self.state is BreakerState.HALF_OPEN:
            self._probes_left = min(self._probes_left + 1, self._declared.half_open_probes)

    def record(self, failed: bool, now_ms: int, *, probe: bool = False) -> str | None:
        """Count one attempt's outcome.

        Args:
            failed: Whether the attempt failed (a retryable error or a timeout).
            now_ms: The time of the outcome.
            probe: Whether the attempt was admitted as a half-open probe.

        Returns:
            The cause of a state change (then `state` is the new state), or None.
        """
        declared = self._declared
        if self.state is BreakerState.CLOSED:
            outcomes = self._outcomes
            outcomes.append(failed)
            failures = sum(outcomes)
            if len(outcomes) >= declared.min_calls and failures >= declared.failure_ratio * len(outcomes):
                return self._open(now_ms, f"{failures} of the last {len(outcomes)} attempts failed")
            return None
        if self.state is BreakerState.HALF_OPEN and probe:
            if failed:
                return self._open(now_ms, "a half-open probe failed")
            self._successes += 1
            if self._successes >= declared.half_open_probes:
                self.state, self.probe_at = BreakerState.CLOSED, None
                return f"{self._successes} half-open probe(s) succeeded"
        return None

    def tick(self, now_ms: int) -> str | None:
        """Move from open to half-open once `probe_at` has come; the cause if it moved."""
        if self.state is BreakerState.OPEN and self.probe_at is not None and now_ms >= self.probe_at:
            self.state = BreakerState.HALF_OPEN
            self._probes_left, self._successes = self._declared.half_open_probes, 0
            return f"open for {self._declared.open_for_ms} ms: probing"
        return None

    def _open(self, now_ms: int, cause: str) -> str:
        self.state = BreakerState.OPEN
        self.probe_at = now_ms + self._declared.open_for_ms
        self._outcomes.clear()
        self._probes_left = self._successes = 0
        return cause
