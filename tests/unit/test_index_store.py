"""The workflow index (issue 14): the summary fold, what is folded (only believed, decodable events),
and the store (rows and offsets in one transaction, resumable, idempotent). The indexer runs here on
the memory log, over real sagas of the example workflow run by the saga kit; on a real broker:
tests/integration/test_index.py, and `choreo ls`: tests/e2e/test_ls.py."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import orjson
import pytest

from choreograph import OutcomeStatus
from choreograph.cli._main import main
from choreograph.events import Envelope, Kind
from choreograph.examples.report import analyze, chart, draft, research, review
from choreograph.examples.report._events import DraftCompleted
from choreograph.index import (
    COMPENSATING,
    RUNNING,
    IndexedEvent,
    Indexer,
    IndexStore,
    Skip,
    Summary,
    fold,
    index_path,
    indexed_event,
    list_workflows,
)
from choreograph.index._store import Indexed
from choreograph.runtime import PublishedGoal
from choreograph.security import Identity, Verifier
from choreograph.testing import SagaKit
from choreograph.transport import MemoryTransport, Record, TopicPartition, framework_store

REPORT = (research.agent, analyze.agent, chart.agent, draft.agent, review.agent)
GRAPH: dict[str, object] = {"steps": [
    {"name": "research", "depends_on": []}, {"name": "analyze", "depends_on": ["research"]},
    {"name": "chart", "depends_on": ["analyze"]}, {"name": "draft", "depends_on": ["analyze"]},
    {"name": "review", "depends_on": ["chart", "draft"]}]}


def event(kind: str, at: int, step: str | None = None, data: dict[str, object] | None = None,
          type: str = "report.Something") -> IndexedEvent:
    return IndexedEvent("wf-1", "report", kind, type, step, at, data)


def folded(*events: IndexedEvent) -> Summary:
    summary = None
    for e in events:
        summary = fold(summary, e)
    assert summary is not None
    return summary


STARTED = (event("goal", 1000), event("other", 1001, data=GRAPH, type="choreograph.WorkflowStarted"))


# the fold ----------------------------------------------------------------------------------------------


def test_a_goal_makes_a_running_row_waiting_for_its_first_step() -> None:
    s = folded(*STARTED)
    row = s.row(now_ms=5000)
    assert (row["status"], row["current_steps"], row["started_ms"], row["duration_ms"]) == (RUNNING, ["research"],
                                                                                            1000, 4000)
    assert row["started"] == "1970-01-01T00:00:01.000Z"


def test_a_result_logged_before_the_coordinators_start_still_has_a_duration() -> None:
    # An agent reacting to the goal can publish before the coordinator's WorkflowStarted (seen on a
    # loaded machine): the run's start is then its inputs' time, here the goal's, not unknown.
    s = folded(event("goal", 1000), event("step_completed", 1040, "research"),
               event("other", 1050, data=GRAPH, type="choreograph.WorkflowStarted"),
               event("step_completed", 1100, "analyze"))
    assert s.runs[("research", False)].duration_ms == 40
    assert s.runs[("analyze", False)].duration_ms == 60  # from research's result
    s = folded(*STARTED, event("step_completed", 1100, "research"), event("step_completed", 1180, "analyze"))
    s.runs.pop(("chart", False))  # as if chart's inputs came before this indexer's time
    s = fold(s, event("step_completed", 1250, "chart"))
    assert s.runs[("chart", False)].duration_ms == 70


def test_completions_move_the_current_steps_along_the_graph() -> None:
    s = folded(*STARTED, event("step_completed", 1100, "research"), event("step_completed", 1200, "analyze"))
    assert s.current_steps() == ["chart", "draft"]
    s = fold(s, event("step_completed", 1300, "draft"))
    assert s.current_steps() == ["chart"]
    assert (s.last_kind, s.last_event_ms, s.events) == ("step_completed", 1300, 5)


def test_a_failure_compensates_with_the_failed_step_then_the_outcome_says_compensated() -> None:
    s = folded(*STARTED, event("step_completed", 1100, "research"),
               event("step_failed", 1200, "analyze", {"step": "analyze", "reason": "boom", "error_type": "E"}))
    assert (s.status, s.failed_step, s.reason) == (COMPENSATING, "analyze", "boom")
    s = fold(s, event("compensation_requested", 1300, "research",
                      {"step": "research", "failed_step": "analyze", "reason": "boom"}))
    assert s.current_steps() == ["↺research"]
    s = fold(s, event("compensation_completed", 1400, "research"))
    s = fold(s, event("outcome", 1500, data={"status": "compensated", "failed_step": "analyze", "reason": "boom"}))
    row = s.row(now_ms=99_999)
    assert (row["status"], row["failed_step"], row["reason"], row["current_steps"], row["duration_ms"]) == (
        "compensated", "analyze", "boom", [], 500)
    runs = {(r.step, r.compensation): (r.status, r.started_ms, r.finished_ms) for r in s.runs.values()}
    assert runs[("analyze", False)] == ("failed", 1100, 1200)
    assert runs[("research", True)] == ("compensated", 1300, 1400)


@pytest.mark.parametrize("status", ["completed", "failed", "timed_out", "cancelled", "a_status_added_later"])
def test_the_outcome_status_is_the_outcome_events_own_string(status: str) -> None:
    assert folded(*STARTED, event("outcome", 2000, data={"status": status})).status == status


def test_a_step_that_timed_out_with_no_attempt_left_is_the_failed_step() -> None:
    retrying = folded(*STARTED, event("step_timed_out", 1100, "research", {"step": "research",
                                                                           "next_attempt_at": 5000}))
    assert retrying.status == RUNNING
    s = fold(retrying, event("step_timed_out", 1200, "research", {"step": "research", "next_attempt_at": None}))
    assert (s.status, s.failed_step) == (COMPENSATING, "research")


# what is folded: real records of real sagas --------------------------------------------------------------


def _events(kit: SagaKit) -> list[Record]:
    return [r for p in range(kit.settings.partitions)
            for r in kit.log.records(TopicPartition(kit.settings.events_topic, p))]


def _rows(records: list[Record], verifier: Verifier | None) -> tuple[dict[str, Summary], dict[Skip, int]]:
    store = framework_store()
    rows: dict[str, Summary] = {}
    skipped: dict[Skip, int] = {}
    for r in records:
        e = indexed_event(r.key, r.value, r.headers, r.timestamp, store, verifier)
        if isinstance(e, Skip):
            skipped[e] = skipped.get(e, 0) + 1
        else:
            rows[e.workflow_id] = fold(rows.get(e.workflow_id), e)
    return rows, skipped


async def _sagas(kit: SagaKit) -> tuple[PublishedGoal, PublishedGoal]:
    happy = await kit.given_goal("report", {"topic": "happy"})
    failing = await kit.given_goal("report", {"topic": "sad", "fail_at": "review"})
    await kit.expect_outcome(happy, OutcomeStatus.COMPLETED)
    await kit.expect_outcome(failing, OutcomeStatus.COMPENSATED)
    return happy, failing


async def test_real_sagas_fold_to_their_outcomes_and_forged_records_change_nothing() -> None:
    async with SagaKit(*REPORT) as kit:
        happy, failing = await _sagas(kit)
        verifier = kit.trust(Identity.parse("publisher:testing")).verifier
        before, _ = _rows(_events(kit), verifier)
        assert before[happy.workflow_id].status == "completed"
        # The graph came from the coordinator's WorkflowStarted: every step ran, with its times.
        runs = before[happy.workflow_id].runs.values()
        assert {r.step for r in runs if r.status == "completed"} == {"research", "analyze", "chart", "draft", "review"}
        assert all(r.started_ms is not None and r.finished_ms is not None and r.started_ms <= r.finished_ms
                   for r in runs)
        assert (before[failing.workflow_id].status, before[failing.workflow_id].failed_step) == ("compensated",
                                                                                                 "review")
        assert before[failing.workflow_id].workflow == "report"
        # A forged outcome of the happy one (unsigned) and a draft result signed by research's real key.
        forged = Envelope.new(type="choreograph.WorkflowOutcome", source="choreo://coordinator", workflow="report",
                              workflow_id=happy.workflow_id, kind=Kind.OUTCOME)
        await kit.given_event(failing, DraftCompleted(topic="sad", text="forged"), step="draft",
                              signed_as=Identity.agent("report", "research"))
        producer = MemoryTransport(kit.log, kit.settings).producer()
        await producer.start()
        await producer.send_and_wait(kit.settings.events_topic, value=b"\xc3\x01garbage", key=forged.key,
                                     headers=forged.headers(), partition=happy.partition)
        await producer.send_and_wait(kit.settings.events_topic, value=b"no headers", key=b"x", partition=0)
        await producer.stop()
        after, skipped = _rows(_events(kit), verifier)
        assert {k: v.status for k, v in after.items()} == {k: v.status for k, v in before.items()}
        assert after[failing.workflow_id].events == before[failing.workflow_id].events
        assert skipped == {Skip.REFUSED: 2, Skip.NOT_AN_EVENT: 1, Skip.NOT_A_WORKFLOW: 10}  # 5 contracts x 2
        # Unverified (CHOREO_VERIFY=off), the garbage outcome is read, cannot be decoded, and is skipped.
        _, unverified = _rows(_events(kit), None)
        assert unverified[Skip.UNDECODABLE] == 1


# the store ----------------------------------------------------------------------------------------------


def _batch() -> list[Indexed]:
    return [(0, 0, STARTED[0]), (0, 1, STARTED[1]), (1, 0, Skip.NOT_AN_EVENT),
            (0, 2, event("step_completed", 1100, "research"))]


def test_rows_and_offsets_are_committed_together_and_a_batch_replayed_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "index" / "ns.sqlite"
    store = IndexStore(path)
    assert store.fold_batch("ns.events", _batch()) == 3
    assert store.offsets("ns.events") == {0: 3, 1: 1}
    assert store.fold_batch("ns.events", _batch()) == 0  # read again after a crash: passed over
    store.close()
    store = IndexStore(path)  # a new process resumes from the file
    assert store.offsets("ns.events") == {0: 3, 1: 1}
    (row,) = list_workflows(path).rows
    assert (row["events"], row["current_steps"], row["status"]) == (3, ["analyze"], "running")
    assert store.meta()["skipped_not_an_event"] == "1"
    store.close()


def test_a_batch_that_fails_midway_leaves_neither_rows_nor_offsets(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ns.sqlite"
    store = IndexStore(path)
    store.fold_batch("ns.events", _batch()[:2])
    real = store._db

    class Failing:
        """The connection, failing at the offsets' statement: as a kill between rows and offsets."""

        def executemany(self, sql: str, rows: object) -> object:
            if "offsets" in sql:
                raise sqlite3.OperationalError("disk I/O error")
            return real.executemany(sql, rows)  # type: ignore[arg-type]

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    monkeypatch.setattr(store, "_db", Failing())
    with pytest.raises(sqlite3.OperationalError):
        store.fold_batch("ns.events", _batch())
    monkeypatch.setattr(store, "_db", real)
    assert store.offsets("ns.events") == {0: 2}
    (row,) = list_workflows(path).rows
    assert (row["events"], row["current_steps"]) == (2, ["research"])
    store.close()


