"""The workflow index as a faust-streaming Table next to choreograph's SQLite projection, on one log.

`python -m bench --only faust-index`: 5,000 signed workflows written as bench/index.py writes them
(half completed, half compensated), then
1. catch-up: our indexer (in process, as bench/index.py) and a faust worker (bench/_faust_index_app.py:
   a Table keyed by workflow id, memory store, changelog topic) each fold the whole log with the same
   fold and the same signature checks: events/s, CPU s per 1,000 events;
2. lag: both running (`choreo index run` and the faust worker), a burst of more workflows is produced;
   the time from its last record acknowledged to each index holding all of it (polled every 50 ms);
3. recovery: both killed (SIGKILL) and started again: the time until each holds every row again, and
   whether the rows are right (statuses and events per workflow, against the SQLite rows);
4. a query of the newest 50 rows: faust's web view vs `list_workflows`, and `step_stats` (issue 14's
   per-step statistics) over the 5,000 workflows.
Every wait is bounded; a step that fails records its error and the worker's log tail, not a hang.
Prints figures; asserts nothing. The pure parts (fold_value, newest_rows) are unit-tested.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from choreograph import Settings
from choreograph.index import IndexedEvent, Indexer, StepRun, Summary, fold, index_path, list_workflows, step_stats
from choreograph.transport import Kafka, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.05
RESTORE_TIMEOUT_S = 60.0


# the fold a faust Table value goes through (pure) -------------------------------------------------------


def to_value(s: Summary) -> dict[str, Any]:
    """A summary as a JSON-able Table value (runs as lists: their dict's keys are tuples)."""
    value = {f.name: getattr(s, f.name) for f in fields(Summary) if f.name != "runs"}
    value["runs"] = [[r.step, r.compensation, r.status, r.started_ms, r.finished_ms] for r in s.runs.values()]
    return value


def from_value(value: dict[str, Any]) -> Summary:
    """The summary a Table value holds (see to_value)."""
    runs = {(r[0], bool(r[1])): StepRun(r[0], bool(r[1]), r[2], r[3], r[4]) for r in value["runs"]}
    graph = {step: list(deps) for step, deps in value["graph"].items()}
    return Summary(**{**value, "graph": graph, "completed": list(value["completed"]),
                      "compensations": list(value["compensations"]), "runs": runs})


def fold_value(value: dict[str, Any] | None, event: IndexedEvent) -> dict[str, Any]:
    """The Table value after one more believed event: the index's own fold (index.fold), so both hold the same."""
    return to_value(fold(None if value is None else from_value(value), event))


def newest_rows(values: Iterable[dict[str, Any]], limit: int, now_ms: int) -> list[dict[str, Any]]:
    """`choreo ls --json`'s rows of the newest `limit` Table values (by start, then id, descending)."""
    newest = sorted(values, key=lambda v: (v["started_ms"], v["workflow_id"]), reverse=True)[:limit]
    return [from_value(v).row(now_ms) for v in newest]


# the run ------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:  # a loopback URL built here
        return orjson.loads(answer.read())


def _until(what: str, check: Callable[[], Any], timeout_s: float, process: subprocess.Popen[bytes] | None = None
           ) -> tuple[float, Any]:
    """Poll check() until it returns something truthy; (seconds, its value). TimeoutError names what."""
    began = time.perf_counter()
    while True:
        try:
            value = check()
        except OSError:  # the web view is not up yet, or restarting
            value = None
        if value:
            return time.perf_counter() - began, value
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        if time.perf_counter() - began > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(POLL_S)


class _Faust:
    """The faust worker process: start, poll its pages, kill."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.env = {**os.environ, **settings.env(), "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT))),
                    "FAUST_INDEX_APP": f"bench-faust-index-{uuid.uuid4().hex[:6]}",
                    "FAUST_INDEX_TOPIC": settings.events_topic, "FAUST_INDEX_PARTITIONS": str(settings.partitions),
                    "FAUST_INDEX_PORT": str(self.port), "FAUST_INDEX_DATADIR": str(workdir / "faust-data"),
                    "FAUST_INDEX_FETCH_WAIT_MS": str(settings.broker.fetch_max_wait_ms),
                    "FAUST_INDEX_SESSION_MS": str(settings.broker.session_timeout_ms)}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "faust.log"
        self.starts = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        self.log = self.workdir / f"faust.{self.starts}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "bench._faust_index_app", "worker", "-l", "info"],
                                            cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self.process

    def count(self) -> dict[str, Any]:
        answer: dict[str, Any] = _get(f"http://127.0.0.1:{self.port}/index/count")
        return answer

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def tail(self, lines: int = 12) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line[:300] for line in text.splitlines()[-lines:]]


def _index_process(settings: Settings, ready: Path) -> subprocess.Popen[bytes]:
    ready.unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, "-m", "choreograph", "index", "run"], cwd=ROOT,
                            env={**os.environ, **settings.env(), "CHOREO_READY_FILE": str(ready)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _truth(path: Path) -> dict[str, tuple[str, int]]:
    return {r["workflow_id"]: (r["status"], r["events"]) for r in list_workflows(path, limit=None).rows}


def _p50_ms(call: Callable[[], object], runs: int = 20, clock: Callable[[], float] = time.perf_counter) -> float:
    took = []
    for _ in range(runs):
        began = clock()
        call()
        took.append((clock() - began) * 1000)
    return round(statistics.median(took), 2)


# An index holds a workflow once its outcome is folded: the outcome is its last record, on its partition
# (keyed by workflow id), so every record of it before was read. Not an event count: the log's policy
# refuses some records (a research agent may not say an `other` event), as both indexes do.
FINAL = frozenset(("completed", "compensated"))


def _sqlite_holds(path: Path, rows: int) -> Callable[[], bool]:
    def check() -> bool:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            held = db.execute("SELECT count(*) FROM workflows WHERE status IN ('completed', 'compensated')").fetchone()
        finally:
            db.close()
        return bool(held[0] == rows)
    return check


def _lags(path: Path, faust: _Faust, rows: int, acked: float, process: subprocess.Popen[bytes],
          indexer: subprocess.Popen[bytes], timeout_s: float = 60) -> dict[str, float]:
    """Seconds from the burst's last record acknowledged (`acked`, wall clock) to each index holding it all."""
    sqlite_holds, faust_holds = _sqlite_holds(path, rows), _faust_holds(faust, rows)
    lags: dict[str, float] = {}
    last_fold_at = 0.0
    while len(lags) < 2:
        if "sqlite_s" not in lags and sqlite_holds():
            lags["sqlite_s"] = round(time.time() - acked, 2)
        if "faust_s" not in lags and (count := faust_holds()):
            lags["faust_s"] = round(time.time() - acked, 2)
            last_fold_at = count["last_fold_at"]
        for what, p in (("faust", process), ("choreo index run", indexer)):
            if p.poll() is not None:
                raise RuntimeError(f"lag: {what} exited with {p.returncode}")
        if time.time() - acked > timeout_s:
            raise TimeoutError(f"lag: not caught up within {timeout_s:.0f} s ({lags})")
        time.sleep(POLL_S)
    return {**lags, "faust_last_fold_s": round(last_fold_at - acked, 2)}


def _faust_holds(faust: _Faust, rows: int) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        count = faust.count()
        return count if count["rows"] == rows and set(count["statuses"]) <= FINAL else None
    return check


def run(settings: Settings, workdir: Path, workflows: int = 5000, burst: int = 250) -> dict[str, Any]:
    from . import index as sqlite_bench  # the same log, written as bench/index.py writes it

    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"workflows": workflows, "burst_workflows": burst, "load_before": os.getloadavg()[0]}
    began = time.perf_counter()
    events = asyncio.run(asyncio.wait_for(sqlite_bench.build(settings, workflows), 120))
    out |= {"events": events, "build_s": round(time.perf_counter() - began, 1)}
    path = index_path(Path(os.environ.get("CHOREO_HOME") or workdir), settings.namespace)
    out["sqlite"] = asyncio.run(asyncio.wait_for(_sqlite_catch_up(settings, path, events), 120))
    out["sqlite"]["ls_limit50_query_ms"] = _p50_ms(lambda: list_workflows(path, limit=50))
    out["sqlite"]["step_stats_query_ms"] = _p50_ms(lambda: step_stats(path, 3600))
    out["sqlite"]["step_stats_query_cpu_ms"] = _p50_ms(lambda: step_stats(path, 3600), clock=time.process_time)
    out["sqlite"]["step_runs"] = sum(s.count for s in step_stats(path, 3600))
    folded = sum(e for _, e in _truth(path).values())
    out["folded_events"] = folded  # believed: the policy refuses some records of the log, as the services do
    faust = _Faust(settings, workdir)
    indexer: subprocess.Popen[bytes] | None = None
    stage = "faust start"
    try:
        process = faust.start()
        started_s, _ = _until(stage, faust.count, 60, process)
        stage = "faust catch-up"
        first_s, first = _until(stage, lambda: (c := faust.count())["folded"] > 0 and c, 60, process)
        cpu_first = _cpu_s(process.pid)
        caught_s, count = _until(stage, _faust_holds(faust, workflows), 120, process)
        cpu = _cpu_s(process.pid) - cpu_first
        read = count["records"] - first["records"]  # records read (and checked) after the first poll saw some
        out["faust"] = {"web_up_s": round(started_s, 2), "first_fold_s": round(started_s + first_s, 2),
                        "fold_s": round(caught_s, 2), "records_per_s": round(read / caught_s),
                        "cpu_s_per_1k_records": round(cpu / read * 1000, 3),
                        "events_folded_vs_sqlite": count["events"] - folded}
        stage = "faust query"
        url = f"http://127.0.0.1:{faust.port}/index/rows?limit=50"
        assert len(_get(url)) == min(50, workflows)
        out["faust"]["rows_limit50_query_ms"] = _p50_ms(lambda: _get(url))
        stage = "lag"
        indexer = _index_process(settings, workdir / "index.ready")
        _until("choreo index run ready", (workdir / "index.ready").exists, 60, indexer)
        burst_events = asyncio.run(asyncio.wait_for(sqlite_bench.build(settings, burst), 60))
        acked = time.time()
        out["lag"] = {"burst_events": burst_events, **_lags(path, faust, workflows + burst, acked, process, indexer)}
        stage = "recovery"
        truth = _truth(path)
        out["recovery"] = _recover(settings, path, workdir, faust, indexer, truth)
    except (TimeoutError, RuntimeError, AssertionError, OSError, KeyError) as exc:
        out["failed"] = {"stage": stage, "error": f"{type(exc).__name__}: {exc}", "faust_log_tail": faust.tail()}
    finally:
        faust.kill()
        if indexer is not None and indexer.poll() is None:
            indexer.kill()
            indexer.wait(timeout=10)
    out["load_after"] = os.getloadavg()[0]
    return out


