"""What importing choreograph loads, seen from a fresh interpreter (this test process has loaded it all
already): its pure faces load no broker client and no command-line toolkit, and the transport port
and the memory log work without aiokafka."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_the_command_line_loads_the_web_view_only_for_choreo_ui() -> None:
    code = ("import sys, choreograph.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'playwright')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


@pytest.mark.parametrize("module", ["choreograph", "choreograph.saga", "choreograph.events"])
def test_importing_the_pure_faces_loads_no_broker_client(module: str) -> None:
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiokafka', 'typer', 'rich')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_the_port_and_the_memory_log_do_not_need_aiokafka() -> None:
    # Every aiokafka import made to fail: choreograph, its transport port and the memory log load
    # anyway; only a Kafka name needs aiokafka.
    script = """
import sys
sys.modules["aiokafka"] = None
import choreograph.transport as transport
from choreograph.transport import Settings
log = transport.MemoryLog()
transport.MemoryTransport(log, Settings("memory"))
assert transport.Transport and transport.TopicPartition and transport.RecordTooLargeError
try:
    transport.KafkaTransport
except ImportError:
    print("kafka needs aiokafka")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "kafka needs aiokafka"


def test_the_library_and_the_command_line_load_no_opentelemetry() -> None:
    # Tracing imports opentelemetry only in a process that set it up (opentelemetry.trace alone is ~40 ms).
    code = ("import sys, choreograph, choreograph.runtime, choreograph.telemetry, choreograph.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
