"""The archive end to end: `choreo archive` of a running demo, restore into a fresh broker with services
running, and a restored open saga across coordinator restarts (segment files: tests/unit/test_archive_segments.py)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
from helpers import ROOT, Stack, choreo, clean_env, coordinator_spec, eventually, sign, signing

from choreograph import Envelope, Kind, history
from choreograph.events import AvroSchema, StoredRecord, new_workflow_id
from choreograph.runtime import load_agent
from choreograph.timetravel import Archive, restore, write_segment
from choreograph.transport import Kafka, announce


def without_offsets(lines: list[dict[str, object]], *also: str) -> list[dict[str, object]]:
    return [{k: v for k, v in line.items() if k != "offset" and k not in also} for line in lines]


def histories(env: dict[str, str], workflow_ids: list[str], *extra: str) -> dict[str, list[dict[str, object]]]:
    found = {}
    for workflow_id in workflow_ids:
        result = choreo("history", workflow_id, "--json", "--to-end", *extra, env=env)
        assert result.returncode == 0, result.stderr
        found[workflow_id] = [orjson.loads(line) for line in result.stdout.splitlines()]
    return found


def events_by_source(env: dict[str, str]) -> Counter[str]:
    """How many records each source has in the events topic (read with the library, in a child)."""
    script = ("import asyncio, collections, orjson\n"
              "from aiokafka import TopicPartition\n"
              "from choreograph import Settings\nfrom choreograph.transport import Kafka\n"
              "async def main():\n"
              "    s = Settings.from_env(); k = Kafka(s); c = collections.Counter()\n"
              "    tps = [TopicPartition(s.events_topic, p) for p in range(await k.partition_count(s.events_topic))]\n"
              "    async for r in k.read(tps): c[dict(r.headers).get('ce_source', b'?').decode()] += 1\n"
              "    print(orjson.dumps(c).decode())\n"
              "asyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", script], env=env, text=True, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return Counter(orjson.loads(out.stdout))


GROUPS = ["choreo.coordinator", *(f"choreo.agent.report.{s}" for s in ("research", "analyze", "chart", "draft",
                                                                         "review"))]


def await_groups_caught_up(env: dict[str, str], timeout_s: float = 60) -> None:
    """Until every service's group has committed the end of every events partition."""
    script = ("import asyncio, sys\n"
              "from aiokafka import TopicPartition\n"
              "from choreograph import Settings\nfrom choreograph.transport import Kafka\n"
              "async def main():\n"
              "    s = Settings.from_env(); k = Kafka(s)\n"
              "    tps = [TopicPartition(s.events_topic, p) for p in range(await k.partition_count(s.events_topic))]\n"
              "    ends = await k.end_offsets(tps); deadline = asyncio.get_running_loop().time() + float(sys.argv[1])\n"
              "    for group in sys.argv[2:]:\n"
              "        while True:\n"
              "            c = k.consumer(group_id=group); await c.start()\n"
              "            try: lag = [ends[tp] - (await c.committed(tp) or 0) for tp in tps]\n"
              "            finally: await c.stop()\n"
              "            if max(lag) <= 0: break\n"
              "            assert asyncio.get_running_loop().time() < deadline, (group, lag)\n"
              "            await asyncio.sleep(0.2)\n"
              "asyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", script, str(timeout_s), *GROUPS], env=env, text=True,
                         capture_output=True, timeout=timeout_s + 30)
    assert out.returncode == 0, out.stderr[-2000:]


