"""The human table and the headline figures of one bench run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

UNSIGNED_RELAY = "choreograph-unsigned"


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The acceptance figures; a key is missing when its scenario did not run.

    Signed figures (the default) keep their names; the same runs with CHOREO_VERIFY=off add
    `..._unsigned` ones, and `signing_cost` compares the two (see signing_cost).
    """
    out: dict[str, Any] = {}
    r = results.get("relay", {})
    if "aiokafka" in r and "choreograph" in r:
        raw, ours = r["aiokafka"], r["choreograph"]
        out["relay_ratio"] = round(ours["events_per_s"] / raw["events_per_s"], 3)
        out["hop_overhead_ms"] = round(ours["hop_p50_ms"] - raw["hop_p50_ms"], 2)
        for rival in ("faust", "faststream"):
            if rival in r:
                out[f"vs_{rival}"] = round(ours["events_per_s"] / r[rival]["events_per_s"], 2)
    if UNSIGNED_RELAY in r:
        out["relay_unsigned_ev_s"] = round(r[UNSIGNED_RELAY]["events_per_s"])
        if "aiokafka" in r:
            out["relay_ratio_unsigned"] = round(r[UNSIGNED_RELAY]["events_per_s"] / r["aiokafka"]["events_per_s"], 3)
    s = results.get("saga", {})
    if "headline" in s:
        out["sagas_per_s"] = round(s["headline"]["sagas_per_s"], 1)
        out["saga_p50_ms"] = round(s["headline"]["p50_ms"], 1)
        out["saga_p99_ms"] = round(s["headline"]["p99_ms"], 1)
    if "headline_unsigned" in s:
        out["sagas_per_s_unsigned"] = round(s["headline_unsigned"]["sagas_per_s"], 1)
        out["saga_p50_ms_unsigned"] = round(s["headline_unsigned"]["p50_ms"], 1)
    if "compensated" in s:
        out["compensated_sagas_per_s"] = round(s["compensated"]["sagas_per_s"], 1)
    if cost := signing_cost(results):
        out["signing_cost"] = cost
    out.update(_command_figures(results))
    if "codec" in results:
        out["codec_us"] = round(results["codec"]["encode_us"] + results["codec"]["decode_us"], 1)
    return out


def _command_figures(results: dict[str, Any]) -> dict[str, Any]:
    """The read commands' headline figures: `choreo history`, `choreo ls` (p50 ms, a fresh process each)."""
    wanted = (("history", "cli_p50_ms", "history_cli_ms"), ("index", "ls_limit50_p50_ms", "ls_cli_ms"))
    return {key: results[scenario][figure] for scenario, figure, key in wanted if scenario in results}


def signing_cost(results: dict[str, Any]) -> dict[str, float]:
    """What signing and verifying cost, from the same run's signed and CHOREO_VERIFY=off figures.

    relay: signed ÷ unsigned relay events/s; relay_cpu_us: the relay's CPU per event, signed minus
    unsigned (the least noisy of these on shared cores); relay_hop_ms: hop p50, signed minus
    unsigned; sagas: signed ÷ unsigned sagas/s at the headline's load; saga_p50_ms: one-at-a-time
    p50, signed minus unsigned (a saga's own latency; under load p50 follows the rate). A pair that
    did not run is left out.
    """
    out: dict[str, float] = {}
    r, s = results.get("relay", {}), results.get("saga", {})
    if "choreograph" in r and UNSIGNED_RELAY in r:
        signed, unsigned = r["choreograph"], r[UNSIGNED_RELAY]
        out["relay"] = round(signed["events_per_s"] / unsigned["events_per_s"], 3)
        if "cpu_us_per_event" in signed and "cpu_us_per_event" in unsigned:  # not in runs before it was
            out["relay_cpu_us"] = round(signed["cpu_us_per_event"] - unsigned["cpu_us_per_event"], 1)
        out["relay_hop_ms"] = round(signed["hop_p50_ms"] - unsigned["hop_p50_ms"], 2)
    if "headline" in s and "headline_unsigned" in s:
        out["sagas"] = round(s["headline"]["sagas_per_s"] / s["headline_unsigned"]["sagas_per_s"], 3)
    if "one_at_a_time" in s and "one_at_a_time_unsigned" in s:
        out["saga_p50_ms"] = round(s["one_at_a_time"]["p50_ms"] - s["one_at_a_time_unsigned"]["p50_ms"], 1)
    return out