async def _sqlite_catch_up(settings: Settings, path: Path, records: int) -> dict[str, Any]:
    """Our indexer, in this process, from the log's start: joining, then folding (timed apart, as faust's)."""
    began = time.perf_counter()
    indexer = Indexer(settings, path)
    await indexer.start()
    joined = time.perf_counter()
    cpu = time.process_time()
    try:
        while not (await indexer.step(timeout_ms=100) == 0 and await indexer.caught_up()):
            pass
    finally:
        fold_s, cpu = time.perf_counter() - joined, time.process_time() - cpu
        await indexer.stop()
    return {"join_s": round(joined - began, 2), "fold_s": round(fold_s, 2), "records_per_s": round(records / fold_s),
            "cpu_s_per_1k_records": round(cpu / records * 1000, 3)}


async def _read_from_start(settings: Settings, topic: str, timeout_s: float) -> dict[str, Any]:
    """Read a topic's partitions from their start with a plain group-less consumer: records, batches, seconds."""
    kafka = Kafka(settings)
    partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
    ends = await kafka.end_offsets(partitions)
    read = fetches = 0
    began = time.perf_counter()
    async with kafka.reader(partitions) as reader:
        for tp in partitions:
            await reader.seek_to_beginning(tp)
        while read < sum(ends.values()) and time.perf_counter() - began < timeout_s:
            batch = await reader.getmany(*partitions, timeout_ms=500)
            fetches += 1
            read += sum(len(records) for records in batch.values())
    took = time.perf_counter() - began
    return {"records": read, "of": sum(ends.values()), "getmany_calls": fetches, "seconds": round(took, 1),
            "records_per_s": round(read / took)}


