"""The bench harness's arithmetic (no timing here: benchmarks print figures, tests never time), and the
chaos suite's argument parsing and audit rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench._chaos_audit import Audit, HandlerRun, compensated_exactly_completed, explaining_kill
from bench._chaos_fleet import Kill
from bench._chaos_plan import Goal
from bench._procs import refusals
from bench.chaos import SCENARIOS, parse_args
from bench.report import headline, print_table
from choreograph import HistoryEntry

REQUIRED = {"relay_ratio", "hop_overhead_ms", "sagas_per_s", "saga_p50_ms", "saga_p99_ms",
            "compensated_sagas_per_s", "vs_faust", "vs_faststream", "codec_us"}


def _relay(rate: float, p50: float, cpu_us: float | None = None) -> dict[str, float]:
    # cpu_us None: a result from before the per-event CPU figure (merged runs keep old results)
    relay = {"events_per_s": rate, "hop_p50_ms": p50, "hop_p99_ms": p50 * 2, "hops_lost": 0, "relay_cpu": 1.0}
    return relay if cpu_us is None else {**relay, "cpu_us_per_event": cpu_us, "refused": 0}


def _saga(rate: float, p50: float) -> dict[str, object]:
    return {"in_flight": 32, "sagas": 1000, "seconds": 1000 / rate, "sagas_per_s": rate, "p50_ms": p50,
            "p99_ms": p50 * 2, "statuses": {"completed": 1000}}


def test_the_headline_line_has_every_acceptance_figure_as_a_ratio_or_difference() -> None:
    results = {
        "relay": {"aiokafka": _relay(10_000, 8.0), "choreograph": _relay(6_000, 8.5),
                  "faust": _relay(1_000, 12.0), "faststream": _relay(300, 12.0)},
        "saga": {"headline": _saga(210.0, 45.0), "compensated": _saga(190.0, 50.0)},
        "codec": {"encode_us": 20.0, "decode_us": 15.0, "payload_bytes": 180, "header_bytes": 350},
    }
    figures = headline(results)
    assert figures.keys() >= REQUIRED
    assert figures["relay_ratio"] == 0.6
    assert figures["hop_overhead_ms"] == 0.5
    assert figures["vs_faust"] == 6.0
    assert figures["vs_faststream"] == 20.0
    assert figures["codec_us"] == 35.0
    assert "signing_cost" not in figures  # no unsigned runs to compare with


def _signed_and_unsigned() -> dict[str, object]:
    return {
        "started": "2026-11-22T00:00:00Z", "broker": "tansu (embedded)", "seconds": 1.0,
        "machine": {"cpus": 2, "python": "3.11.7"},
        # As a partial run leaves them: merged into older results, the unsigned relay comes last.
        "relay": {"aiokafka": _relay(10_000, 8.0, 100.0), "choreograph": _relay(4_000, 8.6, 250.0),
                  "faust": _relay(1_000, 12.0), "choreograph-unsigned": _relay(5_000, 8.4, 150.0)},
        "saga": {"one_at_a_time": _saga(15.0, 60.0), "one_at_a_time_unsigned": _saga(16.0, 58.5),
                 "headline": _saga(200.0, 300.0), "headline_unsigned": _saga(250.0, 250.0)},
    }


def test_the_same_runs_signed_and_unsigned_give_the_cost_of_signing_in_the_headline() -> None:
    figures = headline(_signed_and_unsigned())
    assert (figures["relay_ratio"], figures["relay_ratio_unsigned"], figures["relay_unsigned_ev_s"]) == (0.4, 0.5, 5000)
    assert (figures["sagas_per_s"], figures["sagas_per_s_unsigned"]) == (200.0, 250.0)
    assert (figures["saga_p50_ms"], figures["saga_p50_ms_unsigned"]) == (300.0, 250.0)
    assert figures["signing_cost"] == {"relay": 0.8, "relay_cpu_us": 100.0, "relay_hop_ms": 0.2, "sagas": 0.8,
                                       "saga_p50_ms": 1.5}


def test_the_table_puts_each_unsigned_run_next_to_its_signed_one(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(_signed_and_unsigned())
    lines = capsys.readouterr().out.splitlines()
    rows = [next(i for i, line in enumerate(lines) if f" {label} " in line) for label in (
        "choreograph", "choreograph-unsigned", "faust", "one at a time", "one at a time, unsigned")]
    assert rows == sorted(rows)
    assert rows[1] == rows[0] + 1
    assert rows[4] == rows[3] + 1
    assert any("relay CPU us/event" in line and "+100 us" in line for line in lines)


def test_refused_and_dead_lettered_records_are_counted_from_the_services_logs(tmp_path: Path) -> None:
    # The lines as the services log them (runtime._service's format; runtime._gate, _coordinator).
    agent_log, coordinator_log = tmp_path / "relay.log", tmp_path / "coordinator.log"
    agent_log.write_text(
        "2026-11-22 08:18:29,367 WARNING choreograph.security: bench.relay: refusing b.events[3]@1: unsigned "
        "(no ce_keyid or ce_signature)\n2026-11-22 08:18:29,400 INFO choreograph.agent: bench.relay ready\n")
    coordinator_log.write_text("2026-11-22 08:18:30,001 WARNING choreograph.coordinator: dead-lettering "
                               "b.events[0]@7: signed with unknown key 0123\n")
    assert refusals([agent_log, coordinator_log, tmp_path / "never-written.log"]) == 2


def test_a_scenario_that_did_not_run_leaves_its_figures_out_instead_of_inventing_them() -> None:
    assert headline({"codec": {"encode_us": 1.0, "decode_us": 2.0}}) == {"codec_us": 3.0}


# `make chaos` (bench/chaos.py): which scenarios run, and the audit's rule for a handler run twice.

MS = 1_000_000  # nanoseconds


def test_chaos_runs_every_scenario_by_default_and_the_named_ones_in_their_order() -> None:
    assert parse_args([]).scenarios == list(SCENARIOS)
    assert parse_args(["--scenario", "all"]).scenarios == list(SCENARIOS)
    assert parse_args(["--scenario", "poison,kills"]).scenarios == ["kills", "poison"]
    assert parse_args(["--scenario", "agent_down", "--scenario", "malformed", "--seed", "9"]).scenarios == [
        "malformed", "agent_down"]


def test_chaos_refuses_an_unknown_scenario_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--scenario", "kills,meteor"])
    assert exit_.value.code == 2
    assert "unknown scenario(s) meteor" in capsys.readouterr().err


def _kill(pid: int, at_ms: int, cause: str = "sigkill") -> Kill:
    return Kill(pid, "report.draft.0", at_ms * MS, cause)


def test_a_rerun_is_explained_only_by_a_death_of_its_process_inside_the_crash_window() -> None:
    first, again = HandlerRun(pid=10, started_ns=100 * MS, done_ns=150 * MS), HandlerRun(11, 400 * MS, 450 * MS)
    result_logged = 460 * MS  # by the run again
    died = _kill(10, 200, "crash:effect")
    assert explaining_kill([died], first, again, result_logged) == died
    assert explaining_kill([_kill(10, 120)], first, again, result_logged) is None  # died before the effect
    assert explaining_kill([_kill(12, 200)], first, again, result_logged) is None  # another process died
    assert explaining_kill([_kill(10, 200)], first, again, 180 * MS) is None  # its result was in the log first


def _entry(kind: str, step: str | None, offset: int, event_id: str = "", ts: int = 0) -> HistoryEntry:
    data = {"status": "completed"} if kind == "outcome" else {}
    return HistoryEntry(topic="t", partition=0, offset=offset, timestamp=ts, time="", type="x", kind=kind,
                        step=step, event_id=event_id or f"e{offset}", causation_id=None, source="s",
                        traceparent=None, data=data, workflow_id="w")


def test_a_copy_the_harness_wrote_is_no_duplicate_but_a_second_result_of_the_system_is() -> None:
    goal = Goal("w", "duplicates")
    history = [_entry("goal", None, 0), _entry("step_completed", "research", 1),
               _entry("step_completed", "research", 2, event_id="e1"), _entry("outcome", None, 3)]
    copied = Audit([], injected={(0, 2)})
    copied.add(goal, history, {})
    assert copied.holds()
    assert copied.duplicate_results == 0
    doubled = Audit([], injected=set())
    doubled.add(goal, history, {})
    assert not doubled.holds()
    assert doubled.duplicate_results == 1


def test_an_unexplained_rerun_fails_the_audit() -> None:
    runs = {"research": [HandlerRun(10, 100 * MS, 150 * MS), HandlerRun(10, 300 * MS, 350 * MS)]}
    history = [_entry("goal", None, 0), _entry("step_completed", "research", 1, ts=360), _entry("outcome", None, 2)]
    found = Audit([], injected=set())
    found.add(Goal("w", "kills"), history, runs)
    assert (found.effects_rerun, found.reruns_unexplained) == (1, 1)
    assert not found.holds()
    explained = Audit([_kill(10, 200)], injected=set())
    explained.add(Goal("w", "kills"), history, runs)
    assert explained.reruns_explained == {"sigkill": 1}
    assert explained.holds()


def test_a_compensation_request_published_twice_with_one_id_is_one_request() -> None:
    done = [_entry("step_completed", "research", 1), _entry("step_failed", "analyze", 2)]
    undo = [_entry("compensation_requested", "research", 3, "r"), _entry("compensation_completed", "research", 5)]
    assert compensated_exactly_completed([*done, *undo], compensates=True)
    assert compensated_exactly_completed([*done, *undo, _entry("compensation_requested", "research", 4, "r")], True)
    assert not compensated_exactly_completed([*done, *undo, _entry("compensation_requested", "research", 4)], True)
    assert not compensated_exactly_completed(done, compensates=True)
