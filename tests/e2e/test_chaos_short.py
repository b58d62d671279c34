"""The short variant of `make chaos`: every scenario, small and at once (`python -m bench.chaos --short
--parallel`), on the session's broker with real processes; one test per scenario reads its verdict.

Each verdict holds the invariants (nothing lost, no duplicate outcome or logged result, compensations
exact, every re-run handler explained by a death inside its crash window) and the scenario's own checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, clean_env

SCENARIOS = [
    "kills",  # its transient errors must be retried to completion
    "crash_windows",
    "duplicates",
    "poison",
    "malformed",
    "coordinator_compensating",
    "agent_down",
]


@pytest.fixture(scope="module")
def chaos(bootstrap: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The figures of one short chaos run (its last line of output), with its output for failures."""
    servers, kind = bootstrap
    home = tmp_path_factory.mktemp("chaos")
    done = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--short", "--parallel", "--seed", "7",
         "--bootstrap-servers", servers, "--broker-kind", kind],
        cwd=ROOT, env=clean_env(Path(home)), capture_output=True, text=True, timeout=240, check=False)
    lines = done.stdout.strip().splitlines()
    try:
        figures: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        pytest.fail(f"no figures (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    figures["output"] = done.stdout[-6000:]
    figures["exit"] = done.returncode
    return figures


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_holds_its_invariants_and_checks(chaos: dict[str, Any], scenario: str) -> None:
    verdict = chaos["scenarios"][scenario]
    assert verdict["goals"] > 0, chaos["output"]
    assert verdict["terminal"] == verdict["goals"], chaos["output"]
    assert verdict["ok"], f"{scenario} failed {verdict['failed']} (needs: {verdict['needs']}):\n{chaos['output']}"


def test_no_service_exited_on_its_own_and_every_group_caught_up(chaos: dict[str, Any]) -> None:
    total = chaos["total"]
    assert total["unexpected_exits"] == 0, chaos["output"]
    assert total["unexpected_errors"] == 0, chaos["output"]
    assert total["max_committed_lag"] == 0, chaos["output"]
    assert total["kills"].get("sigkill", 0) > 0, total
    assert total["kills"].get("crash:effect", 0) > 0, total
