"""The human table and the headline figures of one bench run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The acceptance figures; a key is missing when its scenario did not run."""
    out: dict[str, Any] = {}
    r = results.get("relay", {})
    if "aiokafka" in r and "choreograph" in r:
        raw, ours = r["aiokafka"], r["choreograph"]
        out["relay_ratio"] = round(ours["events_per_s"] / raw["events_per_s"], 3)
        out["hop_overhead_ms"] = round(ours["hop_p50_ms"] - raw["hop_p50_ms"], 2)
        for rival in ("faust", "faststream"):
            if rival in r:
                out[f"vs_{rival}"] = round(ours["events_per_s"] / r[rival]["events_per_s"], 2)
    s = results.get("saga", {})
    if "headline" in s:
        out["sagas_per_s"] = round(s["headline"]["sagas_per_s"], 1)
        out["saga_p50_ms"] = round(s["headline"]["p50_ms"], 1)
        out["saga_p99_ms"] = round(s["headline"]["p99_ms"], 1)
    if "compensated" in s:
        out["compensated_sagas_per_s"] = round(s["compensated"]["sagas_per_s"], 1)
    if "history" in results:
        out["history_cli_ms"] = results["history"]["cli_p50_ms"]
    if "codec" in results:
        out["codec_us"] = round(results["codec"]["encode_us"] + results["codec"]["decode_us"], 1)
    return out


def print_table(results: dict[str, Any]) -> None:
    console = Console(width=110)
    console.print(f"[bold]choreograph bench[/bold] {results['started']} on {results['broker']}, "
                  f"{results['machine']['cpus']} CPUs, Python {results['machine']['python']}, "
                  f"{results['seconds']} s")
    if "relay" in results:
        table = Table(title="relay: throughput (end to end) and one-hop latency (produce to sink)")
        for column in ("contender", "events/s", "vs aiokafka", "hop p50 ms", "hop p99 ms", "hops lost",
                       "relay CPU (cores)"):
            table.add_column(column, justify="right")
        raw = results["relay"].get("aiokafka", {}).get("events_per_s")
        for name, r in results["relay"].items():
            table.add_row(name, f"{r['events_per_s']:,.0f}", f"{r['events_per_s'] / raw:.2f}" if raw else "",
                          f"{r['hop_p50_ms']:.2f}", f"{r['hop_p99_ms']:.2f}", str(r["hops_lost"]),
                          f"{r['relay_cpu']:.2f}")
        console.print(table)
    sagas = results.get("saga", {})
    runs = [(label, sagas[key]) for key, label in (
        ("one_at_a_time", "one at a time"), ("headline", "headline"),
        ("compensated", "10% fail at review"), ("saturation", "saturated"))
        if key in sagas]
    runs += [(f"scale-out: {k} of each agent", v) for k, v in sagas.get("scale_out", {}).items()]
    if runs:
        table = Table(title="sagas: 5-step report workflow, every service its own process, 4 partitions, "
                            "a fresh broker per run")
        for column in ("run", "in flight", "sagas", "sagas/s", "p50 ms", "p99 ms", "outcomes"):
            table.add_column(column, justify="right")
        for label, r in runs:
            outcomes = " ".join(f"{k}={v}" for k, v in sorted(r["statuses"].items()))
            table.add_row(label, str(r["in_flight"]), str(r["sagas"]), f"{r['sagas_per_s']:.1f}",
                          f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", outcomes)
        console.print(table)
    if "history" in results:
        h = results["history"]
        console.print(f"history of one workflow in a log of {h['events']:,} events / {h['workflows']:,} workflows: "
                      f"`choreo history` p50 {h['cli_p50_ms']:.0f} ms (max {h['cli_max_ms']:.0f}, a fresh process); "
                      f"library p50 {h['library_p50_ms']:.0f} ms (max {h['library_max_ms']:.0f}, at most "
                      f"{h['scanned_max']} records read); reading the partition from its start "
                      f"{h['full_scan_ms']:.0f} ms")
    if "codec" in results:
        c = results["codec"]
        console.print(f"codec: encode {c['encode_us']:.1f} us + decode {c['decode_us']:.1f} us per event "
                      f"(envelope + ResearchCompleted, {c['payload_bytes']} B payload, {c['header_bytes']} B headers)")
