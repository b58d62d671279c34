"""`choreo config`: the effective settings, each with where it came from; secrets shown as `***`."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Annotated

import orjson
import typer

from ..errors import BrokerUnavailable
from ..runtime._project import apply_defaults, find_project, from_file
from ..transport._kafka_security import VARIABLES as SECURITY_VARIABLES
from ..transport._settings import Settings, log_format, log_level, metrics_address, run_dir, verify_off

# What `choreo config` shows as the address when there is none yet.
_NO_BROKER = "none: no KAFKA_BOOTSTRAP_SERVERS and no local broker running (`choreo up` starts one)"


def cli_settings() -> Settings:
    """Settings.from_env for a command: its clients name themselves `choreo-cli` to the broker."""
    return replace(Settings.from_env(), client_id="choreo-cli")


def _source(variable: str, default: str = "default") -> str:
    # Same rule as the settings: an empty variable is unset. The environment wins over the project file.
    if (path := from_file(variable)) is not None:
        return f"file {path}"
    return f"env {variable}" if os.environ.get(variable) else default


def effective(settings: Settings, *, broker_found: bool = True) -> list[dict[str, object]]:
    """Every setting a service resolves here: name, value (secrets `***`) and source.

    Args:
        settings: The settings, from Settings.from_env (so already validated).
        broker_found: False when no broker is configured or running: the address is shown as none.

    Returns:
        One row per setting, in README's order.
    """
    profile = settings.broker
    servers: tuple[str, object, str] = (
        ("bootstrap_servers", settings.bootstrap_servers,
         _source("KAFKA_BOOTSTRAP_SERVERS", f"local broker ({run_dir() / 'broker.json'})"))
        if broker_found else ("bootstrap_servers", None, _NO_BROKER))
    rows: list[tuple[str, object, str]] = [
        servers,
        ("broker", profile.name, _source("CHOREO_BROKER")),
        ("namespace", settings.namespace, _source("CHOREO_NAMESPACE")),
        ("partitions", settings.partitions, _source("CHOREO_PARTITIONS")),
        ("session_timeout_ms", profile.session_timeout_ms, _source("CHOREO_SESSION_TIMEOUT_MS")),
        ("heartbeat_interval_ms", profile.heartbeat_interval_ms,
         "a third of CHOREO_SESSION_TIMEOUT_MS" if os.environ.get("CHOREO_SESSION_TIMEOUT_MS") else "default"),
        ("fetch_max_wait_ms", profile.fetch_max_wait_ms, _source("CHOREO_FETCH_MAX_WAIT_MS")),
        ("max_event_bytes", settings.max_event_bytes, _source("CHOREO_MAX_EVENT_BYTES")),
    ]
    shown = settings.security.shown()
    rows += [("security_protocol" if name == "protocol" else name, shown[name], _source(variable))
             for name, variable in SECURITY_VARIABLES.items()]
    rows += [
        ("log_level", log_level(), _source("CHOREO_LOG_LEVEL")),
        ("log_format", log_format(), _source("CHOREO_LOG_FORMAT")),
        ("metrics", "off" if (address := metrics_address()) is None else f"{address[0]}:{address[1]}",
         _source("CHOREO_METRICS_PORT")),
        ("verify", "off" if verify_off() else "on", _source("CHOREO_VERIFY")),
        ("home", str(run_dir()), _source("CHOREO_HOME")),
    ]
    return [{"name": name, "value": value, "source": source} for name, value, source in rows]


def config(as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False) -> None:
    """Print the effective settings and where each came from (env, project file or default); secrets as ***."""
    # Unlike other commands, a project file that cannot be used is an error here: this command is
    # how one finds out why a setting is not what the file says.
    apply_defaults(find_project())
    try:
        rows = effective(cli_settings())
    except BrokerUnavailable:
        # Still useful before `choreo up`: every other setting is what services would resolve. The
        # broker kind is what `choreo up` would start unless CHOREO_BROKER says otherwise.
        placeholder = Settings.from_env(bootstrap_servers="localhost:9092", broker=os.environ.get("CHOREO_BROKER")
                                        or "tansu")
        rows = effective(replace(placeholder, client_id="choreo-cli"), broker_found=False)
    if as_json:
        print(orjson.dumps({row["name"]: {"value": row["value"], "source": row["source"]} for row in rows}).decode())
        return
    width = max(len(str(row["name"])) for row in rows)
    value_width = max(len(str(row["value"])) for row in rows)
    for row in rows:
        value = "" if row["value"] is None else str(row["value"])
        print(f"{row['name']:<{width}}  {value:<{value_width}}  {row['source']}".rstrip())