def _highwaters(log: str) -> int | None:
    """The changelog's records at a restart, as faust's log prints them ("Highwater - Active" table)."""
    if "Highwater - Active" not in log:
        return None
    block = log.split("Highwater - Active", 1)[1].split("\n+-", 2)[1]  # the rows, between the rules
    return sum(int(m[1]) for m in re.finditer(r"\|\s*\d+\s*\|\s*(\d+)\s*\|", block))


def _recover(settings: Settings, path: Path, workdir: Path, faust: _Faust, indexer: subprocess.Popen[bytes],
             truth: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """Kill both, start both: seconds until each holds every row again, and whether they are right."""
    faust.kill()
    indexer.kill()
    indexer.wait(timeout=10)
    restarted = _index_process(settings, workdir / "index.ready")
    try:
        sqlite_s, _ = _until("sqlite restart", (workdir / "index.ready").exists, 60, restarted)
        sqlite_right = _truth(path) == truth
    finally:
        restarted.kill()
        restarted.wait(timeout=10)
    process = faust.start()
    up_s, _ = _until("faust restart", faust.count, 60, process)
    try:
        restored_s, _ = _until("faust restore", _faust_holds(faust, len(truth)), RESTORE_TIMEOUT_S, process)
    except TimeoutError:  # what it held by then, and what faust's log says, are the evidence
        text = faust.log.read_text(errors="replace")
        stalled = [line for line in text.splitlines() if "No event received" in line]
        held = faust.count()["rows"]
        faust.kill()  # then the changelog read alone, by a plain consumer: is it faust, or the broker?
        topic = f"{faust.env['FAUST_INDEX_APP']}-workflows-changelog"
        return {"sqlite_ready_s": round(sqlite_s, 2), "sqlite_rows_right": sqlite_right,
                "faust_web_up_s": round(up_s, 2), "faust_restored_s": None,
                "faust_restore_timeout_s": RESTORE_TIMEOUT_S, "faust_rows_at_timeout": held,
                "faust_rows_expected": len(truth), "faust_changelog_records": _highwaters(text),
                "faust_stall_warnings": len(stalled),
                "faust_first_stall_warning": stalled[0][:300] if stalled else None,
                "changelog_read_by_aiokafka": asyncio.run(_read_from_start(settings, topic, 40.0))}
    # Records past the last committed offset are read again after a kill: wait for the count to settle.
    settled = time.perf_counter()
    last = faust.count()["events"]
    while time.perf_counter() - settled < 5:
        time.sleep(0.5)
        now = faust.count()["events"]
        if now != last:
            last, settled = now, time.perf_counter()
    changelog = _highwaters(faust.log.read_text(errors="replace"))
    shown = {k: tuple(v) for k, v in _get(f"http://127.0.0.1:{faust.port}/index/all").items()}
    wrong_status = sum(1 for k, (s, _) in truth.items() if shown.get(k, ("missing", 0))[0] != s)
    refolded = sum(max(0, shown.get(k, ("", e))[1] - e) for k, (_, e) in truth.items())
    return {"sqlite_ready_s": round(sqlite_s, 2), "sqlite_rows_right": sqlite_right,
            "faust_web_up_s": round(up_s, 2), "faust_restored_s": round(up_s + restored_s, 2),
            "faust_changelog_records": changelog, "faust_rows": len(shown), "faust_wrong_status": wrong_status,
            "faust_refolded_events": refolded, "faust_statuses": dict(Counter(s for s, _ in shown.values()))}
