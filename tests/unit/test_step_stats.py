"""Per-step statistics over a window (issue 14, `choreo stats`): the step runs the index stores with
their durations, in the same transaction as the rows; the windowed query (count, failures, p50/p95);
the schema version (a file of another version is dropped and rebuilt); the command over a file."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import orjson
import pytest

from choreograph.cli._main import main
from choreograph.index import SCHEMA_VERSION, IndexedEvent, IndexStore, StepStats, index_path, step_stats
from choreograph.index._stats import percentile
from choreograph.index._store import Indexed

BASE = 1_000_000
NOW = BASE + 100_000
GRAPH: dict[str, object] = {"steps": [{"name": "research", "depends_on": []},
                                      {"name": "analyze", "depends_on": ["research"]}]}
FAILING = (3, 7)


def _workflow(i: int) -> list[IndexedEvent]:
    """Workflow i starts at BASE + 10 s * i; research takes 100 ms * (i + 1), analyze 50 ms; 3 and 7 fail at analyze
    and compensate research in 30 ms."""
    wid, at = f"wf-{i}", BASE + 10_000 * i

    def e(kind: str, t: int, step: str | None = None, data: dict[str, object] | None = None,
          type: str = "report.X") -> IndexedEvent:
        return IndexedEvent(wid, "report", kind, type, step, t, data)

    research = at + 100 * (i + 1)
    events = [e("goal", at), e("other", at, data=GRAPH, type="choreograph.WorkflowStarted"),
              e("step_completed", research, "research")]
    if i in FAILING:
        return [*events, e("step_failed", research + 50, "analyze", {"step": "analyze", "reason": "boom"}),
                e("compensation_requested", research + 60, "research", {"step": "research", "failed_step": "analyze"}),
                e("compensation_completed", research + 90, "research"),
                e("outcome", research + 100, data={"status": "compensated"})]
    return [*events, e("step_completed", research + 50, "analyze"), e("outcome", research + 60,
                                                                       data={"status": "completed"})]


def _index(path: Path, workflows: int = 10) -> None:
    store = IndexStore(path)
    batch: list[Indexed] = []
    for i in range(workflows):
        batch += [(0, len(batch), e) for e in _workflow(i)]
    store.fold_batch("ns.events", batch)
    store.close()


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 21))
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 1.0)) == (10, 19, 20)
    assert percentile([7], 0.95) == 7
    assert percentile([], 0.5) is None


def test_each_step_run_is_stored_with_its_outcome_and_duration_in_the_batchs_transaction(tmp_path: Path) -> None:
    path = tmp_path / "ns.sqlite"
    _index(path, workflows=4)
    db = sqlite3.connect(path)
    rows = db.execute("SELECT workflow_id, step, compensation, status, started_ms, finished_ms, duration_ms "
                      "FROM steps WHERE workflow_id = 'wf-3' ORDER BY started_ms, compensation").fetchall()
    db.close()
    at = BASE + 30_000
    assert rows == [("wf-3", "research", 0, "completed", at, at + 400, 400),
                    ("wf-3", "analyze", 0, "failed", at + 400, at + 450, 50),
                    ("wf-3", "research", 1, "compensated", at + 460, at + 490, 30)]


def test_stats_count_failures_and_percentiles_per_step_over_the_window(tmp_path: Path) -> None:
    path = tmp_path / "ns.sqlite"
    _index(path)
    assert step_stats(path, 200, NOW) == [
        StepStats("report", "research", False, 10, 0, 0.0, 500, 1000),
        StepStats("report", "analyze", False, 10, 2, 0.2, 50, 50),
        StepStats("report", "research", True, 2, 0, 0.0, 30, 30)]
    # The last 35 s: the runs that ended after BASE + 65 s, those of workflows 7, 8 and 9.
    recent = step_stats(path, 35, NOW)
    assert [(s.step, s.compensation, s.count, s.failed, s.p50_ms, s.p95_ms) for s in recent] == [
        ("research", False, 3, 0, 900, 1000), ("analyze", False, 3, 1, 50, 50), ("research", True, 1, 0, 30, 30)]
    assert recent[1].failure_rate == pytest.approx(1 / 3, abs=1e-4)
    assert step_stats(path, 200, NOW, workflow="other") == []
    assert step_stats(path, 200, BASE - 1) == []  # nothing ended yet then
    assert step_stats(path, 200, NOW)[0].as_dict() == {
        "workflow": "report", "step": "research", "compensation": False, "count": 10, "failed": 0,
        "failure_rate": 0.0, "p50_ms": 500, "p95_ms": 1000}


def test_a_file_of_another_schema_version_is_dropped_and_read_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "ns.sqlite"
    old = sqlite3.connect(path)  # as the index before step durations: no version, a `steps` table without them
    old.executescript("CREATE TABLE workflows (workflow_id TEXT PRIMARY KEY, status TEXT);"
                      "CREATE TABLE steps (workflow_id TEXT, step TEXT, status TEXT);"
                      "CREATE TABLE offsets (topic TEXT, partition INTEGER, next_offset INTEGER, last_record TEXT);"
                      "INSERT INTO offsets VALUES ('ns.events', 0, 70, NULL); INSERT INTO workflows VALUES ('w', 'x');")
    old.close()
    with pytest.raises(sqlite3.DatabaseError, match=r"schema version 0, not 2: the indexer rebuilds it"):
        step_stats(path, 60, NOW)
    store = IndexStore(path)
    assert store.migrated
    assert store.offsets("ns.events") == {}  # so the indexer reads the log from its start
    assert "rebuilt_ms" in store.meta()
    store.close()
    again = IndexStore(path)
    assert not again.migrated  # this version's file is kept
    again.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert step_stats(path, 60, NOW) == []


def choreo_stats(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
                 ) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["choreo", "stats", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), out, err


def test_the_stats_command_prints_a_table_or_json_per_step(own_home: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no project file here: the namespace is the default one
    code, out, err = choreo_stats([], capsys, monkeypatch)
    path = index_path(own_home.resolve(), "choreo")
    assert (code, out) == (1, "")
    assert err == f"error: no workflow index here ({path}); `choreo up` runs one (or `choreo index run`)\n"
    _index(path)  # ended long ago (1970): nothing in any recent window
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '0' WHERE key = 'updated_ms'")  # last written long ago: no indexer
    db.commit()
    db.close()
    code, out, err = choreo_stats(["--window", "10m"], capsys, monkeypatch)
    assert (code, out) == (0, "no step ended in the last 10m\n")
    assert err.startswith("warning: the indexer is not running")
    code, out, _ = choreo_stats(["--window", "100000d", "--json"], capsys, monkeypatch)
    assert [(r["step"], r["compensation"], r["count"], r["failed"]) for r in map(orjson.loads, out.splitlines())] == [
        ("research", False, 10, 0), ("analyze", False, 10, 2), ("research", True, 2, 0)]
    code, out, _ = choreo_stats(["--window", "100000d", "--workflow", "report"], capsys, monkeypatch)
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["workflow", "step", "runs", "failed", "failure", "rate", "p50", "p95"]
    assert lines[1:] == [["report", "research", "10", "0", "0.0%", "500", "ms", "1.0", "s"],
                         ["report", "analyze", "10", "2", "20.0%", "50", "ms", "50", "ms"],
                         ["report", "↺research", "2", "0", "0.0%", "30", "ms", "30", "ms"]]
    code, out, err = choreo_stats(["--window", "soon"], capsys, monkeypatch)
    assert (code, out) == (2, "")
    assert err.startswith("error: --window 'soon': expected a duration such as 30s, 10m or 1h30m")
