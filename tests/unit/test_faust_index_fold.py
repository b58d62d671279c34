"""The faust-streaming Table evaluation's pure parts (bench/faust_index.py): a Table value folds with the
index's own fold and survives JSON (the changelog's encoding) unchanged; the newest rows read as
`choreo ls --json`'s; the changelog's size read from faust's log. The worker itself runs only in
`python -m bench --only faust-index`, never in the tests."""

from __future__ import annotations

from typing import Any

import orjson

from bench.faust_index import _highwaters, fold_value, from_value, newest_rows, to_value
from choreograph.index import IndexedEvent, Summary, fold

GRAPH: dict[str, object] = {"steps": [{"name": "research", "depends_on": []},
                                      {"name": "analyze", "depends_on": ["research"]}]}


def _events(wid: str, at: int) -> list[IndexedEvent]:
    def e(kind: str, t: int, step: str | None = None, data: dict[str, object] | None = None,
          type: str = "report.X") -> IndexedEvent:
        return IndexedEvent(wid, "report", kind, type, step, t, data)

    return [e("goal", at), e("other", at + 1, data=GRAPH, type="choreograph.WorkflowStarted"),
            e("step_completed", at + 10, "research"),
            e("step_failed", at + 20, "analyze", {"step": "analyze", "reason": "boom"}),
            e("compensation_requested", at + 30, "research", {"step": "research", "failed_step": "analyze"}),
            e("compensation_completed", at + 40, "research"),
            e("outcome", at + 50, data={"status": "compensated", "failed_step": "analyze"})]


def test_a_table_value_folds_as_the_index_row_does_through_json_at_every_step() -> None:
    value: dict[str, Any] | None = None
    summary: Summary | None = None
    for event in _events("wf-1", 1000):
        value = orjson.loads(orjson.dumps(fold_value(value, event)))  # as the changelog stores it
        summary = fold(summary, event)
        assert from_value(value) == summary
    assert value is not None
    assert summary is not None
    assert (value["status"], value["failed_step"], value["events"]) == ("compensated", "analyze", 7)
    assert from_value(value).row(5000) == summary.row(5000)


def test_folding_a_value_leaves_the_value_read_unchanged() -> None:
    first, second = _events("wf-1", 1000)[:2]
    before = fold_value(None, first)
    kept = orjson.dumps(before)
    fold_value(before, second)
    assert orjson.dumps(before) == kept
    assert to_value(from_value(before)) == before


def test_newest_rows_are_ls_rows_newest_first_and_limited() -> None:
    values = []
    for i in range(5):
        value: dict[str, Any] | None = None
        for event in _events(f"wf-{i}", 1000 * i):
            value = fold_value(value, event)
        assert value is not None
        values.append(value)
    rows = newest_rows(values, 3, 10_000)
    assert [r["workflow_id"] for r in rows] == ["wf-4", "wf-3", "wf-2"]
    assert rows[0]["status"] == "compensated"
    assert rows[0]["duration_ms"] == 50


def test_the_changelogs_records_are_read_from_fausts_highwater_table() -> None:
    log = """[INFO] [^---Recovery]: Highwater for active changelog partitions:
+Highwater - Active----------------------------+-----------+-----------+
| topic                                        | partition | highwater |
+----------------------------------------------+-----------+-----------+
| bench-faust-index-2ad0b2-workflows-changelog | 0         | 206       |
| 〃                                           | 1         | 164       |
+----------------------------------------------+-----------+-----------+
+Reading Starts At - Active--------------------+-----------+--------+
| bench-faust-index-2ad0b2-workflows-changelog | 0         | -1     |
"""
    assert _highwaters(log) == 370
    assert _highwaters("no table here") is None