def listed(env: dict[str, str], expected: dict[str, str], timeout_s: float = 60) -> None:
    """Until `choreo ls --json` lists these workflows with these statuses (and maybe others)."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = choreo("ls", "--json", "--limit", "1000", env=env)
        assert shown.returncode == 0, shown.stderr
        rows = {r["workflow_id"]: r["status"] for r in map(orjson.loads, shown.stdout.splitlines())}
        if {w: rows.get(w) for w in expected} == expected:
            return
        assert time.monotonic() < deadline, f"choreo ls shows {rows}, not {expected}"
        time.sleep(0.5)


def test_archive_round_trip_across_down_and_up(tmp_path: Path) -> None:
    env = {**clean_env(tmp_path / "home"), "REPORT_STEP_DELAY_MS": "20"}
    archive_dir = tmp_path / "archive"
    demo = choreo("demo", "--keep", env=env, timeout=240)
    try:
        assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
        archived = choreo("archive", "--to", str(archive_dir), "--until-idle", env=env)
        assert archived.returncode == 0, archived.stderr
        goals = [r.key.decode() for r in Archive(archive_dir).records(".events")
                 if r.header("ce_kind") == b"goal" and r.key]
        assert len(goals) == 6
        before = histories(env, goals)
        assert all(h[-1]["kind"] == "outcome" for h in before.values())
        statuses = {w: str(h[-1]["data"]["status"]) for w, h in before.items()}  # type: ignore[index]
        listed(env, statuses)
        # Running again resumes from its committed position: nothing new, nothing written twice.
        again = choreo("archive", "--to", str(archive_dir), "--until-idle", env=env)
        assert orjson.loads(again.stdout)["archived"] == 0
    finally:
        assert choreo("down", env=env).returncode == 0

    up = choreo("up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        announced = events_by_source(env)
        restored = choreo("archive", "restore", str(archive_dir), env=env)
        assert restored.returncode == 0, restored.stderr
        after = histories(env, goals)
        for workflow_id in goals:
            # Offsets shift by what the fresh partition held before (agents' announcements, the
            # restore's opening marker); ids, order, keys, headers, payloads and timestamps do not.
            assert without_offsets(after[workflow_id]) == without_offsets(before[workflow_id])
        assert histories(env, goals, "--from-archive", str(archive_dir)) == before
        # The workflow index survived the broker: its file's offsets were beyond the fresh log's end, so
        # the indexer rebuilt it from the start, restored records included.
        listed(env, statuses)
        assert "rebuilding the index from the start" in (tmp_path / "home" / "logs" / "index.log").read_text()

        # Running services took the restored events as history: once every group has read past the
        # restore, the log holds the announcements, the restored records and the markers, nothing else.
        restored_events = orjson.loads(restored.stdout)["records"]["choreo.events"]
        await_groups_caught_up(env)
        now = events_by_source(env)
        archived_sources = Counter((r.header("ce_source") or b"?").decode()
                                   for r in Archive(archive_dir).records(".events"))
        assert sum(archived_sources.values()) == restored_events
        assert now - announced == archived_sources + Counter({"choreo://restore": 8})
        published = choreo("publish", "report", "--data", '{"topic": "after restore"}', "--wait", "60", env=env)
        assert orjson.loads(published.stdout)["status"] == "completed", "the services still work"

        # A damaged copy restores what it can into another namespace and names the damage.
        damaged_dir = tmp_path / "damaged"
        shutil.copytree(archive_dir, damaged_dir)
        segment = max(Archive(damaged_dir).segments(".events"), key=lambda s: s.path.stat().st_size)
        segment.path.write_bytes(segment.path.read_bytes()[:-25])
        other = {**env, "CHOREO_NAMESPACE": "damaged"}
        partial = choreo("archive", "restore", str(damaged_dir), env=other)
        assert partial.returncode == 1
        assert str(segment.path) in partial.stderr
        assert "byte" in partial.stderr
        intact = [g for g in goals if before[g][0]["partition"] != segment.partition]
        assert intact
        assert {g: without_offsets(h, "topic") for g, h in histories(other, intact).items()} == {
            g: without_offsets(before[g], "topic") for g in intact}
    finally:
        assert choreo("down", env=env).returncode == 0


async def test_a_restored_open_saga_stays_dormant_across_a_coordinator_restart(stack: Stack, tmp_path: Path) -> None:
    """History, not work: the coordinator folds an archived saga that never finished, decides
    nothing for it, and still decides nothing after a restart (its commit stays at the bracket)."""
    settings = stack.settings
    workflow_id = new_workflow_id()
    partition = Kafka(settings).partition_for(workflow_id.encode(), settings.partitions)
    goal = Envelope.new(type="report.ReportGoal", source="choreo://cli", workflow="report",
                        workflow_id=workflow_id, kind=Kind.GOAL)
    hour_ago = int(time.time() * 1000) - 3_600_000
    value = AvroSchema.from_json((ROOT / "schemas" / "report" / "report_goal.avsc").read_text()).encode(
        {"topic": "left open", "fail_at": None})
    write_segment(tmp_path / "old.events" / "2026-11-18T10" / f"{partition}-0-0.avro", [
        StoredRecord("old.events", partition, 0, hour_ago, goal.key, value, tuple(sign("publisher:local", goal.key,
                                                                                        value, goal.headers())))])
    kafka = Kafka(settings)
    await kafka.ensure_topics()
    producer = signing("agent:report/research", kafka.producer())
    await producer.start()
    try:  # the goal's schema, as the research agent would announce it (no agent runs here)
        await announce(producer, settings.registry_topic, settings.events_topic, settings.partitions,
                       load_agent("choreograph.examples.report.research:agent").contract(), "choreo://agent/report/research")
    finally:
        await producer.stop()
    stack.start(coordinator_spec())
    await restore(settings, tmp_path)

    async def coordinator_passed_the_restore() -> None:
        """Another goal on the same partition, decided after the restored records were read."""
        probe_id = next(w for w in iter(new_workflow_id, None)
                        if Kafka(settings).partition_for(w.encode(), settings.partitions) == partition)
        probe = Envelope.new(type="report.ReportGoal", source="choreo://cli", workflow="report",
                             workflow_id=probe_id, kind=Kind.GOAL)
        producer = signing("publisher:local", Kafka(settings).producer())
        await producer.start()
        try:
            await producer.send_and_wait(settings.events_topic, value=value, key=probe.key, headers=probe.headers(),
                                         partition=partition)
        finally:
            await producer.stop()

        async def decided() -> bool:
            return any(e.source == "choreo://coordinator" for e in await history(settings, probe_id))

        await eventually(decided, what="the coordinator to decide a goal published after the restore")

    await coordinator_passed_the_restore()
    # A clean stop commits exactly what a crash would have committed by its last periodic commit.
    stack.kill("coordinator", signal.SIGTERM)
    stack.start(coordinator_spec())
    await coordinator_passed_the_restore()
    entries = await history(settings, workflow_id, to_end=True)
    assert [e.kind for e in entries] == ["goal"], f"nothing was decided for the restored, open saga: {entries}"