def test_listing_filters_by_status_workflow_and_time_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "ns.sqlite"
    store = IndexStore(path)
    batch: list[Indexed] = []
    for i in range(6):
        wid = f"wf-{i}"
        batch.append((0, len(batch), IndexedEvent(wid, "report" if i % 2 else "other", "goal", "g", None, 1000 * i)))
        if i < 3:
            batch.append((0, len(batch), IndexedEvent(wid, "report", "outcome", "o", None, 1000 * i + 5,
                                                      {"status": "completed"})))
    store.fold_batch("ns.events", batch)
    store.close()
    ids = [r["workflow_id"] for r in list_workflows(path, limit=None).rows]
    assert ids == ["wf-5", "wf-4", "wf-3", "wf-2", "wf-1", "wf-0"]
    assert [r["workflow_id"] for r in list_workflows(path, status="completed").rows] == ["wf-2", "wf-1", "wf-0"]
    assert [r["workflow_id"] for r in list_workflows(path, workflow="report", since_ms=2000).rows] == ["wf-5", "wf-3"]
    assert [r["workflow_id"] for r in list_workflows(path, limit=1).rows] == ["wf-5"]


# the indexer on the memory log ----------------------------------------------------------------------------


async def _index(kit: SagaKit, path: Path, verifier: Verifier | None) -> Indexer:
    indexer = Indexer(kit.settings, path, transport=MemoryTransport(kit.log, kit.settings), verifier=verifier)
    await indexer.start()
    for _ in range(100):
        await indexer.step(timeout_ms=10)
        if await indexer.caught_up():
            break
    return indexer


