"""`make bench`: every scenario on one broker in one run; a table, bench/results/latest.json, and
a last line holding the headline figures as one JSON object.

Usage: python -m bench [--quick] [--only codec,relay,saga,scale]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import orjson

from choreograph.broker import EmbeddedBroker
from choreograph.settings import PROFILES, Settings

from . import codec, relay, saga
from .report import headline, print_table

RESULTS = Path(__file__).resolve().parent / "results"


def _settings(broker: EmbeddedBroker | None, label: str, partitions: int = 4) -> Settings:
    """A fresh namespace (topics, groups) per scenario, on the run's broker."""
    namespace = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    if broker is not None:
        return broker.settings(namespace=namespace, partitions=partitions)
    return replace(Settings.from_env(), namespace=namespace, partitions=partitions)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller runs, to check the harness")
    parser.add_argument("--only", default="codec,relay,saga,scale")
    args = parser.parse_args()
    only = set(args.only.split(","))
    scale = 0.2 if args.quick else 1.0
    workdir = Path(tempfile.mkdtemp(prefix="choreo-bench-"))
    broker = None if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else EmbeddedBroker(workdir / "broker.log").start()
    started = time.time()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "broker": "tansu (embedded)" if broker else f"{os.environ['KAFKA_BOOTSTRAP_SERVERS']} "
                                                     f"({os.environ.get('CHOREO_BROKER', 'kafka')})",
        "profile": asdict(PROFILES["tansu"] if broker else Settings.from_env().broker),
    }
    try:
        if "codec" in only:
            results["codec"] = asdict(codec.run())
            _progress("codec", results["codec"])
        if "relay" in only:
            results["relay"] = {}
            for contender in relay.CONTENDERS:
                outcome = relay.run(contender, _settings(broker, contender.name), workdir / "relay",
                                    events=int(30_000 * scale), hops=max(200, int(1000 * scale)))
                results["relay"][contender.name] = asdict(outcome)
                _progress(f"relay {contender.name}", results["relay"][contender.name])
        if "saga" in only or "scale" in only:
            results["saga"] = _sagas(broker, workdir, scale, only)
    finally:
        if broker is not None:
            broker.stop()
    results["seconds"] = round(time.time() - started, 1)
    results["headline"] = headline(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print_table(results)
    print(orjson.dumps(results["headline"]).decode())
    return 0


def _sagas(broker: EmbeddedBroker | None, workdir: Path, scale: float, only: set[str]) -> dict[str, Any]:
    """The headline runs on one partition: one instance per service needs no more, and on Tansu
    every partition a consumer polls costs broker time on every fetch (measured in
    docs/performance.md). Scale-out needs a partition per instance, so it runs on four."""
    out: dict[str, Any] = {}
    total = int(1000 * scale)
    if "saga" in only:
        settings = _settings(broker, "saga", partitions=1)
        with saga.start_stack(settings, workdir / "saga"):
            runs = [("one_at_a_time", max(50, total // 5), 1, 0.0), ("headline", total, saga.IN_FLIGHT, 0.0),
                    ("compensated", total, saga.IN_FLIGHT, 0.1), ("saturation", total, 2 * saga.IN_FLIGHT, 0.0)]
            for key, count, in_flight, failing in runs:
                out[key] = asdict(asyncio.run(saga.closed_loop(settings, count, in_flight, failing)))
                _progress(f"saga {key}, {in_flight} in flight", out[key])
    if "scale" in only:
        out["scale_out"] = {}
        for instances in (1, 2, 4):
            scaled = _settings(broker, f"scale{instances}", partitions=4)
            with saga.start_stack(scaled, workdir / f"scale{instances}", instances):
                out["scale_out"][str(instances)] = asdict(
                    asyncio.run(saga.closed_loop(scaled, total, saga.IN_FLIGHT)))
            _progress(f"scale-out x{instances}", out["scale_out"][str(instances)])
    return out


def _progress(label: str, figures: dict[str, Any]) -> None:
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}
    print(f"  {label}: {shown}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
