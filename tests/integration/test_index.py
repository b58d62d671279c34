"""The workflow indexer on a real broker, the example services running in this process: stopped mid-way
and replaced, its rows end equal to each workflow's outcome and its step runs give each step's
counts (`step_stats`); a store of another log (offsets beyond the
end) is rebuilt (`choreo ls` on it: tests/e2e/test_ls.py)."""

from __future__ import annotations

from pathlib import Path

from helpers import eventually, example_services, serving

from choreograph import Client, Settings
from choreograph.index import Indexer, IndexStore, Skip, list_workflows, step_stats
from choreograph.timetravel import history

FAIL_AT = [None, "research", None, "review", None, "chart", None, None]


async def _caught_up(indexer: Indexer) -> bool:
    await indexer.step(timeout_ms=100)
    return await indexer.caught_up()


async def test_a_replaced_indexer_ends_with_every_workflows_outcome(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "index" / f"{settings.namespace}.sqlite"
    async with serving(*example_services(settings)), Client(settings) as client:
        first = Indexer(settings, path)
        await first.start()
        goals = [await client.publish("report", {"topic": f"ix{i}", "fail_at": f}) for i, f in enumerate(FAIL_AT)]
        # It folds while the sagas run, and is stopped before they are all done.
        await eventually(lambda: _folded(first), 30, "the first indexer to fold some events")
        await first.stop()
        outcomes = await client.wait_many(goals, 90)
    assert len(outcomes) == len(goals)
    truth = {w: o.status.value for w, o in outcomes.items()}
    assert set(truth.values()) == {"completed", "compensated"}
    second = Indexer(settings, path)
    await second.start()
    try:
        await eventually(lambda: _caught_up(second), 30, "the second indexer to reach the log's end")
    finally:
        await second.stop()
    assert not second.rebuilt
    assert first.folded > 0
    assert second.folded > 0
    rows = {r["workflow_id"]: r for r in list_workflows(path, limit=None).rows}
    assert {w: r["status"] for w, r in rows.items()} == truth
    # Every event counted once across the two indexers: as many as the workflow's history holds.
    for workflow_id, row in rows.items():
        assert row["events"] == len(await history(settings, workflow_id, to_end=True)), workflow_id
    failed = {w: r["failed_step"] for w, r in rows.items() if r["status"] == "compensated"}
    assert sorted(failed.values()) == ["chart", "research", "review"]
    # Each step's runs over the last hour (`choreo stats`): every workflow ran research, one failed it;
    # the six that reached review ran it once, one failed it; research was undone where a later step failed.
    stats = {(s.step, s.compensation): s for s in step_stats(path, 3600)}
    assert (stats[("research", False)].count, stats[("research", False)].failed) == (8, 1)
    assert (stats[("analyze", False)].count, stats[("analyze", False)].failed) == (7, 0)
    assert (stats[("chart", False)].count, stats[("chart", False)].failed) == (7, 1)
    assert (stats[("review", False)].count, stats[("review", False)].failed) == (6, 1)
    assert (stats[("research", True)].count, stats[("research", True)].failed) == (2, 0)
    assert stats[("review", False)].failure_rate == round(1 / 6, 4)
    assert all(s.p50_ms is not None and s.p95_ms is not None and 0 <= s.p50_ms <= s.p95_ms for s in stats.values())


async def _folded(indexer: Indexer) -> bool:
    await indexer.step(timeout_ms=100)
    return indexer.folded >= 10


async def test_a_store_of_another_log_is_rebuilt_from_the_start(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "ns.sqlite"
    async with serving(*example_services(settings)), Client(settings) as client:
        goal = await client.publish("report", {"topic": "one"})
        assert await client.wait(goal, 60) is not None
    # As a store of the log before a broker was replaced: offsets this log has not reached.
    store = IndexStore(path)
    store.fold_batch(settings.events_topic, [(p, 1_000_000, Skip.NOT_A_WORKFLOW) for p in range(settings.partitions)])
    store.close()
    indexer = Indexer(settings, path)
    await indexer.start()
    try:
        await eventually(lambda: _caught_up(indexer), 30, "the rebuilt index to reach the log's end")
    finally:
        await indexer.stop()
    assert indexer.rebuilt
    assert [(r["workflow_id"], r["status"]) for r in list_workflows(path).rows] == [(goal.workflow_id, "completed")]
    # As a store of a log that now holds more records than this one read: offsets within the end, but
    # another record at each last offset read (an archive restored into a cluster with more in it).
    store = IndexStore(path)
    store._db.execute("UPDATE offsets SET next_offset = 1, last_record = '0/another log'")
    store.close()
    again = Indexer(settings, path)
    await again.start()
    try:
        await eventually(lambda: _caught_up(again), 30, "the index rebuilt again to reach the log's end")
    finally:
        await again.stop()
    assert again.rebuilt
    assert [(r["workflow_id"], r["status"]) for r in list_workflows(path).rows] == [(goal.workflow_id, "completed")]
