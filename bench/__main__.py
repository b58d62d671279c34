"""`make bench`: every scenario on one broker in one run; a table, bench/results/latest.json, and
a last line holding the headline figures as one JSON object.

Usage: python -m bench [--quick] [--only codec,relay,saga,scale,history,index,faust-index] [--tracing]
(faust-index, the index as a faust-streaming Table, runs only when named: an evaluation, not a figure
`make bench` tracks)

`--tracing` runs choreograph's relay and saga scenarios with traces on: every service (and the bench's
own clients) sets up the OpenTelemetry SDK with a batch span processor and an exporter that drops what
it is given (OTEL_TRACES_EXPORTER=discard, see choreograph.telemetry), so the figures are the cost of
making, batching and ending every span, with no receiver. Its results are kept beside the others under
`<name>-traced` (relay) and `<run>_traced` (sagas). Without it, OTEL_TRACES_EXPORTER=none: a caller's
OTEL_* settings never turn tracing on in the untraced figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import orjson

from choreograph.telemetry import setup_tracing
from choreograph.transport import PROFILES, EmbeddedBroker, Settings

from . import codec, faust_index, history, index, relay, saga
from .report import headline, print_table

RESULTS = Path(__file__).resolve().parent / "results"
ALL = ("codec", "relay", "saga", "scale", "history", "index")
# Where a service would find another key, policy or CHOREO_VERIFY than the run's own (see _own_home).
_KEY_SETTINGS = ("CHOREO_POLICY", "CHOREO_KEY", "CHOREO_KEY_FILE", "CHOREO_KEYS_DIR", "CHOREO_VERIFY",
                 "CHOREO_PUBLISHER", "CHOREO_OPERATOR")


def _own_home(home: Path) -> None:
    """Give the run its own CHOREO_HOME: its spawned services and in-process clients then share one
    local development policy and its keys, made as they start, and the repository (./.choreo) and a
    user's own keys stay out of it. Signing is on unless a scenario turns it off for its services
    (CHOREO_VERIFY=off in their environment), so a CHOREO_VERIFY or key setting in the caller's
    environment is dropped: it would make the signed figures something else. Nothing is restored:
    the bench is a process of its own, and the home goes with the workdir."""
    os.environ["CHOREO_HOME"] = str(home)
    for name in _KEY_SETTINGS:
        os.environ.pop(name, None)


def _settings(broker: EmbeddedBroker | None, label: str, partitions: int = 4) -> Settings:
    """A fresh namespace (topics, groups) per scenario, on the run's broker."""
    namespace = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    if broker is not None:
        return broker.settings(namespace=namespace, partitions=partitions)
    return replace(Settings.from_env(), namespace=namespace, partitions=partitions)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller runs, to check the harness")
    parser.add_argument("--only", default=",".join(ALL))
    parser.add_argument("--tracing", action="store_true",
                        help="relay and sagas with traces on (SDK, batch processor, a discarding exporter)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    traced = _tracing(args.tracing)
    if traced:
        only &= {"relay", "saga"}
    scale = 0.2 if args.quick else 1.0
    workdir = Path(tempfile.mkdtemp(prefix="choreo-bench-"))
    _own_home(workdir / "home")
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    started = time.time()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "broker": f"{external} ({os.environ.get('CHOREO_BROKER', 'kafka')})" if external else "tansu (embedded)",
        "profile": asdict(Settings.from_env().broker if external else PROFILES["tansu"]),
    }
    if "codec" in only:
        results["codec"] = asdict(codec.run())
        _progress("codec", results["codec"])
    if "relay" in only:
        results["relay"] = {}
        with _broker(workdir / "relay") as broker:  # one broker for all contenders: ratios
            for contender in relay.CONTENDERS:
                if traced and (not contender.agent or contender.unsigned):
                    continue  # only choreograph's relay traces (signed, as its headline figure)
                began = time.perf_counter()
                outcome = relay.run(contender, _settings(broker, contender.name), workdir / "relay",
                                    events=int(30_000 * scale), hops=max(200, int(1000 * scale)))
                name = f"{contender.name}-traced" if traced else contender.name
                results["relay"][name] = asdict(outcome)
                _progress(f"relay {name}", results["relay"][name], began)
    if "saga" in only or "scale" in only:
        results["saga"] = _sagas(workdir, scale, only, traced)
    if "history" in only:
        with _broker(workdir / "history") as broker:
            results["history"] = asdict(history.run(_settings(broker, "history"), workflows=int(5000 * scale)))
        _progress("history", results["history"])
    if "index" in only:
        with _broker(workdir / "index") as broker:
            results["index"] = asdict(index.run(_settings(broker, "index"), workflows=int(5000 * scale)))
        _progress("index", results["index"])
    if "faust-index" in only:
        results["faust_index"] = _faust_index(workdir, scale)
    if "failed" in results.get("faust_index", {}):
        print(f"  faust-index failed; its logs are kept in {workdir / 'faust-index'}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)  # logs are kept only when a scenario fails
    results["seconds"] = round(time.time() - started, 1)
    latest = RESULTS / "latest.json"
    if only != set(ALL) and latest.exists():
        results = _merged(orjson.loads(latest.read_bytes()), results, only)
    results["headline"] = headline(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print_table(results)
    print(orjson.dumps(results["headline"]).decode())
    return 0


def _merged(merged: dict[str, Any], results: dict[str, Any], only: set[str]) -> dict[str, Any]:
    """A partial run's scenarios written into the last full run's results."""
    for key in (k for k in ("codec", "relay", "saga", "history", "index", "faust_index") if k in results):
        if isinstance(merged.get(key), dict) and isinstance(results[key], dict):
            merged[key].update(results[key])  # e.g. saga runs, keeping scale-out from before
        else:
            merged[key] = results[key]
    merged.setdefault("partial_runs", []).append({"started": results["started"], "only": sorted(only)})
    return merged


def _faust_index(workdir: Path, scale: float) -> dict[str, Any]:
    """The index as a faust-streaming Table, on a broker of its own (an evaluation: docs/performance.md)."""
    began = time.perf_counter()
    with _broker(workdir / "faust-index") as broker:
        result: dict[str, Any] = faust_index.run(_settings(broker, "faustindex"), workdir / "faust-index",
                                                 workflows=int(5000 * scale), burst=int(250 * scale))
    _progress("faust-index", result, began)
    return result


@contextlib.contextmanager
def _broker(workdir: Path) -> Iterator[EmbeddedBroker | None]:
    """A fresh embedded broker (None when KAFKA_BOOTSTRAP_SERVERS names a cluster).

    Tansu keeps everything in memory and its fetches slow down as a partition fills (one-at-a-time
    sagas drifted from p50 56 to 167 ms over 250 sagas on one partition), so each saga
    measurement starts from the same empty broker instead of from whatever ran before it.
    """
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    workdir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(workdir / "broker.log").start()
    try:
        yield broker
    finally:
        broker.stop()


def _tracing(on: bool) -> bool:
    """Traces on (`--tracing`) or off for this run and every process it starts; returns `on`."""
    for name in [n for n in os.environ if n.startswith("OTEL_EXPORTER_OTLP")]:
        del os.environ[name]
    os.environ["OTEL_TRACES_EXPORTER"] = "discard" if on else "none"
    if on:
        setup_tracing("bench")  # the bench's clients (goals) trace too; flushed, or not, at exit: no matter
    return on


def _sagas(workdir: Path, scale: float, only: set[str], traced: bool = False) -> dict[str, Any]:
    """Each run: a fresh broker, the coordinator and the report agents, 4 partitions, one load."""
    out: dict[str, Any] = {}
    total = int(1000 * scale)
    runs: list[tuple[str, int, int, float, int, bool]] = []
    if "saga" in only:
        # One at a time and the headline also run unsigned (CHOREO_VERIFY=off), each right after
        # its signed run (the machine drifts) and as long: Tansu slows as a partition fills, so a
        # shorter run would look faster. That is two more brokers and stacks to start, and the
        # two runs again (the progress lines say how long each took).
        one = max(50, total // 5)
        runs += [("one_at_a_time", one, 1, 0.0, 1, True), ("one_at_a_time_unsigned", one, 1, 0.0, 1, False),
                 ("headline", total, saga.IN_FLIGHT, 0.0, 1, True),
                 ("headline_unsigned", total, saga.IN_FLIGHT, 0.0, 1, False),
                 ("compensated", total, saga.IN_FLIGHT, 0.1, 1, True),
                 ("saturation", total, 2 * saga.IN_FLIGHT, 0.0, 1, True)]
    if "scale" in only:
        runs += [(f"scale_out_{n}", total, saga.IN_FLIGHT, 0.0, n, True) for n in (2, 4)]
    if traced:  # signed runs only, beside the untraced ones
        runs = [(f"{key}_traced", *rest) for key, *rest in runs if rest[-1] and not key.startswith("scale")]
    for key, count, in_flight, failing, instances, signed in runs:
        began = time.perf_counter()
        with _broker(workdir / key) as broker:
            settings = _settings(broker, key.replace("_", ""), partitions=4)
            with saga.start_stack(settings, workdir / key, instances, signed) as stack:
                run = asyncio.run(saga.closed_loop(settings, count, in_flight, failing, signed=signed))
        figures = {**asdict(run), "refused": stack.refusals()}  # see Processes.refusals
        if key.startswith("scale_out_"):
            out.setdefault("scale_out", {})[key.rsplit("_", 1)[1]] = figures
        else:
            out[key] = figures
        _progress(f"saga {key}, {instances} of each agent, {in_flight} in flight", figures, began)
    if "scale" in only and "headline" in out:
        out["scale_out"] = {"1": out["headline"], **out.get("scale_out", {})}
    return out


def _progress(label: str, figures: dict[str, Any], began: float | None = None) -> None:
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}
    took = "" if began is None else f" ({time.perf_counter() - began:.0f} s with start-up)"
    print(f"  {label}{took}: {shown}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