def tracing_cost(results: dict[str, Any]) -> dict[str, float]:
    """What traces on cost (`python -m bench --tracing`), as traced ÷ untraced: relay events/s and CPU us
    per event; sagas/s at the headline's load; one-at-a-time p50."""
    out: dict[str, float] = {}
    relay, s = results.get("relay", {}), results.get("saga", {})
    if "choreograph" in relay and "choreograph-traced" in relay:
        on, off = relay["choreograph-traced"], relay["choreograph"]
        out["relay_events_per_s"] = round(on["events_per_s"] / off["events_per_s"], 3)
        if on.get("cpu_us_per_event") and off.get("cpu_us_per_event"):
            out["relay_cpu_us_per_event"] = round(on["cpu_us_per_event"] / off["cpu_us_per_event"], 3)
    for run, figure in (("headline", "sagas_per_s"), ("one_at_a_time", "p50_ms")):
        if run in s and f"{run}_traced" in s:
            out[f"{run}_{figure}"] = round(s[f"{run}_traced"][figure] / s[run][figure], 3)
    return out


def print_table(results: dict[str, Any]) -> None:
    console = Console(width=120)  # the relay table's 8 columns, contender "choreograph-unsigned" unclipped
    console.print(f"[bold]choreograph bench[/bold] {results['started']} on {results['broker']}, "
                  f"{results['machine']['cpus']} CPUs, Python {results['machine']['python']}, "
                  f"{results['seconds']} s")
    if "relay" in results:
        table = Table(title="relay: throughput (end to end) and one-hop latency (produce to sink)")
        for column in ("contender", "events/s", "vs aiokafka", "hop p50 ms", "hop p99 ms", "hops lost",
                       "CPU (cores)", "CPU us/event"):
            table.add_column(column, justify="right")
        raw = results["relay"].get("aiokafka", {}).get("events_per_s")
        for name in _relay_order(results["relay"]):
            r = results["relay"][name]
            per_event = r.get("cpu_us_per_event")
            table.add_row(name, f"{r['events_per_s']:,.0f}", f"{r['events_per_s'] / raw:.2f}" if raw else "",
                          f"{r['hop_p50_ms']:.2f}", f"{r['hop_p99_ms']:.2f}", str(r["hops_lost"]),
                          f"{r['relay_cpu']:.2f}", "" if per_event is None else f"{per_event:.0f}")
        console.print(table)
    sagas = results.get("saga", {})
    runs = [(label, sagas[key]) for key, label in (
        ("one_at_a_time", "one at a time"), ("one_at_a_time_unsigned", "one at a time, unsigned"),
        ("headline", "headline"), ("headline_unsigned", "headline, unsigned"),
        ("compensated", "10% fail at review"), ("saturation", "saturated"),
        ("one_at_a_time_traced", "one at a time, traced"), ("headline_traced", "headline, traced"),
        ("compensated_traced", "10% fail at review, traced"), ("saturation_traced", "saturated, traced"))
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
    _print_signing(console, results)
    if cost := tracing_cost(results):
        console.print("tracing on (traced ÷ untraced): " + ", ".join(f"{k} {v:.2f}" for k, v in cost.items()))
    if "history" in results:
        h = results["history"]
        console.print(f"history of one workflow in a log of {h['events']:,} events / {h['workflows']:,} workflows: "
                      f"`choreo history` p50 {h['cli_p50_ms']:.0f} ms (max {h['cli_max_ms']:.0f}, a fresh process); "
                      f"library p50 {h['library_p50_ms']:.0f} ms (max {h['library_max_ms']:.0f}, at most "
                      f"{h['scanned_max']} records read); reading the partition from its start "
                      f"{h['full_scan_ms']:.0f} ms")
    if "index" in results:
        x = results["index"]
        console.print(f"workflow index of {x['workflows']:,} workflows / {x['events']:,} events: indexed in "
                      f"{x['index_s']:.1f} s ({x['index_events_per_s']:,} events/s, signatures checked); `choreo ls "
                      f"--limit 50` p50 {x['ls_limit50_p50_ms']:.0f} ms (max {x['ls_limit50_max_ms']:.0f}), `--status "
                      f"completed` p50 {x['ls_status_p50_ms']:.0f} ms (max {x['ls_status_max_ms']:.0f}), a fresh "
                      f"process (`choreo --version` p50 {x['version_p50_ms']:.0f} ms); file {x['file_mb']} MB")
    if "codec" in results:
        c = results["codec"]
        console.print(f"codec: encode {c['encode_us']:.1f} us + decode {c['decode_us']:.1f} us per event "
                      f"(envelope + ResearchCompleted, {c['payload_bytes']} B payload, {c['header_bytes']} B headers)")


def _relay_order(relay: dict[str, Any]) -> list[str]:
    """Contenders as they ran, the unsigned choreograph relay next to the signed one (a partial run
    merged into older results appends it at the end)."""
    names = [n for n in relay if n != UNSIGNED_RELAY]
    if UNSIGNED_RELAY in relay:
        names.insert(names.index("choreograph") + 1 if "choreograph" in names else len(names), UNSIGNED_RELAY)
    return names


def _print_signing(console: Console, results: dict[str, Any]) -> None:
    """The signed runs next to the same runs with CHOREO_VERIFY=off, and any records refused."""
    r, s = results.get("relay", {}), results.get("saga", {})
    rows: list[tuple[str, float, float, str]] = []
    if "choreograph" in r and UNSIGNED_RELAY in r:
        on, off = r["choreograph"], r[UNSIGNED_RELAY]
        rows.append(("relay events/s", on["events_per_s"], off["events_per_s"],
                     f"{on['events_per_s'] / off['events_per_s']:.2f}x"))
        if "cpu_us_per_event" in on and "cpu_us_per_event" in off:
            rows.append(("relay CPU us/event", on["cpu_us_per_event"], off["cpu_us_per_event"],
                         f"{on['cpu_us_per_event'] - off['cpu_us_per_event']:+.0f} us"))
        rows.append(("relay hop p50 ms", on["hop_p50_ms"], off["hop_p50_ms"],
                     f"{on['hop_p50_ms'] - off['hop_p50_ms']:+.2f} ms"))
    if "headline" in s and "headline_unsigned" in s:
        on, off = s["headline"], s["headline_unsigned"]
        rows += [(f"sagas/s, {on['in_flight']} in flight", on["sagas_per_s"], off["sagas_per_s"],
                  f"{on['sagas_per_s'] / off['sagas_per_s']:.2f}x"),
                 (f"saga p50 ms, {on['in_flight']} in flight", on["p50_ms"], off["p50_ms"],
                  f"{on['p50_ms'] - off['p50_ms']:+.1f} ms")]
    if "one_at_a_time" in s and "one_at_a_time_unsigned" in s:
        on, off = s["one_at_a_time"], s["one_at_a_time_unsigned"]
        rows.append(("saga p50 ms, one at a time", on["p50_ms"], off["p50_ms"],
                     f"{on['p50_ms'] - off['p50_ms']:+.1f} ms"))
    if rows:
        table = Table(title="signing: signed (the default) and the same runs with CHOREO_VERIFY=off")
        for column in ("figure", "signed", "unsigned", "signed vs unsigned"):
            table.add_column(column, justify="right")
        for label, on_figure, off_figure, cost in rows:
            table.add_row(label, f"{on_figure:,.2f}", f"{off_figure:,.2f}", cost)
        console.print(table)
    # A refused record is work never done: the run's figures would flatter it.
    runs = {f"relay {k}": v for k, v in r.items()} | {f"saga {k}": v for k, v in s.items() if k != "scale_out"}
    runs |= {f"saga scale-out {k}": v for k, v in s.get("scale_out", {}).items()}
    refused = {k: v["refused"] for k, v in runs.items() if v.get("refused")}
    if refused:
        console.print("[bold red]records refused or dead-lettered (see the services' logs; these figures are "
                      "not of the work asked):[/bold red] " + ", ".join(f"{k}={v}" for k, v in refused.items()))
