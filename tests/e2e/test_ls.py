"""`choreo ls` (issue 14) as a user runs it: `choreo up` starts the indexer with the coordinator and the
example agents; goals are published; `ls` lists each workflow with its outcome, filters by status,
gives the newest first; `stats` counts each step's runs. Read from the index file, with no broker call."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from helpers import choreo

from choreograph.index import index_path


def ls(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    shown = choreo("ls", "--json", *args, env=env)
    assert shown.returncode == 0, shown.stderr
    return [orjson.loads(line) for line in shown.stdout.splitlines()]


def until_listed(env: dict[str, str], expected: dict[str, str], timeout_s: float = 90) -> list[dict[str, Any]]:
    """`choreo ls --json` until it lists exactly these workflow ids with these statuses."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = ls(env, "--limit", "1000")
        if {r["workflow_id"]: r["status"] for r in rows} == expected:
            return rows
        assert time.monotonic() < deadline, f"after {timeout_s:.0f} s, choreo ls shows {rows}"
        time.sleep(0.5)


def publish(env: dict[str, str], data: str) -> str:
    published = choreo("publish", "report", "--data", data, env=env)
    assert published.returncode == 0, published.stderr
    workflow_id: str = orjson.loads(published.stdout)["workflow_id"]
    return workflow_id


def test_ls_lists_every_workflow_with_its_status_filters_and_gives_the_newest_first(
        cli_env: dict[str, str]) -> None:
    none_yet = choreo("ls", env=cli_env)
    assert none_yet.returncode == 1
    assert none_yet.stderr.startswith("error: no workflow index here ("), none_yet.stderr
    assert "`choreo up` runs one" in none_yet.stderr
    up = choreo("up", env=cli_env)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.split()[:6:3] == ["coordinator", "index"], up.stdout
        first = publish(cli_env, '{"topic": "ls1"}')
        failed = publish(cli_env, '{"topic": "ls2", "fail_at": "draft"}')
        last = publish(cli_env, '{"topic": "ls3"}')
        rows = until_listed(cli_env, {first: "completed", failed: "compensated", last: "completed"})
        assert [r["workflow_id"] for r in rows] == [last, failed, first], "newest first"
        compensated = next(r for r in rows if r["workflow_id"] == failed)
        assert (compensated["failed_step"], compensated["workflow"], compensated["last_kind"]) == (
            "draft", "report", "outcome")
        assert compensated["started_ms"] <= compensated["last_event_ms"]
        assert compensated["duration_ms"] == compensated["last_event_ms"] - compensated["started_ms"]

        assert [r["workflow_id"] for r in ls(cli_env, "--status", "compensated")] == [failed]
        assert [r["workflow_id"] for r in ls(cli_env, "--limit", "1")] == [last]
        assert [r["workflow_id"] for r in ls(cli_env, "--workflow", "nothing")] == []
        assert len(ls(cli_env, "--since", "1h")) == 3

        # `choreo stats`: each step's runs over the last 5 minutes, from the same index.
        shown = choreo("stats", "--json", env=cli_env)
        assert shown.returncode == 0, shown.stderr
        stats = {(s["step"], s["compensation"]): s for s in map(orjson.loads, shown.stdout.splitlines())}
        assert (stats[("research", False)]["count"], stats[("research", False)]["failed"]) == (3, 0)
        assert (stats[("draft", False)]["count"], stats[("draft", False)]["failed"]) == (3, 1)
        assert stats[("draft", False)]["failure_rate"] == round(1 / 3, 4)
        assert stats[("research", True)]["count"] == 1
        assert stats[("research", False)]["p50_ms"] <= stats[("research", False)]["p95_ms"]

        table = choreo("ls", env=cli_env)
        assert table.returncode == 0, table.stderr
        line = next(x for x in table.stdout.splitlines() if x.startswith(failed))
        assert "compensated" in line
        assert "draft failed" in line
        assert table.stderr == "", "the indexer runs: the index is not behind"

        bad = choreo("ls", "--status", "bogus", env=cli_env)
        assert bad.returncode == 2
        assert bad.stderr.startswith("error: --status 'bogus': expected one of: running, "), bad.stderr
    finally:
        assert choreo("down", env=cli_env).returncode == 0
    # The stack is down: the rows are still there, read from the file alone.
    assert index_path(Path(cli_env["CHOREO_HOME"]), cli_env["CHOREO_NAMESPACE"]).is_file()
    assert {r["workflow_id"] for r in ls(cli_env)} == {first, failed, last}
