"""Rate limits: at most so many handler starts per second per agent instance, a token bucket.

Declared with the agent, `Agent("report", "draft", rate_limit=RateLimit(per_second=20))`. Every
handler start takes a token: a step's first attempt, each retry, and each compensation run. With
no token left, the attempts already fetched wait in the agent (no handler slot held) and the agent
pauses consumption as an open breaker does, so the rest of the backlog waits in Kafka; nothing
fails because of the limit (a step's deadline still applies). A timer on the agent's clock starts
the next attempt when its token is due, and consumption resumes once the waiting ones have started.

The bucket is the GCRA form of a token bucket (one number of state, the theoretical arrival time
of the next start): in any window of W seconds at most `burst + W * per_second` handlers start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import AgentDefinitionError


@dataclass(frozen=True)
class RateLimit:
    """A limit on an agent's handler starts: `Agent("w", "s", rate_limit=RateLimit(per_second=20))`.

    The limit holds per agent instance: two processes of one step start up to twice as many
    handlers. To cap a step as a whole (an LLM provider's quota, say), give each of N instances
    `per_second / N`.

    Attributes:
        per_second: Handler starts per second in the long run (> 0; a fraction such as 0.5 is fine).
        burst: Starts allowed at once after a quiet spell (the bucket's size); default one second's
            worth, at least 1. A burst of 1 spaces starts strictly, and then a timer that fires late
            (a busy event loop) loses that time: about 10% of 50/s measured here, none with the default.
    """

    per_second: float
    burst: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.per_second, int | float) and math.isfinite(self.per_second)
                and self.per_second > 0):
            raise AgentDefinitionError(f"RateLimit.per_second must be a positive number, got {self.per_second!r}")
        if self.burst is not None and (not isinstance(self.burst, int) or self.burst < 1):
            raise AgentDefinitionError(f"RateLimit.burst must be an integer of at least 1, got {self.burst!r}")

    @property
    def capacity(self) -> int:
        """The bucket's size: `burst`, or one second's worth (at least 1) when not given."""
        return self.burst if self.burst is not None else max(1, math.floor(self.per_second))

    def __str__(self) -> str:
        return f"{self.per_second:g}/s (burst {self.capacity})"


class TokenBucket:
    """One agent instance's bucket: pure, driven by the times given (Unix ms).

    Args:
        limit: The agent's declaration.


    Attributes:
        reserve: Attempts worth a quarter of a second (at least 1): while no more wait for tokens,
            the agent consumes again, so new inputs arrive before the last waiting one starts (the
            consumer loop looks every 100 ms; a gap longer than the burst covers loses starts).
    """

    __slots__ = ("_interval", "_slack", "_tat", "reserve")

    def __init__(self, limit: RateLimit) -> None:
        self._interval = 1000.0 / limit.per_second  # ms between starts in the long run
        self._slack = (limit.capacity - 1) * self._interval  # how far ahead of the rate a burst may run
        self._tat = 0.0  # the theoretical time of the next start: a full bucket is any time <= now
        self.reserve = max(1, math.ceil(limit.per_second / 4))

    def due(self, now_ms: int) -> int:
        """When the next token is there: `now_ms` if it is now, else a later time."""
        # Never further ahead than a full bucket's worth: a wall clock stepped back does not stall the agent.
        tat = self._tat = min(self._tat, now_ms + self._slack + self._interval)
        at = tat - self._slack
        return now_ms if at <= now_ms else math.ceil(at)

    def take(self, now_ms: int) -> None:
        """Take a token (the caller checked `due(now_ms) == now_ms`)."""
        self._tat = max(self._tat, now_ms) + self._interval
