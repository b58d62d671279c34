"""`choreo ps`: what `choreo up` runs, from the supervisor's state file, with each group's consumer lag."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from ..errors import BrokerUnavailable
from ..runtime._restarts import STOPPED
from ..runtime._stackstate import now_ms, read_state, same_process
from ..runtime._supervisor import exit_text, log_tail
from ..transport._settings import PROFILES, Settings
from ._input import err


def _settings(env: dict[str, str]) -> Settings:
    """The settings the stack's services run with (recorded by the supervisor), whatever this shell's are."""
    profile = replace(PROFILES[env["CHOREO_BROKER"]], fetch_max_wait_ms=int(env["CHOREO_FETCH_MAX_WAIT_MS"]))
    return Settings(env["KAFKA_BOOTSTRAP_SERVERS"], profile, env["CHOREO_NAMESPACE"], int(env["CHOREO_PARTITIONS"]))


def report(state: dict[str, Any]) -> dict[str, Any]:
    """The `ps --json` object: the supervisor and each service, lag included (None: unknown)."""
    now = now_ms()
    boss = state["supervisor"]
    supervised = same_process(boss.get("pid"), boss.get("pid_ticks"))
    services = []
    for entry in state["services"]:
        running = same_process(entry["pid"], entry.get("pid_ticks"))
        # Without its supervisor a service is as the OS says: a recorded pid that is gone has stopped.
        status = entry["state"] if supervised or running else STOPPED
        services.append({
            "name": entry["name"], "pid": entry["pid"] if running else None, "state": status,
            "ready": bool(entry["ready"] and running),
            "uptime_s": round((now - entry["started_at"]) / 1000, 1) if running and entry["started_at"] else None,
            "restarts": entry["restarts"], "last_exit": entry["last_exit"], "lag": None, "log": entry["log"],
            "metrics_port": entry.get("metrics_port"),
        })
        if entry["state"] == "crash-loop":
            services[-1]["log_tail"] = log_tail(Path(entry["log"]))
    try:
        lags = asyncio.run(_lags(state))
    except BrokerUnavailable:
        lags = {}
    for service in services:
        service["lag"] = lags.get(service["name"])
    return {"supervisor": {"pid": boss["pid"], "running": supervised,
                           "uptime_s": round((now - boss["started_at"]) / 1000, 1) if supervised else None,
                           "log": boss["log"]},
            "broker_started": state.get("broker_started", False), "services": services}


async def _lags(state: dict[str, Any]) -> dict[str, int | None]:
    from ..transport._lag import service_lags  # deferred: loads aiokafka

    services = state["services"]
    library = ("coordinator", "index")
    return await service_lags(_settings(state["settings"]),
                              {s["name"]: s.get("agent") for s in services if s["name"] not in library},
                              coordinators=[s["name"] for s in services if s["name"] == "coordinator"],
                              indexes=[s["name"] for s in services if s["name"] == "index"])


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def print_report(ps: dict[str, Any]) -> None:
    """The human form: a table of services, then the log tail of each crash-looping one."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(soft_wrap=True)
    boss = ps["supervisor"]
    if boss["running"]:
        console.print(f"supervisor pid {boss['pid']}, up {_duration(boss['uptime_s'])} (log: {boss['log']})",
                      highlight=False)
    table = Table(box=None, pad_edge=False)
    for column in ("service", "pid", "state", "ready", "uptime", "restarts", "last exit", "lag"):
        table.add_column(column, justify="right" if column in ("pid", "restarts", "lag") else "left")
    colours = {"running": "green", "restarting": "yellow", "crash-loop": "bold red", "stopped": "red"}
    for s in ps["services"]:
        colour = colours.get(s["state"], "white")
        table.add_row(s["name"], str(s["pid"] or "-"), f"[{colour}]{s['state']}[/{colour}]",
                      "yes" if s["ready"] else "no", _duration(s["uptime_s"]), str(s["restarts"]),
                      exit_text(s["last_exit"]), "?" if s["lag"] is None else str(s["lag"]))
    console.print(table)
    for s in ps["services"]:
        if "log_tail" in s:
            console.print(f"\n[bold red]{escape(s['name'])} is in a crash loop[/bold red] (last exit "
                          f"{exit_text(s['last_exit'])}); last lines of {escape(s['log'])}:", highlight=False)
            console.print(escape(s["log_tail"]), highlight=False)


def ps(as_json: bool) -> int:
    """Print what `choreo up` runs; the exit status: 0, or 1 if nothing is up or its supervisor is gone."""
    state = read_state()
    if state is None:
        err("nothing is up (no .choreo/services.json); start it with `choreo up`")
        return 1
    result = report(state)
    if not result["supervisor"]["running"]:
        err(f"the supervisor (pid {result['supervisor']['pid']}) is not running: nothing restarts these services; "
            "run `choreo down`, then `choreo up`")
    if as_json:
        print(orjson.dumps(result).decode())
    else:
        print_report(result)
    return 0 if result["supervisor"]["running"] else 1
