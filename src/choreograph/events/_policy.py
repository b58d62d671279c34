"""Retry policies: what an agent declares (`Retry`) and what its contract and the graph carry (`RetryPolicy`).

The wait before attempt n+1 is `initial * multiplier**(n-1)`, capped at `max`, scaled by a jitter
drawn from a hash of (workflow id, step, attempt), not from a random generator: the agent that
schedules a retry and the coordinator that schedules the deadline of the next attempt compute the
same due time, and replaying a recorded log re-decides it exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import BaseModel, ConfigDict

from ..errors import AgentDefinitionError


class RetryPolicy(BaseModel):
    """A retry policy as the Avro records carry it (milliseconds); see Retry for the declaration.

    Attributes:
        max_attempts: Attempts in all, the first included; 1 means no retry.
        initial_ms: The wait after the first failed attempt.
        multiplier: Each further wait is this many times the one before.
        max_ms: The longest wait.
        jitter: A wait is scaled by a factor in [1 - jitter, 1 + jitter].
    """

    model_config = ConfigDict(frozen=True, defer_build=True)
    max_attempts: int
    initial_ms: int
    multiplier: float
    max_ms: int
    jitter: float

    def delay_ms(self, workflow_id: str, step: str, attempt: int) -> int:
        """The wait after failed attempt `attempt` (from 1) before the next one starts."""
        base = min(float(self.max_ms), self.initial_ms * self.multiplier ** max(0, attempt - 1))
        if self.jitter:
            digest = hashlib.blake2b(f"{workflow_id}/{step}/{attempt}".encode(), digest_size=8).digest()
            unit = int.from_bytes(digest, "big") / 2**64  # in [0, 1)
            base *= 1 - self.jitter + 2 * self.jitter * unit
        return max(0, round(base))

    def next_attempt_at(self, workflow_id: str, step: str, attempt: int, failed_at_ms: int) -> int | None:
        """When attempt `attempt + 1` is due after `attempt` failed at `failed_at_ms`; None if none is left."""
        if attempt >= self.max_attempts:
            return None
        return failed_at_ms + self.delay_ms(workflow_id, step, attempt)


NO_RETRY = RetryPolicy(max_attempts=1, initial_ms=0, multiplier=1.0, max_ms=0, jitter=0.0)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True)
class Retry:
    """How an agent retries a failed attempt of its step and of its compensation.

    Declared with the agent: `Agent("trip", "car", retry=Retry(max_attempts=5, initial=1, max=60))`.
    Each failed attempt is a StepAttemptFailed event in the log (attempt number, error, when the next
    is due); the last failure fails the step. An exception whose type is in `non_retryable`, or a
    raised `NonRetryable`, fails the step at once.

    Attributes:
        max_attempts: Attempts in all, the first included (1: no retry).
        initial: Seconds (or a timedelta) to wait after the first failed attempt.
        multiplier: Each further wait is this many times the one before.
        max: The longest wait, in seconds (or a timedelta).
        jitter: A wait is scaled by a factor in [1 - jitter, 1 + jitter] (0 to 1).
        non_retryable: Exception types that fail the step at once.
    """

    max_attempts: int = 3
    initial: float | timedelta = 1.0
    multiplier: float = 2.0
    max: float | timedelta = 60.0
    jitter: float = 0.1
    non_retryable: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise AgentDefinitionError(f"Retry.max_attempts must be at least 1, got {self.max_attempts}")
        if _seconds(self.initial) < 0 or _seconds(self.max) < 0 or self.multiplier < 1:
            raise AgentDefinitionError("Retry waits must be >= 0 and its multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise AgentDefinitionError(f"Retry.jitter must be between 0 and 1, got {self.jitter}")

    def policy(self) -> RetryPolicy:
        """The policy as announced in the step's contract."""
        return RetryPolicy(max_attempts=self.max_attempts, initial_ms=round(_seconds(self.initial) * 1000),
                           multiplier=float(self.multiplier), max_ms=round(_seconds(self.max) * 1000),
                           jitter=float(self.jitter))


def millis(value: float | timedelta | None) -> int | None:
    """Seconds (or a timedelta) as whole milliseconds; None stays None."""
    return None if value is None else round(_seconds(value) * 1000)