async def test_the_indexer_resumes_from_its_file_and_rebuilds_for_another_log(tmp_path: Path) -> None:
    path = tmp_path / "kit.sqlite"
    async with SagaKit(*REPORT) as kit:
        verifier = kit.trust(Identity.parse("publisher:testing")).verifier
        happy, failing = await _sagas(kit)
        first = await _index(kit, path, verifier)
        await first.stop()
        third = await kit.given_goal("report", {"topic": "later"})
        await kit.expect_outcome(third, OutcomeStatus.COMPLETED)
        second = await _index(kit, path, verifier)
        await second.stop()
        assert not second.rebuilt
        assert second.folded == len([r for r in _events(kit) if r.key == third.workflow_id.encode()])
        statuses = {r["workflow_id"]: r["status"] for r in list_workflows(path).rows}
        assert statuses == {happy.workflow_id: "completed", failing.workflow_id: "compensated",
                            third.workflow_id: "completed"}
        # Offsets within the log, but another record at the last one read: another log. Rebuilt.
        store = IndexStore(path)
        assert all(store.last_records(kit.settings.events_topic).values())
        store._db.execute("UPDATE offsets SET last_record = '0/another'")
        store.close()
        other = await _index(kit, path, verifier)
        await other.stop()
        assert other.rebuilt
        assert {r["workflow_id"]: r["status"] for r in list_workflows(path).rows} == statuses
        # Offsets beyond the log's end: another log (a fresh broker, a restored archive). Rebuilt.
        store = IndexStore(path)
        store.fold_batch(kit.settings.events_topic, [(0, 10_000_000, Skip.NOT_A_WORKFLOW)])
        store.close()
        rebuilt = await _index(kit, path, verifier)
        await rebuilt.stop()
        assert rebuilt.rebuilt
        assert {r["workflow_id"]: r["status"] for r in list_workflows(path).rows} == statuses


