"""When the supervisor restarts a service that exited: exponential backoff, and crash loops named as such.

Pure bookkeeping: every method takes the time (monotonic seconds) as an argument, so the policy is
tested without processes or sleeps (tests/unit/test_restart_policy.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..transport._settings import _env_int

RUNNING = "running"
RESTARTING = "restarting"
CRASH_LOOP = "crash-loop"
STOPPED = "stopped"

_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class RestartPolicy:
    """How a supervised service that exited is started again.

    The delay doubles from `initial_s` up to `max_s` with each exit that follows a short run; a run
    of `stable_s` resets it. A service that exits `loop_exits` times within `loop_window_s` is in a
    crash loop: reported loudly and retried at `max_s` until a run lasts `stable_s` again. Giving up
    would leave the stack broken after a cause that heals by itself (the broker restarting, a
    dependency's DNS); retrying fast would spin the CPU, flood the log and, for an agent, make its
    consumer group rebalance every few seconds, pausing the healthy copies of the same step.

    Attributes:
        initial_s: The first delay (CHOREO_RESTART_BACKOFF_MS, default 500 ms).
        max_s: The longest delay, and the delay in a crash loop (CHOREO_RESTART_BACKOFF_MAX_MS, default 30 s).
        loop_exits: Exits within `loop_window_s` that make a crash loop.
        loop_window_s: See `loop_exits`.
        stable_s: A run at least this long resets the backoff and ends a crash loop.
        stop_grace_s: How long a stopped service has after SIGTERM before SIGKILL.
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    loop_exits: int = 5
    loop_window_s: float = 60.0
    stable_s: float = 10.0
    stop_grace_s: float = 10.0

    @classmethod
    def from_env(cls) -> RestartPolicy:
        """The default policy with CHOREO_RESTART_BACKOFF_MS and CHOREO_RESTART_BACKOFF_MAX_MS applied.

        Raises:
            ConfigurationError: A variable is not an integer number of milliseconds in range (the
                maximum may not be below the initial delay).
        """
        default = cls()
        initial = _env_int("CHOREO_RESTART_BACKOFF_MS", 1, _HOUR_MS, "milliseconds")
        initial_ms = initial if initial is not None else int(default.initial_s * 1000)
        # The range's low end is the initial delay: the error line says so.
        largest = _env_int("CHOREO_RESTART_BACKOFF_MAX_MS", initial_ms, _HOUR_MS, "milliseconds")
        max_ms = largest if largest is not None else max(initial_ms, int(default.max_s * 1000))
        return cls(initial_s=initial_ms / 1000, max_s=max_ms / 1000)


@dataclass
class Restarts:
    """One service's restart history under a policy.

    Attributes:
        policy: The policy.
        count: How many times the service was started again after exiting.
        crash_loop: Whether it is in a crash loop now.
        streak: Exits since the last stable run (the backoff's exponent).
    """

    policy: RestartPolicy
    count: int = 0
    crash_loop: bool = False
    streak: int = 0
    _exits: deque[float] = field(default_factory=deque)

    def exited(self, now: float, ran_s: float) -> tuple[float, bool]:
        """Record an exit at `now` after a run of `ran_s` seconds.

        Returns:
            The delay before the next start, and whether this exit began a crash loop.
        """
        if ran_s >= self.policy.stable_s:
            self.stable()
        self.streak += 1
        self._exits.append(now)
        while self._exits and self._exits[0] <= now - self.policy.loop_window_s:
            self._exits.popleft()
        began = not self.crash_loop and len(self._exits) >= self.policy.loop_exits
        self.crash_loop = self.crash_loop or began
        if self.crash_loop:
            return self.policy.max_s, began
        return min(self.policy.max_s, self.policy.initial_s * 2 ** (self.streak - 1)), began

    def stable(self) -> bool:
        """The service has run `stable_s`: reset the backoff, end a crash loop; whether anything changed."""
        changed = self.streak > 0 or self.crash_loop
        self.streak, self.crash_loop = 0, False
        self._exits.clear()
        return changed

    @property
    def state(self) -> str:
        """`crash-loop` in a crash loop, else `running` (the caller knows when it is `restarting`)."""
        return CRASH_LOOP if self.crash_loop else RUNNING
