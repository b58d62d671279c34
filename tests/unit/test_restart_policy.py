"""When the supervisor of `choreo up` restarts a service that exited: the backoff and the crash loop,
with time given by hand (the supervisor on real processes: tests/e2e/test_supervision.py)."""

from __future__ import annotations

import pytest

from choreograph.errors import ConfigurationError
from choreograph.runtime._restarts import RestartPolicy, Restarts

POLICY = RestartPolicy(initial_s=0.5, max_s=30.0, loop_exits=5, loop_window_s=60.0, stable_s=10.0)


def test_the_delay_doubles_from_the_initial_one_up_to_the_maximum() -> None:
    restarts = Restarts(RestartPolicy(initial_s=0.5, max_s=30.0, loop_exits=100))
    delays = [restarts.exited(now=float(i), ran_s=0.1)[0] for i in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert restarts.state == "running", "slow enough exits are no crash loop"


def test_a_run_that_lasted_resets_the_backoff() -> None:
    restarts = Restarts(POLICY)
    assert [restarts.exited(now=t, ran_s=1.0)[0] for t in (0.0, 2.0, 5.0)] == [0.5, 1.0, 2.0]
    assert restarts.exited(now=100.0, ran_s=POLICY.stable_s)[0] == 0.5
    assert restarts.exited(now=101.0, ran_s=0.2)[0] == 1.0


def test_five_exits_within_a_minute_are_a_crash_loop_retried_at_the_maximum_until_a_stable_run() -> None:
    restarts = Restarts(POLICY)
    outcomes = [restarts.exited(now=t, ran_s=0.3) for t in (0.0, 1.0, 3.0, 6.0)]
    assert [began for _, began in outcomes] == [False] * 4
    assert restarts.state == "running"
    delay, began = restarts.exited(now=12.0, ran_s=0.3)
    assert (delay, began, restarts.state) == (30.0, True, "crash-loop")
    # Still looping: retried at the maximum, and "began" is reported once.
    assert restarts.exited(now=45.0, ran_s=0.3) == (30.0, False)
    assert restarts.exited(now=200.0, ran_s=0.3) == (30.0, False), "a crash loop ends only with a stable run"
    assert restarts.stable()
    assert restarts.state == "running"
    assert restarts.exited(now=300.0, ran_s=0.3) == (0.5, False)


def test_exits_spread_over_more_than_the_window_are_no_crash_loop() -> None:
    restarts = Restarts(RestartPolicy(initial_s=0.5, max_s=2.0, loop_exits=5, loop_window_s=60.0, stable_s=1000))
    for t in range(0, 200, 16):  # at most 4 exits in any 60 s
        restarts.exited(now=float(t), ran_s=0.5)
    assert restarts.state == "running"


def test_the_backoff_is_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOREO_RESTART_BACKOFF_MS", "50")
    monkeypatch.setenv("CHOREO_RESTART_BACKOFF_MAX_MS", "2000")
    assert (RestartPolicy.from_env().initial_s, RestartPolicy.from_env().max_s) == (0.05, 2.0)
    monkeypatch.setenv("CHOREO_RESTART_BACKOFF_MS", "60000")
    monkeypatch.delenv("CHOREO_RESTART_BACKOFF_MAX_MS")
    assert RestartPolicy.from_env().max_s == 60.0, "the maximum is never below the initial delay"
    monkeypatch.setenv("CHOREO_RESTART_BACKOFF_MAX_MS", "100")
    with pytest.raises(ConfigurationError, match=r"CHOREO_RESTART_BACKOFF_MAX_MS='100': expected an integer from "
                                                 r"60000 to 3600000 \(milliseconds\)"):
        RestartPolicy.from_env()
