"""Circuit breakers: an agent that keeps failing stops taking work until its dependency recovers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ..errors import AgentDefinitionError


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