# `choreo ls` over a file, in process through the real entry point ------------------------------------------


def choreo_ls(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
              ) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["choreo", "ls", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), out, err


def test_ls_without_an_index_with_a_bad_status_and_with_no_indexer_running(
        own_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no project file here: the namespace is the default one
    code, out, err = choreo_ls([], capsys, monkeypatch)
    path = index_path(own_home.resolve(), "choreo")
    assert (code, out) == (1, "")
    assert err == f"error: no workflow index here ({path}); `choreo up` runs one (or `choreo index run`)\n"
    store = IndexStore(path)
    store.fold_batch("choreo.events", _batch())
    store._db.execute("UPDATE meta SET value = '0' WHERE key = 'updated_ms'")  # last written long ago
    store.close()
    code, out, err = choreo_ls([], capsys, monkeypatch)
    assert code == 0
    assert out.splitlines()[1].split()[:3] == ["wf-1", "report", "running"]
    assert out.splitlines()[1].endswith("analyze")
    assert err.startswith("warning: the indexer is not running (last update "), err
    assert "the index may be behind the log" in err
    code, out, err = choreo_ls(["--status", "bogus"], capsys, monkeypatch)
    assert (code, out) == (2, "")
    assert err.startswith("error: --status 'bogus': expected one of: running, compensating, completed")
    code, out, _ = choreo_ls(["--status", "running", "--json"], capsys, monkeypatch)
    assert [orjson.loads(line)["workflow_id"] for line in out.splitlines()] == ["wf-1"]
